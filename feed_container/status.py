"""The feed's status record: what it plans and streams, written to DynamoDB every few seconds.

The API's status route and accounts list read it (the record's format and
store are :mod:`ticker_adapters.feed_status`). :func:`feed_status` is the
pure part: the record from the pool's slots, the reconciler's generation and
the accounts waiting for a login. :class:`StatusWriter` writes it every
``interval`` until cancelled; a failed write is logged, counted
(``feed_status_write_errors_total``) and tried again at the next interval,
so the loop never ends on its own, and streaming never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from feed_container.metrics import Metrics
from feed_container.planner import SlotId
from ticker_adapters.feed_status import (
    MAX_SAMPLE,
    AccountStatus,
    ConnectionStatus,
    FeedStatus,
)

log = logging.getLogger("feed_container.status")


class StatusSink(Protocol):
    """Where records go (``ticker_adapters.feed_status.FeedStatusStore``)."""

    def put(self, status: FeedStatus) -> None:
        """Write this instance's record."""
        ...


def feed_status(
    *,
    instance: str,
    written_at: datetime,
    started_at: datetime,
    interval_seconds: float,
    generation: int | None,
    desired: int,
    slots: Iterable[tuple[SlotId, bool, int]],
    unassigned: tuple[int, ...],
    accounts_waiting: tuple[str, ...],
) -> FeedStatus:
    """The record for one moment of the feed (pure)."""
    by_account: dict[str, list[ConnectionStatus]] = {}
    for slot, connected, instruments in slots:
        by_account.setdefault(slot.account, []).append(
            ConnectionStatus(slot.index, connected, instruments)
        )
    accounts = tuple(
        AccountStatus(account, tuple(sorted(conns, key=lambda c: c.index)))
        for account, conns in sorted(by_account.items())
    )
    return FeedStatus(
        instance=instance,
        written_at=written_at,
        started_at=started_at,
        interval_seconds=interval_seconds,
        generation=generation,
        desired=desired,
        streaming=sum(a.streaming for a in accounts),
        not_fitted=len(unassigned),
        not_fitted_sample=unassigned[:MAX_SAMPLE],
        accounts=accounts,
        accounts_waiting=accounts_waiting,
    )


class StatusWriter:
    """Writes the record every ``interval`` seconds (see the module docstring)."""

    def __init__(
        self,
        sink: StatusSink,
        read: Callable[[], FeedStatus],
        *,
        interval: float,
        metrics: Metrics,
    ) -> None:
        self._sink = sink
        self._read = read
        self._interval = interval
        self._metrics = metrics
        self.written = 0

    async def write_once(self) -> bool:
        """Write the current record; whether it was written."""
        try:
            status = self._read()
            await asyncio.to_thread(self._sink.put, status)
        except Exception as exc:  # logged and counted; the next interval tries again
            self._metrics.inc("feed_status_write_errors_total")
            log.warning("status record not written", extra={"error": type(exc).__name__})
            return False
        self.written += 1
        return True

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            await self.write_once()
            await asyncio.sleep(self._interval)


def utc_now() -> datetime:
    """The current instant."""
    return datetime.now(UTC)
