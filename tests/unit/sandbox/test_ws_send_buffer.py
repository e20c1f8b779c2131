"""The local WebSocket gateway's per-connection send buffer: order, conflation, bounds."""

from __future__ import annotations

import json

import pytest

from lambdas.ws.protocol import Channel, data_messages
from sandbox.ws_gateway import SendBuffer, SendBufferFullError


def data(channel: Channel, prices: dict[int, float]) -> bytes:
    records = [
        json.dumps({"instrument_token": t, "last_price": p}).encode() for t, p in prices.items()
    ]
    (message,) = data_messages(channel, records)
    return message


def drain(buffer: SendBuffer) -> list[dict[str, object]]:
    out = []
    while messages := buffer.take():
        out.extend(json.loads(m) for m in messages)
    return out


def latest(message: dict[str, object]) -> dict[int, float]:
    records = message["data"]
    assert isinstance(records, list)
    return {r["instrument_token"]: r["last_price"] for r in records}


def test_a_reader_that_keeps_up_gets_every_message_in_order() -> None:
    buffer = SendBuffer()
    buffer.put(b'{"type":"subscribed","id":"1"}')
    first = drain(buffer)
    buffer.put(data(Channel.TICKS, {1: 10}))
    second = drain(buffer)
    assert [m["type"] for m in first + second] == ["subscribed", "ticks"]
    assert buffer.pending_bytes == 0
    assert buffer.conflated == 0


def test_data_waiting_at_the_tail_conflates_to_the_latest_per_instrument() -> None:
    buffer = SendBuffer()
    for step in range(100):
        buffer.put(data(Channel.TICKS, {1: 10 + step, 2: 20 + step}))
        buffer.put(data(Channel.GREEKS, {1: 0.1 + step}))
    # Then one message per channel waits, with the newest values, and its size stays put
    messages = drain(buffer)
    assert [m["type"] for m in messages] == ["ticks", "greeks"]
    assert latest(messages[0]) == {1: 109, 2: 119}
    assert latest(messages[1]) == {1: pytest.approx(99.1)}
    assert buffer.conflated == 99 * 3


def test_a_reply_stays_between_the_data_before_and_after_it() -> None:
    buffer = SendBuffer()
    buffer.put(data(Channel.TICKS, {1: 10}))
    buffer.put(b'{"type":"unsubscribed","id":"u"}')
    buffer.put(data(Channel.TICKS, {2: 20}))
    assert [(m["type"], latest(m) if "data" in m else None) for m in drain(buffer)] == [
        ("ticks", {1: 10}),
        ("unsubscribed", None),
        ("ticks", {2: 20}),
    ]


def test_memory_is_bounded_however_long_the_reader_is_away() -> None:
    buffer = SendBuffer(max_segments=4)
    sizes = []
    for step in range(2000):
        buffer.put(data(Channel.TICKS, {t: float(step) for t in range(50)}))
        if step % 50 == 0:
            buffer.put(b'{"type":"pong","id":"p"}')
        sizes.append(buffer.pending_bytes)
    # Then what waits does not grow with time: a few runs of one record per instrument
    # (the runs between waiting replies), plus the replies
    one_run = len(data(Channel.TICKS, dict.fromkeys(range(50), 1999.0)))
    replies = 40 * len(b'{"type":"pong","id":"p"}')
    assert max(sizes) <= 2 * one_run + replies
    assert max(sizes[1000:]) <= max(sizes[:1000]) + replies
    final = [m for m in drain(buffer) if m["type"] == "ticks"]
    assert latest(final[-1]) == dict.fromkeys(range(50), 1999.0)


def test_past_its_bounds_the_buffer_refuses() -> None:
    replies = SendBuffer(max_control_bytes=100)
    for _ in range(3):
        replies.put(b'{"type":"pong","id":"0123456789"}')
    with pytest.raises(SendBufferFullError):
        replies.put(b'{"type":"pong","id":"0123456789"}')
    records = SendBuffer(max_records=10)
    with pytest.raises(SendBufferFullError):
        records.put(data(Channel.TICKS, dict.fromkeys(range(11), 1.0)))
