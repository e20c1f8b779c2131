"""One Kite connection against a scripted handshake: tokens, 429, slots, resubscribe, watchdog."""

from __future__ import annotations

import asyncio
import json
import logging
from itertools import repeat
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, CloseCode
from websockets.http11 import Response

from feed_container.connection import (
    ConnectionSettings,
    KeyLimiter,
    KiteConnection,
    max_frame_bytes,
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


async def test_a_connection_held_open_connects_with_nothing_to_carry() -> None:
    # Given a connection with no instrument, held open (its account's order updates come on it)
    kite = FakeKite()
    conn = connection(kite, Tokens())
    conn.start()
    conn.hold_open()
    # Then it connects, subscribing nothing
    await eventually(lambda: conn.connected)
    assert kite.sockets[0].sent == []
    await conn.stop()


async def test_the_watchdog_replaces_a_silent_socket() -> None:
    kite = FakeKite()
    conn = connection(kite, Tokens(), watchdog=0.05)
    conn.update(SlotDiff(subscribe={1: "ltp"}))
    conn.start()
    await eventually(lambda: len(kite.sockets) >= 3)
    assert conn._metrics.value("feed_watchdog_trips_total", account="acct") >= 2
    await conn.stop()


async def test_an_unexpected_connect_error_is_counted_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a WebSocket client that fails twice with errors nobody planned for
    # (a proxy variable it refuses, a bug), then connects
    kite = FakeKite()
    failures = [ValueError("unsupported proxy"), RuntimeError("bug")]

    async def flaky_connect(url: str, **kwargs: Any) -> FakeSocket:
        if failures:
            raise failures.pop(0)
        return await kite.connect(url, **kwargs)

    conn = connection(kite, Tokens())
    conn._connect = flaky_connect  # type: ignore[assignment]
    conn.update(SlotDiff(subscribe={7: "quote"}))
    # When it runs
    with caplog.at_level(logging.ERROR, logger="feed_container.connection"):
        conn.start()
        # Then the slot is not lost: it connects and subscribes after the errors
        await eventually(lambda: conn.connected and kite.sockets[-1].sent)
    metrics = conn._metrics
    assert metrics.value("feed_connection_errors_total", account="acct", error="ValueError") == 1
    assert metrics.value("feed_connection_errors_total", account="acct", error="RuntimeError") == 1
    assert "unexpected error" in caplog.text
    # And stopping it does not raise
    await conn.stop()


async def test_a_writer_that_fails_ends_the_connection_so_it_resubscribes() -> None:
    # Given a connection whose first socket cannot send (an unexpected error)
    kite = FakeKite()
    conn = connection(kite, Tokens())
    conn.update(SlotDiff(subscribe={7: "quote"}))
    original = FakeSocket.send
    broken: list[FakeSocket] = []

    async def send(self: FakeSocket, message: str) -> None:
        if not broken or broken[0] is self:
            broken[:1] = [self]
            raise RuntimeError("send failed")
        await original(self, message)

    aborted: list[FakeSocket] = []
    FakeSocket.send = send  # type: ignore[method-assign]
    FakeSocket.transport = property(  # type: ignore[attr-defined]
        lambda self: SimpleNamespace(
            abort=lambda: (aborted.append(self), self.inbox.put_nowait(None))
        )
    )
    try:
        # When it runs
        conn.start()
        # Then the failed writer closed that socket, and the next one subscribed
        await eventually(lambda: len(kite.sockets) >= 2 and kite.sockets[-1].sent)
    finally:
        FakeSocket.send = original  # type: ignore[method-assign]
        del FakeSocket.transport  # type: ignore[attr-defined]
    assert aborted == [kite.sockets[0]]
    assert kite.sockets[-1].sent[0] == {"a": "subscribe", "v": [7]}
    assert conn._metrics.value("feed_connection_errors_total", account="acct", error="RuntimeError")
    await conn.stop()


def test_the_frame_cap_fits_a_full_connection_in_full_mode() -> None:
    # Given 3000 instruments in full mode (184-byte packets)
    cap = max_frame_bytes(3000)
    # Then the largest frame Kite can send them fits, and nothing much larger does
    assert cap == 2 + 3000 * (2 + 184)
    assert ConnectionSettings().max_frame_bytes == cap
    # And a tiny connection still accepts text messages (order updates)
    assert max_frame_bytes(1) == 64 * 1024


async def test_the_handshake_asks_for_the_frame_cap() -> None:
    # Given a connection with a frame cap
    kite = FakeKite()
    seen: dict[str, Any] = {}

    async def connect(url: str, **kwargs: Any) -> FakeSocket:
        seen.update(kwargs)
        return await kite.connect(url)

    conn = connection(kite, Tokens())
    conn._connect = connect  # type: ignore[assignment]
    conn.update(SlotDiff(subscribe={7: "quote"}))
    conn.start()
    await eventually(lambda: conn.connected)
    await conn.stop()
    # Then the WebSocket client enforces it (no unbounded messages)
    assert seen["max_size"] == max_frame_bytes(3000)


async def test_a_stop_during_the_handshake_closes_the_socket_before_it_subscribes() -> None:
    # Given a connection whose handshake is slow (a loaded machine)
    kite = FakeKite()
    handshake = asyncio.Event()

    async def slow_connect(url: str, **kwargs: Any) -> FakeSocket:
        await handshake.wait()
        return await kite.connect(url, **kwargs)

    conn = connection(kite, Tokens())
    conn._connect = slow_connect  # type: ignore[assignment]
    conn.update(SlotDiff(subscribe={7: "quote"}))
    conn.start()
    await asyncio.sleep(0.01)
    # When it is stopped mid-handshake, and the handshake then completes
    stopping = asyncio.create_task(conn.stop())
    await asyncio.sleep(0.01)
    handshake.set()
    await asyncio.wait_for(stopping, 1.0)
    # Then the socket was closed at once: nothing subscribed, nothing streamed past the stop
    assert len(kite.sockets) == 1
    assert kite.sockets[0].sent == []
    assert kite.live == []
    assert not conn.connected


async def test_a_connection_with_frames_buffered_lets_the_loop_run_between_them() -> None:
    # Given a connection that has fallen behind: 50 frames already buffered
    kite = FakeKite()
    seen: list[int] = []
    other = [0]

    conn = connection(kite, Tokens())
    conn._on_frame = lambda account, frame: seen.append(other[0])  # type: ignore[assignment]
    conn.update(SlotDiff(subscribe={7: "quote"}))
    conn.start()
    await eventually(lambda: conn.connected)
    for n in range(50):
        kite.sockets[-1].inbox.put_nowait(b"\x00\x01" + bytes([n]))

    async def other_work() -> None:  # a lane, a timer: anything else on the loop
        while len(seen) < 50:
            other[0] += 1
            await asyncio.sleep(0)

    # When both run
    await asyncio.wait_for(other_work(), 2.0)
    await conn.stop()
    # Then the other work ran between the frames, not only after the backlog
    assert len(set(seen)) > 25
