"""Database settings refuse unsafe or incomplete configurations up front."""

import json
import secrets
import ssl

import pytest
from pydantic import ValidationError

from lambdas.common.db import DatabaseSettings, connection_parameters, tls_context


def test_credentials_are_required_from_some_source(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("DB_HOST", "DB_USER", "DB_SECRET_ARN"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValidationError, match="DB_SECRET_ARN"):
        DatabaseSettings()


def test_plaintext_is_refused_off_loopback() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        DatabaseSettings(host="db.example.internal", user="u", tls="disable")
    assert tls_context(DatabaseSettings(host="127.0.0.1", user="u", tls="disable")) is False


def test_verify_full_checks_hostname_and_certificate() -> None:
    context = tls_context(DatabaseSettings(host="db.example.internal", user="u"))
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


class FakeSecrets:
    def __init__(self, value: dict[str, object]) -> None:
        self.value = value

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        return {"SecretString": json.dumps(self.value)}


def test_rds_secret_supplies_credentials_and_settings_override_the_host() -> None:
    # Given an RDS-style secret and settings pointing at an RDS Proxy endpoint
    password = secrets.token_urlsafe(16)
    secret = {
        "username": "app",
        "password": password,
        "host": "instance",
        "port": 5433,
        "dbname": "x",
    }
    settings = DatabaseSettings(secret_arn="arn:secret", host="proxy.internal")
    # When connection parameters are resolved
    params = connection_parameters(settings, FakeSecrets(secret))
    # Then credentials come from the secret and the host from settings
    assert (params["user"], params["password"]) == ("app", password)
    assert params["host"] == "proxy.internal"
    assert (params["port"], params["database"]) == (5433, "x")
    # And a secret without a client is a clear error
    with pytest.raises(ValueError, match="Secrets Manager client"):
        connection_parameters(settings)


def test_tls_without_server_authentication_is_refused_off_loopback() -> None:
    # Given TLS that encrypts but does not check who the server is
    # When the host is another machine, Then the settings refuse it
    with pytest.raises(ValidationError, match="loopback"):
        DatabaseSettings(host="db.example.internal", user="u", tls="require")
    # And on loopback (the embedded test server) it is allowed
    context = tls_context(DatabaseSettings(host="127.0.0.1", user="u", tls="require"))
    assert isinstance(context, ssl.SSLContext)


def test_tls_require_to_a_remote_host_from_the_secret_is_refused() -> None:
    # Given settings without a host and a secret naming a remote one
    password = secrets.token_urlsafe(16)
    secret = {"username": "app", "password": password, "host": "db.example.internal"}
    settings = DatabaseSettings(secret_arn="arn:secret", tls="require")
    # When connection parameters are resolved, Then the unauthenticated TLS is refused
    with pytest.raises(ValueError, match="loopback"):
        connection_parameters(settings, FakeSecrets(secret))


def test_a_validation_error_never_echoes_the_password() -> None:
    # Given a password and an invalid port beside it
    password = secrets.token_urlsafe(16)
    # When the settings fail to validate
    with pytest.raises(ValidationError) as caught:
        DatabaseSettings(host="db.example.internal", user="u", password=password, tls="disable")
    # Then the message holds no input value
    assert password not in str(caught.value)
    assert "input_value" not in str(caught.value)
