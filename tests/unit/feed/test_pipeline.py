"""Frames in, records to lanes: validation, malformed frames, heartbeats, text, prices."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from feed_container.encoder import InstrumentMeta
from feed_container.metrics import Metrics
from feed_container.pipeline import Bounds, Pipeline, validate
from feed_container.sender import CircuitBreaker, SendLane
from feed_container.spill import SpillStore
from ticker_core.kite_wire import HEARTBEAT, PacketKind, decode_frame, encode_columns, encode_text
from ticker_core.records import RecordBatcher, RecordTooLargeError, deaggregate

NOW = 1_795_000_000


def full_columns(n: int, **overrides: object) -> dict[str, object]:
    tokens = (np.arange(n) + 100) << 8 | 2
    price = np.full(n, 101.5)
    qty = np.full(n, 10, dtype=np.int64)
    cols: dict[str, object] = {
        "instrument_token": tokens,
        "last_price": price,
        "last_traded_quantity": qty,
        "average_traded_price": price,
        "volume_traded": qty,
        "total_buy_quantity": qty,
        "total_sell_quantity": qty,
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "last_trade_time": np.full(n, NOW),
        "oi": qty,
        "oi_day_high": qty,
        "oi_day_low": qty,
        "exchange_timestamp": np.full(n, NOW),
        "depth_quantity": np.full((n, 2, 5), 5),
        "depth_price": np.full((n, 2, 5), 101.0),
        "depth_orders": np.full((n, 2, 5), 1),
    }
    cols.update(overrides)
    return cols


class Clock:
    def __init__(self) -> None:
        self.ns = NOW * 10**9

    def __call__(self) -> int:
        return self.ns


def pipeline(tmp_path: Path) -> tuple[Pipeline, SendLane, Metrics, Clock]:
    metrics = Metrics()
    lane = SendLane(
        0,
        writer=None,  # type: ignore[arg-type]  # nothing is sent in these tests
        breaker=CircuitBreaker(1, 1, 1),
        spill=SpillStore(tmp_path, max_bytes=10**6, segment_bytes=10**5),
        metrics=metrics,
        batcher=RecordBatcher(linger=1.0),
        high_bytes=10**6,
        low_bytes=0,
        retry_delays=lambda: iter([]),
    )
    clock = Clock()
    return Pipeline([lane], metrics, wall_clock_ns=clock), lane, metrics, clock


def records(lane: SendLane) -> list[dict[str, object]]:
    return [
        json.loads(u.data)
        for b in lane.batcher.flush()
        for r in b.records
        for u in deaggregate(r.data, r.partition_key)
    ]


def test_sanity_bounds_drop_and_count_only_the_bad_rows() -> None:
    # Given a batch with a price far out of bounds, a timestamp from the future and a zero token
    prices = np.array([101.5, 5e6, 101.5, 101.5])
    stamps = np.array([NOW, NOW, NOW + 10 * 86400, NOW])
    tokens = np.array([1 << 8 | 2, 2 << 8 | 2, 3 << 8 | 2, 0])
    cols = full_columns(4, last_price=prices, exchange_timestamp=stamps, instrument_token=tokens)
    batch = decode_frame(encode_columns(PacketKind.FULL, cols)).batches[0]
    # When validated
    kept, dropped = validate(batch, NOW, Bounds(max_abs_price=1e6, max_future_skew_seconds=86400))
    # Then one row survives and each reason is counted once
    assert kept["instrument_token"].tolist() == [1 << 8 | 2]
    assert dropped == {"token": 1, "price": 1, "timestamp": 1}


def test_a_truncated_frame_keeps_its_intact_packets_and_counts_the_rest(tmp_path: Path) -> None:
    p, lane, metrics, _ = pipeline(tmp_path)
    frame = encode_columns(PacketKind.FULL, full_columns(3))
    assert p.on_frame("a1", frame[:-10]) == 2
    assert metrics.value("feed_frames_malformed_total", account="a1") == 1
    assert metrics.value("feed_packets_lost_total", account="a1") == 1
    assert len(records(lane)) == 2


def test_heartbeats_and_text_messages_are_counted_not_encoded(tmp_path: Path) -> None:
    p, lane, metrics, _ = pipeline(tmp_path)
    assert p.on_frame("a1", HEARTBEAT) == 0
    p.on_text("a1", encode_text("error", "Invalid token"))
    p.on_text("a1", "not json")
    assert p.stats("a1").heartbeats == 1
    assert metrics.value("feed_text_messages_total", account="a1", type="ErrorMessage") == 1
    assert metrics.value("feed_text_messages_total", account="a1", type="InvalidMessage") == 1
    assert lane.batcher.pending_user_records == 0


def test_receive_times_strictly_increase_even_when_the_clock_does_not(tmp_path: Path) -> None:
    # Given a wall clock that stands still
    p, lane, _, _ = pipeline(tmp_path)
    frame = encode_columns(PacketKind.LTP, {"instrument_token": [258], "last_price": [1.0]})
    # When three frames arrive
    for _ in range(3):
        p.on_frame("a1", frame)
    # Then each gets its own microsecond, so (account, token, received_at) is unique
    stamps = [r["received_at"] for r in records(lane)]
    assert len(set(stamps)) == 3
    assert stamps == sorted(stamps)


def test_watched_tokens_report_their_last_price(tmp_path: Path) -> None:
    p, _, _, _ = pipeline(tmp_path)
    p.watch({101 << 8 | 2})
    p.on_frame(
        "a1", encode_columns(PacketKind.FULL, full_columns(3, last_price=np.array([1.5, 2.5, 3.5])))
    )
    assert p.prices == {101 << 8 | 2: 2.5}


def test_counted_drops_are_logged_with_their_reason_at_most_every_ten_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given frames with a packet of an unknown length and a tick out of the price bounds
    p, _, metrics, _ = pipeline(tmp_path)
    p._bounds = Bounds(max_abs_price=1e6)
    ltp = encode_columns(PacketKind.LTP, {"instrument_token": [258], "last_price": [1.0]})
    unknown = b"\x00\x02" + ltp[2:] + b"\x00\x03abc"  # an LTP packet, then a 3-byte one
    crazy = encode_columns(PacketKind.LTP, {"instrument_token": [258], "last_price": [2e7]})
    # When each arrives five times
    with caplog.at_level(logging.WARNING, logger="feed_container.pipeline"):
        for _ in range(5):
            p.on_frame("a1", unknown)
            p.on_frame("a1", crazy)
    # Then every one is counted, and each reason is logged once (the rest held back)
    assert metrics.value("feed_packets_lost_total", account="a1") == 5
    assert metrics.value("feed_ticks_invalid_total", account="a1", reason="price") == 5
    reasons = [getattr(r, "reason", None) for r in caplog.records]
    assert reasons == ["unknown_packet", "invalid_price"]
    assert all(r.levelname == "WARNING" for r in caplog.records)


def test_an_encode_error_is_counted_and_logged_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a lane whose batcher refuses the first record of a key
    p, lane, metrics, _ = pipeline(tmp_path)
    original = lane.batcher.add_many
    refused = [True]

    def add_many(key: str, datas: Sequence[bytes], now: float) -> bool:
        if refused.pop() if refused else False:
            raise RecordTooLargeError(key, 2_000_000, 1_048_576)
        return original(key, datas, now)

    lane.batcher.add_many = add_many  # type: ignore[method-assign]
    frame = encode_columns(PacketKind.LTP, {"instrument_token": [258, 514], "last_price": [1, 2]})
    # When a frame arrives
    with caplog.at_level(logging.WARNING, logger="feed_container.pipeline"):
        p.on_frame("a1", frame)
    # Then the refused record is counted and the reason logged; the rest went on
    assert metrics.value("feed_encode_errors_total", account="a1") == 1
    assert [getattr(r, "error", None) for r in caplog.records] == ["RecordTooLargeError"]


def test_a_fault_in_frame_processing_is_counted_and_never_reaches_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an encoder with a bug
    p, _, metrics, _ = pipeline(tmp_path)

    def broken(*_: object) -> list[bytes]:
        raise IndexError("bug")

    p._encoder.encode = broken  # type: ignore[method-assign]
    frame = encode_columns(PacketKind.FULL, full_columns(3))
    # When a frame arrives
    with caplog.at_level(logging.ERROR, logger="feed_container.pipeline"):
        handed = p.on_frame("a1", frame)
    # Then nothing escapes: its packets are counted as lost and the error is logged
    assert handed == 0
    assert metrics.value("feed_frames_failed_total", account="a1", error="IndexError") == 1
    assert metrics.value("feed_packets_lost_total", account="a1") == 3
    assert "IndexError: bug" in caplog.text


def test_each_key_gets_its_records_in_wire_order_in_one_hand_over(tmp_path: Path) -> None:
    # Given a frame whose packets interleave two underlyings
    p, lane, _, _ = pipeline(tmp_path)
    keys = {258: "A", 514: "B"}
    p._encoder.meta = lambda token: InstrumentMeta(keys[token], None, None)  # type: ignore[method-assign]
    calls: list[tuple[str, int]] = []
    original = lane.add_many

    def add_many(key: str, datas: Sequence[bytes], now: float) -> None:
        calls.append((key, len(datas)))
        original(key, datas, now)

    lane.add_many = add_many  # type: ignore[method-assign]
    tokens = [258, 514, 258, 514, 258]
    prices = [1.0, 2.0, 3.0, 4.0, 5.0]
    frame = encode_columns(PacketKind.LTP, {"instrument_token": tokens, "last_price": prices})
    # When it is processed
    assert p.on_frame("a1", frame) == 5
    # Then each key was handed over once, with its records in wire order
    assert sorted(calls) == [("A", 3), ("B", 2)]
    by_key: dict[str, list[float]] = {}
    for record in records(lane):
        by_key.setdefault(str(record["underlying"]), []).append(float(record["last_price"]))
    assert by_key == {"A": [1.0, 3.0, 5.0], "B": [2.0, 4.0]}


def test_order_messages_go_to_the_order_update_sink(tmp_path: Path) -> None:
    # Given a pipeline whose order updates go to a sink
    _, lane, metrics, clock = pipeline(tmp_path)
    received: list[tuple[str, object]] = []
    p = Pipeline(
        [lane], metrics, wall_clock_ns=clock, order_updates=lambda a, u: received.append((a, u))
    )
    data = {"order_id": "1", "status": "COMPLETE", "order_timestamp": "2026-03-02 10:15:00"}
    # When Kite sends an order message and an error
    p.on_text("a1", encode_text("order", data))
    p.on_text("a1", encode_text("error", "Invalid token"))
    # Then the order, and only it, reaches the sink, and both are counted
    assert [(a, u.data) for a, u in received] == [("a1", data)]  # type: ignore[attr-defined]
    assert metrics.value("feed_text_messages_total", account="a1", type="OrderUpdate") == 1


def test_order_messages_without_a_sink_are_counted_and_dropped(tmp_path: Path) -> None:
    p, lane, metrics, _ = pipeline(tmp_path)
    p.on_text("a1", encode_text("order", {"order_id": "1", "status": "OPEN"}))
    assert metrics.value("feed_text_messages_total", account="a1", type="OrderUpdate") == 1
    assert lane.batcher.pending_user_records == 0
