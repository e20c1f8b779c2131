"""Greeks function entry point: parse settings and the event, call one logic function.

Consumes the ``ticks`` stream (event source mapping with
ReportBatchItemFailures on) and writes ``greeks/1`` records to the ``greeks``
stream. Everything built here lives for the execution environment: the S3
snapshot reader and the registry index (re-checked every
``INSTRUMENTS_RECHECK_SECONDS``), the carried forwards, the AWS clients.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.common.observability import Observability
from lambdas.greeks.dal import KinesisPublisher
from lambdas.greeks.logic import (
    ForwardMemory,
    GreeksSettingsView,
    RegistryIndexCache,
    greeks_event,
)
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader
from ticker_adapters.settings import SnapshotSettings
from ticker_core.records.limits import DEFAULT_AGGREGATE_BYTES, MAX_RECORD_BYTES


class GreeksSettings(BaseSettings):
    """``GREEKS_*`` environment variables (the snapshot's are ``INSTRUMENTS_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="GREEKS_", extra="ignore", hide_input_in_errors=True
    )

    output_stream: str
    """Name or ARN of the ``greeks`` stream."""
    risk_free_rate: float = Field(default=0.065, ge=-0.1, le=1.0)
    """Continuously compounded rate for discounting (about the 91-day T-bill yield)."""
    parity_pairs: int = Field(default=2, ge=1)
    carry_max_age_seconds: float = Field(default=900.0, ge=0)
    put_attempts: int = Field(default=5, ge=1)
    aggregate_bytes: int = Field(default=DEFAULT_AGGREGATE_BYTES, gt=0, le=MAX_RECORD_BYTES)


# Execution-environment state, built once at init and reused by every invocation.
settings = GreeksSettings()  # type: ignore[call-arg]  # fields come from the environment
snapshot_settings = SnapshotSettings()  # type: ignore[call-arg]  # from the environment
obs = Observability("greeks")
snapshots = InstrumentSnapshotReader(
    boto3.client("s3"),
    snapshot_settings.bucket,
    prefix=snapshot_settings.prefix,
    recheck_seconds=snapshot_settings.recheck_seconds,
)
instruments = RegistryIndexCache(snapshots)
memory = ForwardMemory(settings.carry_max_age_seconds)
publisher = KinesisPublisher(
    boto3.client("kinesis"), settings.output_stream, attempts=settings.put_attempts
)
view = GreeksSettingsView(
    rate=settings.risk_free_rate,
    parity_pairs=settings.parity_pairs,
    aggregate_bytes=settings.aggregate_bytes,
)


@obs.metrics.log_metrics
@obs.logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Kinesis batch of ticks -> Greeks records; returns the partial batch response."""
    loads_before = snapshots.loads
    try:
        outcome = greeks_event(
            event,
            instruments=instruments,
            memory=memory,
            publisher=publisher,
            settings=view,
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
