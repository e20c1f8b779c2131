"""Persist function entry points: environment once, then each event to one logic function.

``handler`` consumes the ``ticks`` and ``greeks`` streams (one event source
mapping each, ReportBatchItemFailures on); ``maintain`` runs daily on a
schedule to create partitions ahead and detach expired ones. Both share one
:class:`Dependencies` per execution environment (the event loop and the
database pool), built on the first invocation, not at import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from lambdas.common.db import create_pool, secrets_client_for
from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, Lazy, LoopRunner, close_all, entry_point
from lambdas.persist.dal import PartitionManager, PostgresBatchWriter
from lambdas.persist.logic import persist_event
from lambdas.persist.settings import PersistEnvironment, PersistSettings
from ticker_core.tz import ist_date

obs = Observability("persist")


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment builds once and every invocation reuses."""

    settings: PersistSettings
    runner: LoopRunner
    pool: Lazy[asyncpg.Pool]
    writer: PostgresBatchWriter

    @classmethod
    def build(cls, environment: PersistEnvironment, *, secrets: Any = None) -> Dependencies:
        """Wire the function; the pool opens on first use, inside the runner's loop."""
        database = environment.database
        pool: Lazy[asyncpg.Pool] = Lazy(lambda: create_pool(database, secrets))
        return cls(
            environment.persist, LoopRunner(), pool, PostgresBatchWriter(pool, PartitionManager())
        )

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        environment = PersistEnvironment.from_env()
        return cls.build(environment, secrets=secrets_client_for(environment.database))

    def close(self) -> None:
        """Close the pool and the loop (tests and command lines; Lambda just freezes)."""
        close_all(self.runner, self.pool)


def handle(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """Kinesis batch -> PostgreSQL; returns the partial batch response."""
    outcome = deps.runner.run(persist_event(event, deps.writer))
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


def handle_maintenance(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """Scheduled: partitions ahead, retention."""
    today = ist_date(datetime.now(UTC))
    settings = deps.settings
    detached = deps.runner.run(
        deps.writer.maintain(today, settings.partitions_ahead_days, settings.retention_days)
    )
    obs.count("PartitionsDetached", len(detached))
    obs.logger.info("partition maintenance", extra={"detached": detached})
    return {"detached": detached}


def make_handlers(dependencies: Callable[[], Dependencies]) -> tuple[LambdaHandler, LambdaHandler]:
    """The stream consumer and the maintenance entry points over one set of dependencies."""
    return (
        entry_point(obs, handle, dependencies),
        entry_point(obs, handle_maintenance, dependencies, log_context=False),
    )


#: Built on the first invocation of either entry point and kept for the environment's life.
environment = functools.cache(Dependencies.from_env)
handler, maintain = make_handlers(environment)
