"""PostgreSQL connections for the Lambdas: settings, TLS, credentials, pool.

In AWS the Lambdas reach RDS through RDS Proxy with TLS verified against the
RDS CA bundle; credentials come from the database's Secrets Manager secret
(the JSON RDS writes: username, password, host, port, dbname) or directly
from settings for local runs. Anything but ``verify-full`` (plaintext, or
TLS without server authentication) is opt-in and only for a loopback host:
off this machine, an unauthenticated server could be anyone, and the
password would go to it.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any, Literal

import asyncpg
import boto3
from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticker_adapters.endpoints import is_loopback


class DatabaseSettings(BaseSettings):
    """``DB_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="DB_", extra="ignore", hide_input_in_errors=True)

    host: str | None = None
    port: int = 5432
    name: str = "postgres"
    user: str | None = None
    password: SecretStr | None = None
    secret_arn: str | None = None
    tls: Literal["verify-full", "require", "disable"] = "verify-full"
    ca_file: Path | None = None
    pool_min_size: int = 1
    pool_max_size: int = 4
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0

    @model_validator(mode="after")
    def _credentials_from_somewhere(self) -> DatabaseSettings:
        if self.secret_arn is None and (self.host is None or self.user is None):
            raise ValueError("set DB_SECRET_ARN, or DB_HOST and DB_USER (and DB_PASSWORD)")
        if self.tls != "verify-full" and self.host is not None:
            _require_loopback(self.tls, self.host)
        return self


def secrets_client_for(settings: DatabaseSettings) -> Any | None:
    """A Secrets Manager client when the credentials are in the RDS secret, else None."""
    return boto3.client("secretsmanager") if settings.secret_arn else None


def _require_loopback(tls: str, host: str) -> None:
    """Refuse ``tls`` other than verify-full to a host that is not this machine."""
    if not is_loopback(host):
        raise ValueError(
            f"DB_TLS={tls} is allowed only for a loopback host (the server is not "
            "authenticated); use DB_TLS=verify-full with DB_CA_FILE"
        )


def tls_context(settings: DatabaseSettings) -> ssl.SSLContext | bool:
    """The client TLS configuration asyncpg should use."""
    if settings.tls == "disable":
        return False
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls == "require":
        # Encrypted but unauthenticated: only for endpoints without a CA to check against.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connection_parameters(
    settings: DatabaseSettings, secrets_client: Any | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect``/``create_pool``.

    Reads the RDS secret when ``secret_arn`` is set (settings override its
    host/port, e.g. to point at RDS Proxy instead of the instance).
    """
    params: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "database": settings.name,
        "user": settings.user,
        "password": settings.password.get_secret_value() if settings.password else None,
    }
    if settings.secret_arn:
        if secrets_client is None:
            raise ValueError("a Secrets Manager client is needed to read DB_SECRET_ARN")
        secret = json.loads(
            secrets_client.get_secret_value(SecretId=settings.secret_arn)["SecretString"]
        )
        params["user"] = params["user"] or secret["username"]
        params["password"] = params["password"] or secret["password"]
        params["host"] = params["host"] or secret["host"]
        if "port" not in settings.model_fields_set and "port" in secret:
            params["port"] = int(secret["port"])
        if "name" not in settings.model_fields_set and "dbname" in secret:
            params["database"] = secret["dbname"]
    if settings.tls != "verify-full":
        _require_loopback(settings.tls, str(params["host"]))
    params["ssl"] = tls_context(settings)
    params["timeout"] = settings.connect_timeout_s
    params["command_timeout"] = settings.command_timeout_s
    return params


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Timestamps cross the wire as UTC regardless of the server's default.
    await conn.execute("set timezone to 'UTC'")


async def create_pool(
    settings: DatabaseSettings, secrets_client: Any | None = None
) -> asyncpg.Pool:
    """A small pool (a Lambda environment serves one invocation at a time)."""
    pool = await asyncpg.create_pool(
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        init=_init_connection,
        **connection_parameters(settings, secrets_client),
    )
    if pool is None:  # asyncpg types it Optional; it is never None once awaited
        raise RuntimeError("asyncpg returned no pool")
    return pool
