"""Fan-out entry point: one function per stream (``FANOUT_CHANNEL``), each with its own mapping.

Returns an empty partial batch response: a record that cannot be read is
counted and skipped (see :mod:`lambdas.ws.fanout`), so the mapping never
re-delivers a batch for it. A failure to look subscribers up fails the
invocation; the mapping retries it a little and discards batches older than
a minute (live prices are worth nothing later).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import boto3

from lambdas.common.observability import Observability
from lambdas.ws.dal.connections import DynamoConnectionStore
from lambdas.ws.dal.management import ConnectionPoster, PostOutcome, management_client
from lambdas.ws.dal.subscribers import DynamoSubscriberIndex
from lambdas.ws.fanout import Fanout, FanoutOutcome
from lambdas.ws.logic import remove_connection
from lambdas.ws.settings import FanoutSettings, WsSettings
from ticker_adapters.subscription_store import SubscriptionStore


@dataclass
class FanoutFunction:
    """One execution environment's state (the fan-out keeps carried records between batches)."""

    fanout: Fanout
    obs: Observability


def build(
    *, settings: WsSettings, fanout: FanoutSettings, dynamodb: Any, management: Any
) -> FanoutFunction:
    """The fan-out over the state tables and the management API, wired."""
    obs = Observability(f"fanout-{fanout.channel.value}")
    connections = DynamoConnectionStore(dynamodb, settings.connections_table)
    subscribers = DynamoSubscriberIndex(
        dynamodb,
        settings.subscribers_table,
        SubscriptionStore(dynamodb, settings.feed_subscriptions_table),
        mode=settings.feed_mode,
        workers=settings.index_workers,
    )

    def remove(connection_id: str, seen: Collection[int]) -> None:
        remove_connection(connections, subscribers, connection_id, seen)

    return FanoutFunction(
        Fanout(
            fanout.channel,
            subscribers,
            ConnectionPoster(management),
            remove,
            max_message_bytes=fanout.max_message_bytes,
            workers=fanout.post_workers,
            post_attempts=fanout.post_attempts,
            max_carried_records=fanout.max_carried_records,
        ),
        obs,
    )


class _Environment:
    """The execution environment's one :class:`FanoutFunction`, built on first use."""

    function: FanoutFunction | None = None

    @classmethod
    def get(cls) -> FanoutFunction:
        if cls.function is None:
            from botocore.config import Config

            settings = WsSettings()  # type: ignore[call-arg]  # from the environment
            fanout = FanoutSettings()  # type: ignore[call-arg]
            pool = Config(max_pool_connections=max(10, settings.index_workers + 2))
            cls.function = build(
                settings=settings,
                fanout=fanout,
                dynamodb=boto3.client("dynamodb", config=pool),
                management=management_client(
                    fanout.management_endpoint, max_connections=fanout.post_workers
                ),
            )
        return cls.function


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


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Kinesis batch (ticks or Greeks) -> one message per subscribed client."""
    function = _Environment.get()
    try:
        outcome = function.fanout.run(event)
        record_metrics(function.obs, outcome)
    except Exception as exc:  # the lookup failed: the mapping retries the batch
        function.obs.count("FanoutBatchFailed")
        function.obs.logger.error("fan-out batch failed", extra={"error": type(exc).__name__})
        raise
    finally:
        function.obs.metrics.flush_metrics()
    return {"batchItemFailures": []}
