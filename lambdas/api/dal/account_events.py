"""Account events onto the EventBridge bus: operations are told when a Kite login is needed.

``Source`` is ``ticker-service.accounts``; ``DetailType`` ``Kite Login Required``
with detail ``{account_id, api_key, session_expired_at, checked_at}``. A rule
on the bus routes them to whoever logs accounts in (SNS, chat, a pager).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lambdas.api.accounts import LoginRequired
from lambdas.api.dal.events import put_entries

EVENT_SOURCE = "ticker-service.accounts"
LOGIN_REQUIRED = "Kite Login Required"


def login_required_detail(required: LoginRequired, checked_at: datetime) -> dict[str, Any]:
    """The event's detail (no secret: the API key is public)."""
    expired = required.session_expired_at
    return {
        "account_id": required.account_id,
        "api_key": required.api_key,
        "session_expired_at": expired.isoformat() if expired else None,
        "checked_at": checked_at.isoformat(),
    }


class AccountEventPublisher:
    """Puts account events on one bus."""

    def __init__(self, events_client: Any, bus_name: str) -> None:
        self._events = events_client
        self._bus = bus_name

    def login_required(self, required: Sequence[LoginRequired], checked_at: datetime) -> int:
        """One event per account; how many the bus accepted."""
        entries = [
            {
                "Source": EVENT_SOURCE,
                "DetailType": LOGIN_REQUIRED,
                "Detail": json.dumps(login_required_detail(r, checked_at)),
                "EventBusName": self._bus,
                "Resources": [],
            }
            for r in required
        ]
        return sum(put_entries(self._events, entries))
