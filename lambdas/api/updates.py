"""Order updates from Kite: postback checksums and one identity per update (pure).

Kite tells about an order's changes twice: a postback (an HTTP POST of the
order, with ``checksum = sha256(order_id + order_timestamp + api_secret)``)
and an ``order`` message on the account's WebSocket (the same fields, an
empty checksum). Both become one :class:`OrderUpdate`, identified by the
account, Kite's order id and the update's time, refined by status and filled
quantity, so the store keeps the same update once whichever way, and however
often, it arrives.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ticker_core.kite_checksums import postback_checksum
from ticker_core.tz import IST

KITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SOURCES = ("api", "postback", "websocket", "order_book")


class UpdateRejectedError(ValueError):
    """Not an order update this service can store (a field missing or malformed)."""


@dataclass(frozen=True)
class OrderUpdate:
    """One state of one order, as Kite reported it."""

    account_id: str
    order_id: str
    update_time: datetime
    status: str
    filled_quantity: float
    tag: str | None
    payload: dict[str, Any]

    def event_detail(self, source: str) -> dict[str, Any]:
        """The EventBridge ``Detail`` of this update."""
        return {
            "account_id": self.account_id,
            "order_id": self.order_id,
            "status": self.status,
            "update_time": self.update_time.isoformat(),
            "filled_quantity": self.filled_quantity,
            "tag": self.tag,
            "source": source,
            "order": self.payload,
        }


def checksum_matches(raw: Mapping[str, Any], api_secret: str) -> bool:
    """Whether ``raw`` carries Kite's checksum for ``api_secret`` (constant-time compare)."""
    checksum = raw.get("checksum")
    order_id = raw.get("order_id")
    order_timestamp = raw.get("order_timestamp")
    if not all(isinstance(v, str) and v for v in (checksum, order_id, order_timestamp)):
        return False
    expected = postback_checksum(str(order_id), str(order_timestamp), api_secret)
    return hmac.compare_digest(expected, str(checksum))


def kite_time(text: Any) -> datetime:
    """A Kite timestamp (``YYYY-MM-DD HH:MM:SS`` in IST, or ISO 8601) as an aware datetime."""
    if not isinstance(text, str) or not text:
        raise UpdateRejectedError("timestamp missing")
    try:
        parsed = datetime.strptime(text, KITE_TIME_FORMAT)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise UpdateRejectedError(f"malformed timestamp {text[:40]!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=IST)


def order_update(account_id: str, raw: Mapping[str, Any]) -> OrderUpdate:
    """The update ``raw`` (a postback body or a WebSocket order's ``data``) describes."""
    order_id = raw.get("order_id")
    status = raw.get("status")
    if not isinstance(order_id, str) or not order_id or len(order_id) > 64:
        raise UpdateRejectedError("order_id missing or malformed")
    if not isinstance(status, str) or not status or len(status) > 64:
        raise UpdateRejectedError("status missing or malformed")
    when = raw.get("exchange_update_timestamp") or raw.get("order_timestamp")
    filled = raw.get("filled_quantity") or 0
    if isinstance(filled, bool) or not isinstance(filled, int | float):
        raise UpdateRejectedError("filled_quantity is not a number")
    tag = raw.get("tag")
    payload = {k: v for k, v in raw.items() if k != "checksum"}
    return OrderUpdate(
        account_id=account_id,
        order_id=order_id,
        update_time=kite_time(when),
        status=status,
        filled_quantity=float(filled),
        tag=tag if isinstance(tag, str) else None,
        payload=payload,
    )
