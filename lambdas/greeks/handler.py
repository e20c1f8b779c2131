"""Greeks function entry point: environment once, then each event to one logic function.

Consumes the ``ticks`` stream (event source mapping with
ReportBatchItemFailures on) and writes ``greeks/1`` records to the ``greeks``
stream. :class:`Dependencies` is what lives for the execution environment:
the S3 snapshot reader and the registry index (re-checked every
``INSTRUMENTS_RECHECK_SECONDS``), the carried forwards, the AWS clients. It
is built on the first invocation, not at import, so importing this module
reads no environment and calls nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, entry_point
from lambdas.greeks.dal import KinesisPublisher
from lambdas.greeks.logic import (
    ForwardMemory,
    GreeksSettingsView,
    RegistryIndexCache,
    greeks_event,
)
from lambdas.greeks.settings import GreeksEnvironment
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader

obs = Observability("greeks")


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment builds once and every invocation reuses."""

    snapshots: InstrumentSnapshotReader
    instruments: RegistryIndexCache
    memory: ForwardMemory
    publisher: KinesisPublisher
    view: GreeksSettingsView

    @classmethod
    def build(cls, environment: GreeksEnvironment, *, s3: Any, kinesis: Any) -> Dependencies:
        """Wire the function from its settings and AWS clients."""
        settings, snapshot = environment.greeks, environment.snapshot
        snapshots = InstrumentSnapshotReader.from_settings(s3, snapshot)
        return cls(
            snapshots=snapshots,
            instruments=RegistryIndexCache(snapshots),
            memory=ForwardMemory(settings.carry_max_age_seconds),
            publisher=KinesisPublisher(
                kinesis, environment.output.name, attempts=settings.put_attempts
            ),
            view=GreeksSettingsView(
                rate=settings.risk_free_rate,
                parity_pairs=settings.parity_pairs,
                aggregate_bytes=settings.aggregate_bytes,
            ),
        )

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        return cls.build(
            GreeksEnvironment.from_env(), s3=boto3.client("s3"), kinesis=boto3.client("kinesis")
        )


def handle(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """Kinesis batch of ticks -> Greeks records; returns the partial batch response."""
    snapshots = deps.snapshots
    loads_before = snapshots.loads
    try:
        outcome = greeks_event(
            event,
            instruments=deps.instruments,
            memory=deps.memory,
            publisher=deps.publisher,
            settings=deps.view,
            computed_at=datetime.now(UTC),
        )
    except Exception as exc:  # no snapshot, or records not written: Kinesis retries the batch
        obs.count("GreeksBatchFailed")
        obs.logger.error("greeks batch failed", extra={"error": type(exc).__name__})
        raise
    obs.count("TicksReceived", outcome.ticks)
    obs.count("GreeksPublished", outcome.rows)
    obs.count("UnknownInstruments", outcome.unknown)
    obs.count("SnapshotLoads", snapshots.loads - loads_before)
    for source, count in outcome.forward_sources.items():
        obs.count(f"Forward_{source}", count)
    for reason, count in outcome.reasons.items():
        obs.count(f"Reason_{reason}", count)
    for reason, count in outcome.poison.items():
        obs.count(f"Poison_{reason}", count)
        obs.logger.warning("poison records reported", extra={"reason": reason, "count": count})
    if snapshots.last_error is not None:
        obs.count("SnapshotRefreshFailed")
        obs.logger.warning("serving a cached snapshot", extra={"error": str(snapshots.last_error)})
    return outcome.response


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """The Lambda entry point over ``dependencies`` (called on every invocation; cache it)."""
    return entry_point(obs, handle, dependencies)


#: Built on the first invocation and kept for the execution environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
