"""Order updates onto an EventBridge bus, for other services.

``Source`` is ``ticker-service.trading``, ``DetailType`` ``Order Update``;
the detail is :meth:`lambdas.api.updates.OrderUpdate.event_detail`. Entries
go ten to a call (EventBridge's limit); the updates whose entries were
accepted are returned, so the caller marks only those published.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lambdas.api.updates import OrderUpdate

EVENT_SOURCE = "ticker-service.trading"
DETAIL_TYPE = "Order Update"
MAX_ENTRIES_PER_CALL = 10


def put_entries(events_client: Any, entries: Sequence[dict[str, Any]]) -> list[bool]:
    """Put entries ten to a call; per entry, whether the bus accepted it."""
    accepted: list[bool] = []
    for start in range(0, len(entries), MAX_ENTRIES_PER_CALL):
        chunk = entries[start : start + MAX_ENTRIES_PER_CALL]
        response = events_client.put_events(Entries=list(chunk))
        answers = response.get("Entries", [])
        accepted += [
            n < len(answers) and bool(answers[n].get("EventId")) and not answers[n].get("ErrorCode")
            for n in range(len(chunk))
        ]
    return accepted


class EventBridgePublisher:
    """Puts order updates on one bus."""

    def __init__(self, events_client: Any, bus_name: str) -> None:
        self._events = events_client
        self._bus = bus_name

    def publish(self, updates: Sequence[tuple[OrderUpdate, str]]) -> list[OrderUpdate]:
        """Put each (update, source) on the bus; returns the updates accepted."""
        entries = [
            {
                "Source": EVENT_SOURCE,
                "DetailType": DETAIL_TYPE,
                "Detail": json.dumps(update.event_detail(source), default=str),
                "EventBusName": self._bus,
                "Resources": [],
            }
            for update, source in updates
        ]
        accepted = put_entries(self._events, entries)
        return [update for (update, _), ok in zip(updates, accepted, strict=True) if ok]
