"""Instruments function entry point: parse settings and the event, call one logic function.

Runs on a daily schedule before the open (after the day's Kite login, which
stores a fresh access token) and on demand, e.g. right after a login:
``{"account_id": "..."}`` picks the account to download with (default:
``INSTRUMENTS_ACCOUNT_ID``, else the first account with a live session).

A refused dump, a failed download or a missing session fails the invocation
(Lambda's Errors metric) and counts ``InstrumentsPublicationFailed`` with an
ERROR log naming the reasons; the pointer and the database keep the last
good snapshot, so everyone reading it carries on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.common.db import DatabaseSettings, create_pool
from lambdas.common.observability import Observability
from lambdas.common.runtime import Lazy, LoopRunner
from lambdas.instruments.dal import PostgresRegistry, S3SnapshotStore
from lambdas.instruments.logic import (
    PublishSettings,
    SessionUnavailableError,
    SnapshotRejectedError,
    choose_session,
    publish_instruments,
)
from ticker_adapters.credentials import CredentialError, CredentialVault
from ticker_adapters.envelope import KmsEnvelopeCipher
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport, retry_transient
from ticker_adapters.retry import full_jitter
from ticker_adapters.settings import SnapshotSettings, VaultSettings
from ticker_core.kite_errors import KiteError


class InstrumentsSettings(BaseSettings):
    """``INSTRUMENTS_*`` settings of this function (bucket and prefix: SnapshotSettings)."""

    model_config = SettingsConfigDict(env_prefix="INSTRUMENTS_", extra="ignore")

    kite_root: str = "https://api.kite.trade"
    account_id: str | None = None
    http_timeout_seconds: float = Field(default=60.0, gt=0)
    http_attempts: int = Field(default=3, ge=1)
    http_retry_base_seconds: float = Field(default=1.0, ge=0)
    """First retry waits up to this long (full jitter, doubling, capped at 8x)."""
    max_drop: float = Field(default=0.2, gt=0, lt=1)
    """Largest tolerated shrink of a segment against the last good dump."""
    keep_days: int = Field(default=7, ge=0)
    """Days of registry kept in PostgreSQL (S3 retention is a bucket lifecycle rule)."""


def _secrets_client(database: DatabaseSettings) -> Any:
    return boto3.client("secretsmanager") if database.secret_arn else None


# Execution-environment state, built once at init and reused by every invocation.
settings = InstrumentsSettings()
snapshot_settings = SnapshotSettings()  # type: ignore[call-arg]  # from the environment
vault_settings = VaultSettings()  # type: ignore[call-arg]  # from the environment
database = DatabaseSettings()
obs = Observability("instruments")
runner = LoopRunner()
pool = Lazy(lambda: create_pool(database, _secrets_client(database)))
vault = CredentialVault(
    boto3.client("secretsmanager"),
    KmsEnvelopeCipher(boto3.client("kms"), vault_settings.kms_key_arn),
    prefix=vault_settings.prefix,
    cache_seconds=vault_settings.cache_seconds,
)
kite = KiteTransport(
    settings.kite_root,
    connect_timeout=min(settings.http_timeout_seconds, 10.0),
    read_timeout=settings.http_timeout_seconds,
    retry=retry_transient(settings.http_attempts),
    delays=lambda: full_jitter(
        settings.http_retry_base_seconds, 8 * settings.http_retry_base_seconds
    ),
)
store = S3SnapshotStore(boto3.client("s3"), snapshot_settings.bucket, snapshot_settings.prefix)
registry = PostgresRegistry(pool)
publish_settings = PublishSettings(max_drop=settings.max_drop, keep_days=settings.keep_days)

FAILURES = (SnapshotRejectedError, SessionUnavailableError, KiteError, CredentialError)
"""The expected ways a publication fails (the command line exits 1 on these)."""


def publish(event: dict[str, Any]) -> dict[str, Any]:
    """One publication (the handler's body; also ``python -m lambdas.instruments``)."""
    now = datetime.now(UTC)
    account_id = event.get("account_id") or settings.account_id

    def download() -> bytes:
        session = choose_session(vault, account_id, now)
        return KiteRestClient.from_session(session, kite).instruments()

    try:
        outcome = runner.run(
            publish_instruments(
                download,
                store=store,
                database=registry,
                now=now,
                prefix=snapshot_settings.prefix,
                settings=publish_settings,
            )
        )
    except Exception as exc:  # counted and logged whatever it is (S3, database, Kite), re-raised
        obs.count("InstrumentsPublicationFailed")
        reasons = list(getattr(exc, "reasons", ())) or [str(exc)]
        obs.logger.error(
            "instruments snapshot not published; the last good one stays current",
            extra={"error": type(exc).__name__, "reasons": reasons},
        )
        raise
    result = outcome.as_dict()
    obs.count("InstrumentsPublished", 1 if outcome.status == "published" else 0)
    obs.count("InstrumentsListed", outcome.pointer.summary.instruments)
    obs.count("InstrumentsRowsRejected", outcome.rejected_rows)
    obs.logger.info("instruments snapshot", extra=result)
    return result


@obs.metrics.log_metrics
@obs.logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled or on demand: publish today's instruments snapshot."""
    return publish(event or {})
