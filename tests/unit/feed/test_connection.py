"""One Kite connection against a scripted handshake: tokens, 429, slots, resubscribe, watchdog."""

from __future__ import annotations

import asyncio
import json
from itertools import repeat
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, CloseCode
from websockets.http11 import Response

from feed_container.connection import (
    ConnectionSettings,
    KeyLimiter,
    KiteConnection,
    subscription_messages,
)
from feed_container.metrics import Metrics
from feed_container.planner import SlotDiff, SlotId
from tests.waiting import wait_until_async as eventually  # these tests' name for it


class FakeSocket:
    """A connected socket: frames the test pushes, messages the connection sends."""

    def __init__(self, server: FakeKite) -> None:
        self.server = server
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.sent: list[Any] = []
        # websockets' protocol state: the peer's close frame, once it has answered ours
        self.protocol = SimpleNamespace(close_rcvd=None)

    async def recv(self) -> bytes:
        item = await self.inbox.get()
        if item is None:
            raise ConnectionClosed(None, None)
        return item

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def close(self) -> None:
        if self in self.server.live:
            self.server.live.remove(self)
        self.protocol.close_rcvd = Close(CloseCode.NORMAL_CLOSURE, "")  # a peer that answers
        self.inbox.put_nowait(None)


class FakeKite:
    """Answers handshakes from a script of HTTP statuses (200 opens a socket)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = statuses or []
        self.attempts: list[str] = []
        self.sockets: list[FakeSocket] = []
        self.live: list[FakeSocket] = []
        self.most_live = 0

    async def connect(self, url: str, **_: Any) -> FakeSocket:
        token = parse_qs(urlparse(url).query)["access_token"][0]
        self.attempts.append(token)
        await asyncio.sleep(0.001)
        status = self.statuses.pop(0) if self.statuses else 200
        if status != 200:
            raise InvalidStatus(Response(status, "refused", Headers()))
        socket = FakeSocket(self)
        self.sockets.append(socket)
        self.live.append(socket)
        self.most_live = max(self.most_live, len(self.live))
        return socket


class Tokens:
    def __init__(self, token: str = "t1") -> None:
        self.token = token
        self.forced = 0

    async def session(self, account: str, *, force_refresh: bool) -> tuple[str, str]:
        self.forced += force_refresh
        return "key1", self.token


def connection(
    kite: FakeKite,
    tokens: Tokens,
    *,
    index: int = 0,
    limiter: KeyLimiter | None = None,
    watchdog: float = 5.0,
) -> KiteConnection:
    return KiteConnection(
        SlotId("acct", index),
        url="ws://kite",
        tokens=tokens,
        limiter=limiter or KeyLimiter(3),
        on_frame=lambda account, frame: None,
        on_text=lambda account, text: None,
        metrics=Metrics(),
        backoff=lambda: repeat(0.001),
        settings=ConnectionSettings(watchdog=watchdog, rate_limited_delay=0.05, reset_after=60),
        connect_fn=kite.connect,  # type: ignore[arg-type]
    )


def test_subscription_messages_group_modes_and_unsubscribe_first() -> None:
    messages = [
        json.loads(m) for m in subscription_messages([9, 8], {3: "full", 1: "ltp"}, {5: "full"})
    ]
    assert messages == [
        {"a": "unsubscribe", "v": [8, 9]},
        {"a": "subscribe", "v": [1, 3]},
        {"a": "mode", "v": ["full", [3, 5]]},
        {"a": "mode", "v": ["ltp", [1]]},
    ]


async def test_a_403_rereads_the_vault_and_waits_for_a_new_token() -> None:
    # Given Kite refuses the current token
    kite, tokens = FakeKite([403]), Tokens("t1")
    conn = connection(kite, tokens)
    conn.update(SlotDiff(subscribe={7: "quote"}))
    conn.start()
    # When the vault keeps returning the refused token for a while
    await eventually(lambda: tokens.forced >= 3)
    # Then Kite is not asked again with it
    assert kite.attempts == ["t1"]
    # And once the vault has a new one, it connects with it and subscribes
    tokens.token = "t2"
    await eventually(lambda: conn.connected and kite.sockets[-1].sent)
    assert kite.attempts == ["t1", "t2"]
    assert kite.sockets[-1].sent == [
        {"a": "subscribe", "v": [7]},
        {"a": "mode", "v": ["quote", [7]]},
    ]
    await conn.stop()


async def test_a_429_waits_at_least_the_rate_limited_delay() -> None:
    kite = FakeKite([429, 429])
    conn = connection(kite, Tokens())
    conn.update(SlotDiff(subscribe={7: "ltp"}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    conn.start()
    await eventually(lambda: conn.connected)
    assert loop.time() - started >= 0.1
    assert len(kite.attempts) == 3
    await conn.stop()


async def test_never_more_than_three_sockets_per_key_even_while_reconnecting() -> None:
    # Given five connections of one API key sharing a limiter of 3
    kite = FakeKite()
    limiter = KeyLimiter(3)
    conns = [connection(kite, Tokens(), index=i, limiter=limiter) for i in range(5)]
    for conn in conns:
        conn.update(SlotDiff(subscribe={100 + conn.slot.index: "ltp"}))
        conn.start()
    await eventually(lambda: len(kite.live) == 3)
    # When the live sockets drop again and again
    for _ in range(5):
        for socket in list(kite.live):
            await socket.close()
        await eventually(lambda: len(kite.live) == 3)
    # Then at no moment were more than three open
    assert kite.most_live == 3
    assert limiter.in_use("key1") == 3
    for conn in conns:
        await conn.stop()


async def test_reconnects_resubscribe_with_modes_and_changes_go_out_incrementally() -> None:
    kite = FakeKite()
    conn = connection(kite, Tokens())
    conn.update(SlotDiff(subscribe={1: "full", 2: "ltp"}))
    conn.start()
    await eventually(lambda: conn.connected and len(kite.sockets[0].sent) == 3)
    # When instruments change on the live socket
    conn.update(SlotDiff(unsubscribe=[2], subscribe={3: "quote"}, mode={1: "ltp"}))
    await eventually(lambda: len(kite.sockets[0].sent) == 7)
    assert kite.sockets[0].sent[3:] == [
        {"a": "unsubscribe", "v": [2]},
        {"a": "subscribe", "v": [3]},
        {"a": "mode", "v": ["ltp", [1]]},
        {"a": "mode", "v": ["quote", [3]]},
    ]
    # And when the socket dies, the new one gets the whole current state
    await kite.sockets[0].close()
    await eventually(lambda: len(kite.sockets) == 2 and len(kite.sockets[1].sent) == 3)
    assert kite.sockets[1].sent == [
        {"a": "subscribe", "v": [1, 3]},
        {"a": "mode", "v": ["ltp", [1]]},
        {"a": "mode", "v": ["quote", [3]]},
    ]
    await conn.stop()


async def test_the_watchdog_replaces_a_silent_socket() -> None:
    kite = FakeKite()
    conn = connection(kite, Tokens(), watchdog=0.05)
    conn.update(SlotDiff(subscribe={1: "ltp"}))
    conn.start()
    await eventually(lambda: len(kite.sockets) >= 3)
    assert conn._metrics.value("feed_watchdog_trips_total", account="acct") >= 2
    await conn.stop()
