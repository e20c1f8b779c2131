"""Postbacks: Kite's order webhooks, and the order messages sent on the socket.

Kite POSTs the order, as a raw JSON body, to the app's postback URL when an
order completes, is cancelled or rejected, or is updated (modified, or
partly filled), with ``checksum = sha256(order_id + order_timestamp +
api_secret)``. The same dictionary, without a checksum, is what connections
of the account receive as ``{"type": "order", "data": ...}``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp

from kite_sim.auth import Account
from kite_sim.order_model import POSTBACK_STATUSES, OrderEvent
from ticker_core.kite_checksums import postback_checksum


def order_message(event: OrderEvent) -> dict[str, Any]:
    """The ``data`` of a WebSocket ``order`` message for ``event``."""
    order = dict(event.order)
    order["user_id"] = event.account.user_id
    order["unfilled_quantity"] = order["pending_quantity"]
    order["app_id"] = 0
    order["checksum"] = ""
    return order


def postback_payload(event: OrderEvent) -> dict[str, Any]:
    """The JSON body Kite POSTs for ``event``, with its checksum."""
    payload = order_message(event)
    payload["checksum"] = postback_checksum(
        str(payload["order_id"]), str(payload["order_timestamp"]), event.account.api_secret
    )
    return payload


def wants_postback(event: OrderEvent) -> bool:
    """Whether Kite posts back this event (and the app has a postback URL)."""
    return event.account.postback_url is not None and event.status in POSTBACK_STATUSES


@dataclass
class Delivery:
    """One postback attempt."""

    url: str
    order_id: str
    status: str
    http_status: int | None
    error: str | None = None


class PostbackSender:
    """Delivers postbacks in the background and remembers the last deliveries."""

    def __init__(self, timeout: float = 5.0, keep: int = 1000) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.deliveries: deque[Delivery] = deque(maxlen=keep)
        self.sent = 0
        self.failed = 0

    def submit(self, event: OrderEvent) -> None:
        """Post ``event`` without waiting (call from the event loop)."""
        account: Account = event.account
        if account.postback_url is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._post(account.postback_url, postback_payload(event))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(payload).encode()
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                self.deliveries.append(
                    Delivery(url, payload["order_id"], payload["status"], resp.status)
                )
                self.sent += 1
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.failed += 1
            self.deliveries.append(
                Delivery(url, payload["order_id"], payload["status"], None, type(exc).__name__)
            )

    async def drain(self) -> None:
        """Wait for postbacks in flight."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Finish in-flight postbacks and close the HTTP session."""
        await self.drain()
        if self._session is not None:
            await self._session.close()
            self._session = None
