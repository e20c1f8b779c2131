"""Verified order updates: stored once in the lifecycle, then published (an outbox).

Each update is stored first; the new ones, and any stored earlier whose
publication failed, are then put on the EventBridge bus and marked
published. A failed publication is logged and left for the next ingestion
to retry: an update is never lost between the store and the bus, and a
duplicate delivery is stored (and published) once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from lambdas.api.updates import OrderUpdate

log = logging.getLogger(__name__)

#: What identifies an update's delivery (an SQS message id): what is retried when it fails.
D = TypeVar("D")


class UpdateStore(Protocol):
    """The lifecycle store's update side."""

    def store_updates(self, updates: Sequence[OrderUpdate], source: str) -> list[bool]:
        """Store each update once; whether each was new."""
        ...

    def unpublished(self, limit: int = 100) -> list[tuple[OrderUpdate, str]]:
        """Stored updates not yet published."""
        ...

    def mark_published(self, updates: Sequence[OrderUpdate]) -> None:
        """Record the updates as published."""
        ...


class Publisher(Protocol):
    """The event bus."""

    def publish(self, updates: Sequence[tuple[OrderUpdate, str]]) -> list[OrderUpdate]:
        """Publish; returns the updates accepted."""
        ...


class UpdateIngest:
    """Store, then publish what is new (and what an earlier publication left)."""

    def __init__(self, store: UpdateStore, publisher: Publisher, *, batch: int = 100) -> None:
        self._store = store
        self._publisher = publisher
        self._batch = batch
        self.published = 0
        self.publish_failures = 0

    def ingest(self, updates: list[OrderUpdate], source: str) -> list[bool]:
        """Store ``updates``; publish the pending ones; per update, whether it was new."""
        stored = self._store.store_updates(updates, source)
        if any(stored):
            self.flush()
        return stored

    def flush(self) -> int:
        """Publish stored updates not yet on the bus; how many were published."""
        pending = self._store.unpublished(self._batch)
        if not pending:
            return 0
        try:
            accepted = self._publisher.publish(pending)
        except Exception as exc:  # the bus is down: the outbox keeps them for the next call
            self.publish_failures += 1
            log.warning("order updates not published yet: %s", type(exc).__name__)
            return 0
        self._store.mark_published(accepted)
        self.published += len(accepted)
        if len(accepted) < len(pending):
            self.publish_failures += 1
        return len(accepted)


@dataclass
class IsolatedIngest(Generic[D]):
    """The outcome of :func:`ingest_isolating`: what was new, what was already stored, and
    the deliveries the store refused (to be redelivered, then dead-lettered)."""

    new: int = 0
    duplicates: int = 0
    failed: list[D] = field(default_factory=list)


def ingest_isolating(
    ingest: UpdateIngest, deliveries: Sequence[tuple[D, OrderUpdate]], source: str
) -> IsolatedIngest[D]:
    """Store ``deliveries`` in one go; if the store fails, one by one, so an update the store
    refuses (a character PostgreSQL's jsonb rejects, say) costs only its own delivery.

    Storing is idempotent, so the updates the failed whole-batch attempt had written are
    simply found again (duplicates) on the second pass. An update that still fails is
    logged and returned in ``failed``; nothing is swallowed: the caller reports it to SQS,
    which redelivers it and, past the redrive count, dead-letters it alone.
    """
    outcome: IsolatedIngest[D] = IsolatedIngest()
    if not deliveries:
        return outcome
    try:
        stored = ingest.ingest([update for _, update in deliveries], source)
    except Exception as exc:  # any store failure: fall back to one update at a time
        log.warning("order updates batch not stored, retrying one by one: %s", type(exc).__name__)
    else:
        outcome.new = sum(stored)
        outcome.duplicates = len(stored) - outcome.new
        return outcome
    for delivery, update in deliveries:
        try:
            (new,) = ingest.ingest([update], source)
        except Exception as exc:  # reported per delivery: SQS redelivers it, then dead-letters
            log.error(
                "order update not stored: %s",
                type(exc).__name__,
                extra={"account_id": update.account_id, "order_id": update.order_id},
            )
            outcome.failed.append(delivery)
            continue
        outcome.new += int(new)
        outcome.duplicates += int(not new)
    return outcome
