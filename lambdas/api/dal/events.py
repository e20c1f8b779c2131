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


class EventBridgePublisher:
    """Puts order updates on one bus."""

    def __init__(self, events_client: Any, bus_name: str) -> None:
        self._events = events_client
        self._bus = bus_name

    def publish(self, updates: Sequence[tuple[OrderUpdate, str]]) -> list[OrderUpdate]:
        """Put each (update, source) on the bus; returns the updates accepted."""
        accepted: list[OrderUpdate] = []
        for start in range(0, len(updates), MAX_ENTRIES_PER_CALL):
            chunk = updates[start : start + MAX_ENTRIES_PER_CALL]
            response = self._events.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": DETAIL_TYPE,
                        "Detail": json.dumps(update.event_detail(source), default=str),
                        "EventBusName": self._bus,
                        "Resources": [],
                    }
                    for update, source in chunk
                ]
            )
            for (update, _), entry in zip(chunk, response.get("Entries", []), strict=False):
                if entry.get("EventId") and not entry.get("ErrorCode"):
                    accepted.append(update)
        return accepted
