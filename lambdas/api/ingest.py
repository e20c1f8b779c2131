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
from typing import Protocol

from lambdas.api.updates import OrderUpdate

log = logging.getLogger(__name__)


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
