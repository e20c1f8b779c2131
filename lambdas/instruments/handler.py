"""Instruments function entry point: environment once, then each event to one logic function.

Runs on a daily schedule before the open (after the day's Kite login, which
stores a fresh access token) and on demand, e.g. right after a login:
``{"account_id": "..."}`` picks the account to download with (default:
``INSTRUMENTS_ACCOUNT_ID``, else the first account with a live session).

A refused dump, a failed download or a missing session fails the invocation
(Lambda's Errors metric) and counts ``InstrumentsPublicationFailed`` with an
ERROR log naming the reasons; the pointer and the database keep the last
good snapshot, so everyone reading it carries on.

:class:`Dependencies` (vault, Kite client, S3 store, database pool, event
loop) is built on the first invocation, not at import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import boto3

from lambdas.common.db import create_pool
from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, Lazy, LoopRunner, close_all, entry_point
from lambdas.instruments.dal import PostgresRegistry, S3SnapshotStore
from lambdas.instruments.logic import (
    PublishSettings,
    SessionUnavailableError,
    SnapshotRejectedError,
    choose_session,
    publish_instruments,
)
from lambdas.instruments.settings import InstrumentsEnvironment
from ticker_adapters.credentials import CredentialError, CredentialVault
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport, retry_transient
from ticker_adapters.retry import full_jitter_delays
from ticker_core.kite_errors import KiteError

obs = Observability("instruments")

FAILURES = (SnapshotRejectedError, SessionUnavailableError, KiteError, CredentialError)
"""The expected ways a publication fails (the command line exits 1 on these)."""


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment builds once and every invocation reuses."""

    environment: InstrumentsEnvironment
    runner: LoopRunner
    pool: Lazy[asyncpg.Pool]
    vault: CredentialVault
    kite: KiteTransport
    store: S3SnapshotStore
    registry: PostgresRegistry

    @classmethod
    def build(
        cls, environment: InstrumentsEnvironment, *, s3: Any, secrets: Any, kms: Any
    ) -> Dependencies:
        """Wire the function from its settings and AWS clients."""
        settings, vault, snapshot = environment.instruments, environment.vault, environment.snapshot
        database = environment.database
        db_secrets = secrets if database.secret_arn else None
        pool: Lazy[asyncpg.Pool] = Lazy(lambda: create_pool(database, db_secrets))
        return cls(
            environment=environment,
            runner=LoopRunner(),
            pool=pool,
            vault=CredentialVault.from_settings(vault, secretsmanager=secrets, kms=kms),
            kite=KiteTransport(
                environment.kite.rest_url,
                connect_timeout=min(settings.http_timeout_seconds, 10.0),
                read_timeout=settings.http_timeout_seconds,
                retry=retry_transient(settings.http_attempts),
                delays=full_jitter_delays(
                    settings.http_retry_base_seconds, 8 * settings.http_retry_base_seconds
                ),
                plaintext_hosts=environment.kite.plaintext_hosts,
            ),
            store=S3SnapshotStore(s3, snapshot.bucket, snapshot.prefix),
            registry=PostgresRegistry(pool),
        )

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        environment = InstrumentsEnvironment.from_env()
        return cls.build(
            environment,
            s3=boto3.client("s3"),
            secrets=boto3.client("secretsmanager"),
            kms=boto3.client("kms"),
        )

    def close(self) -> None:
        """Close the pool and the loop (tests and command lines; Lambda just freezes)."""
        close_all(self.runner, self.pool)
        self.kite.close()


def publish(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """One publication (the handler's body; also ``python -m lambdas.instruments``)."""
    now = datetime.now(UTC)
    settings = deps.environment.instruments
    account_id = event.get("account_id") or settings.account_id

    def download() -> bytes:
        session = choose_session(deps.vault, account_id, now)
        return KiteRestClient.from_session(session, deps.kite).instruments()

    try:
        outcome = deps.runner.run(
            publish_instruments(
                download,
                store=deps.store,
                database=deps.registry,
                now=now,
                prefix=deps.environment.snapshot.prefix,
                settings=PublishSettings(max_drop=settings.max_drop, keep_days=settings.keep_days),
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


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """Scheduled or on demand: publish today's instruments snapshot."""
    return entry_point(obs, lambda event, deps: publish(event or {}, deps), dependencies)


#: Built on the first invocation and kept for the execution environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
