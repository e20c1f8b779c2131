"""Persist function entry points: parse settings and the event, call one logic function.

``handler`` consumes the ``ticks`` and ``greeks`` streams (one event source
mapping each, ReportBatchItemFailures on); ``maintain`` runs daily on a
schedule to create partitions ahead and detach expired ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.common.db import DatabaseSettings, create_pool
from lambdas.common.observability import Observability
from lambdas.common.runtime import Lazy, LoopRunner
from lambdas.persist.dal import PartitionManager, PostgresBatchWriter, ist_day
from lambdas.persist.logic import persist_event


class PersistSettings(BaseSettings):
    """``PERSIST_*`` environment variables (database settings are ``DB_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="PERSIST_", extra="ignore", hide_input_in_errors=True
    )

    partitions_ahead_days: int = 3
    retention_days: int = 30


def _secrets_client(database: DatabaseSettings) -> Any:
    return boto3.client("secretsmanager") if database.secret_arn else None


# Execution-environment state, built once at init and reused by every invocation.
settings = PersistSettings()
database = DatabaseSettings()
obs = Observability("persist")
runner = LoopRunner()
pool = Lazy(lambda: create_pool(database, _secrets_client(database)))
writer = PostgresBatchWriter(pool, PartitionManager())


@obs.metrics.log_metrics
@obs.logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Kinesis batch -> PostgreSQL; returns the partial batch response."""
    outcome = runner.run(persist_event(event, writer))
    obs.count("TicksReceived", outcome.ticks)
    obs.count("GreeksReceived", outcome.greeks)
    if outcome.written is not None:
        obs.count("TicksInserted", outcome.written.ticks_inserted)
        obs.count("GreeksInserted", outcome.written.greeks_inserted)
        obs.count(
            "DuplicatesSkipped",
            outcome.ticks
            + outcome.greeks
            - outcome.written.ticks_inserted
            - outcome.written.greeks_inserted,
        )
        # Batches that met rows already stored and were merged, not copied: retries, mostly.
        obs.count("BatchesMerged", int(outcome.written.replay))
        obs.milliseconds("BatchWriteTime", outcome.write_ms)
    for reason, count in outcome.poison.items():
        obs.count(f"Poison_{reason}", count)
        obs.logger.warning("poison records reported", extra={"reason": reason, "count": count})
    return outcome.response


@obs.metrics.log_metrics
def maintain(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled: partitions ahead, retention."""
    today = ist_day(datetime.now(UTC))
    detached = runner.run(
        writer.maintain(today, settings.partitions_ahead_days, settings.retention_days)
    )
    obs.count("PartitionsDetached", len(detached))
    obs.logger.info("partition maintenance", extra={"detached": detached})
    return {"detached": detached}
