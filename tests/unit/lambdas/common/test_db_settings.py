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
