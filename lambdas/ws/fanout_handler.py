"""Fan-out entry point: one function per stream (``FANOUT_CHANNEL``), each with its own mapping.

Returns an empty partial batch response: a record that cannot be read is
counted and skipped (see :mod:`lambdas.ws.fanout`), so the mapping never
re-delivers a batch for it. A failure to look subscribers up fails the
invocation; the mapping retries it a little and discards batches older than
a minute (live prices are worth nothing later). Nothing is built at
import: :class:`Dependencies` is built on the first invocation by a cached
``from_env`` and kept for the execution environment's life (its fan-out
carries records for slow clients from one batch to the next).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, entry_point
from lambdas.ws.dal.management import ConnectionPoster, PostOutcome, management_client
from lambdas.ws.fanout import Fanout, FanoutOutcome
from lambdas.ws.logic import remove_connection
from lambdas.ws.settings import FanoutEnvironment
from lambdas.ws.stores import dynamodb_client, state_stores

#: Named per stream on the first invocation (``fanout-ticks``, ``fanout-greeks``).
obs = Observability("fanout")


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment of a fan-out builds once and reuses."""

    fanout: Fanout

    @classmethod
    def build(
        cls, environment: FanoutEnvironment, *, dynamodb: Any, management: Any
    ) -> Dependencies:
        """The fan-out over the state tables and the management API, wired."""
        settings = environment.fanout
        connections, subscribers = state_stores(dynamodb, environment)

        def remove(connection_id: str, seen: Collection[int]) -> None:
            remove_connection(connections, subscribers, connection_id, seen)

        return cls(
            Fanout(
                settings.channel,
                subscribers,
                ConnectionPoster(management),
                remove,
                max_message_bytes=settings.max_message_bytes,
                workers=settings.post_workers,
                post_attempts=settings.post_attempts,
                max_carried_records=settings.max_carried_records,
            )
        )

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        environment = FanoutEnvironment.from_env()
        obs.name_service(f"fanout-{environment.fanout.channel.value}")
        return cls.build(
            environment,
            dynamodb=dynamodb_client(environment.ws),
            management=management_client(
                environment.management.url, max_connections=environment.fanout.post_workers
            ),
        )


def record_metrics(obs: Observability, outcome: FanoutOutcome) -> None:
    """The batch's counts and timings as metrics; poison and gone connections logged."""
    obs.count("RecordsReceived", outcome.records)
    obs.count("Instruments", outcome.instruments)
    obs.count("Connections", outcome.connections)
    obs.count("MessagesPosted", outcome.messages)
    obs.count("BytesPosted", outcome.message_bytes)
    obs.count("PostRetries", outcome.retries)
    for kind in PostOutcome:
        if kind is not PostOutcome.DELIVERED and outcome.outcomes[kind]:
            obs.count(f"Posts_{kind.value}", outcome.outcomes[kind])
    obs.count("ConnectionsRemoved", len(outcome.gone) - outcome.remove_failures)
    obs.count("RemoveFailures", outcome.remove_failures)
    obs.count("CarriedRecords", outcome.carried_records)
    obs.count("CarryDropped", outcome.carry_dropped)
    obs.milliseconds("LookupTime", outcome.lookup_ms)
    obs.milliseconds("PostTime", outcome.post_ms)
    for reason, count in outcome.poison.items():
        obs.count(f"Poison_{reason}", count)
        obs.logger.warning("poison records skipped", extra={"reason": reason, "count": count})
    if outcome.remove_failures:
        obs.logger.error("gone connections not removed", extra={"count": outcome.remove_failures})


def fan_out(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """Kinesis batch (ticks or Greeks) -> one message per subscribed client."""
    try:
        outcome = deps.fanout.run(event)
    except Exception as exc:  # the lookup failed: the mapping retries the batch
        obs.count("FanoutBatchFailed")
        obs.logger.error("fan-out batch failed", extra={"error": type(exc).__name__})
        raise
    record_metrics(obs, outcome)
    return {"batchItemFailures": []}


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """The fan-out's entry point over ``dependencies`` (called every time: cache it)."""
    return entry_point(obs, fan_out, dependencies)


#: Built on the first invocation and kept for the execution environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
