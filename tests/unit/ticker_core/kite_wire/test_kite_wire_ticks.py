"""parse_ticks on hand-packed frames: exact dicts for every packet type, heartbeats, stats."""

from __future__ import annotations

import struct
from datetime import datetime

import pytest

from ticker_core.kite_wire import (
    HEARTBEAT,
    DecodeStats,
    PacketKind,
    Segment,
    parse_ticks,
    price_divisor,
    segment_of,
)
from ticker_core.tz import IST

NFO_TOKEN = 12345 << 8 | Segment.NFO
INDEX_TOKEN = 256265  # NIFTY 50: 1001 << 8 | 9
STAMP = 1_795_754_700  # 2026-11-27 10:15:00 IST
STAMP_IST = datetime(2026, 11, 27, 10, 15, tzinfo=IST)


def frame(*packets: bytes) -> bytes:
    return struct.pack(">H", len(packets)) + b"".join(
        struct.pack(">H", len(p)) + p for p in packets
    )


def ltp(token: int, price: int) -> bytes:
    return struct.pack(">Ii", token, price)


def index_quote(token: int, last: int, high: int, low: int, open_: int, close: int) -> bytes:
    return struct.pack(">Iiiiiii", token, last, high, low, open_, close, last - close)


def quote(token: int, last: int, close: int) -> bytes:
    quantities = (75, 2_460_050, 1_000_000, 4_000, 5_000)  # ltq, avg price, volume, buy, sell
    ohlc = (2_450_000, 2_480_000, 2_440_000, close)
    return struct.pack(">IiIiIIIiiii", token, last, *quantities, *ohlc)


def full(token: int, last: int, close: int, depth_price: int) -> bytes:
    head = quote(token, last, close) + struct.pack(">IIIII", STAMP - 5, 900, 950, 850, STAMP)
    depth = b"".join(struct.pack(">IiH2x", 10 * (i + 1), depth_price + i, i + 1) for i in range(10))
    return head + depth


def test_segment_and_divisor_follow_the_tokens_low_byte() -> None:
    # Given tokens of segments with special divisors, Then the divisor follows the segment
    assert segment_of(INDEX_TOKEN) == Segment.INDICES
    assert price_divisor(Segment.CDS) == 10_000_000.0
    assert price_divisor(Segment.BCD) == price_divisor(Segment.NCO) == 10_000.0
    assert price_divisor(Segment.NFO) == price_divisor(0) == price_divisor(255) == 100.0


def test_ltp_packet_gives_the_official_dict() -> None:
    # Given an 8-byte LTP packet of an NFO option
    # When parsed
    (tick,) = parse_ticks(frame(ltp(NFO_TOKEN, 12_345)))
    # Then it is exactly the official client's dict, in its key order
    assert tick == {
        "tradable": True,
        "mode": "ltp",
        "instrument_token": NFO_TOKEN,
        "last_price": 123.45,
    }
    assert list(tick) == ["tradable", "mode", "instrument_token", "last_price"]


def test_index_quote_derives_change_and_orders_ohlc_as_on_the_wire() -> None:
    # Given a 28-byte index packet (high, low, open, close on the wire)
    packet = index_quote(INDEX_TOKEN, 2_420_000, 2_430_000, 2_390_000, 2_400_000, 2_410_000)
    # When parsed
    (tick,) = parse_ticks(frame(packet))
    # Then the index is not tradable, ohlc keeps wire order, change is percent over close
    assert tick["tradable"] is False
    assert tick["mode"] == "quote"
    assert list(tick["ohlc"].items()) == [
        ("high", 24_300.0),
        ("low", 23_900.0),
        ("open", 24_000.0),
        ("close", 24_100.0),
    ]
    assert tick["change"] == (24_200.0 - 24_100.0) * 100 / 24_100.0
    # And the wire's absolute net change is not a tick key, as in the official client
    assert list(tick) == ["tradable", "mode", "instrument_token", "last_price", "ohlc", "change"]


def test_index_full_adds_an_aware_exchange_timestamp() -> None:
    # Given a 32-byte index packet
    packet = index_quote(INDEX_TOKEN, 1, 1, 1, 1, 1) + struct.pack(">I", STAMP)
    # When parsed, Then its timestamp is the instant in IST
    (tick,) = parse_ticks(frame(packet))
    assert tick["mode"] == "full"
    assert tick["exchange_timestamp"] == STAMP_IST
    assert tick["exchange_timestamp"].tzinfo is IST


def test_quote_packet_gives_quantities_unscaled_and_prices_scaled() -> None:
    # Given a 44-byte quote packet
    (tick,) = parse_ticks(frame(quote(NFO_TOKEN, 2_460_000, 2_450_000)))
    # Then quantities are integers as sent and prices are divided
    assert tick["last_traded_quantity"] == 75
    assert tick["average_traded_price"] == 24_600.5
    assert tick["volume_traded"] == 1_000_000
    assert (tick["total_buy_quantity"], tick["total_sell_quantity"]) == (4_000, 5_000)
    assert list(tick["ohlc"]) == ["open", "high", "low", "close"]
    assert tick["change"] == (24_600.0 - 24_500.0) * 100 / 24_500.0
    assert list(tick) == [
        "tradable", "mode", "instrument_token", "last_price", "last_traded_quantity",
        "average_traded_price", "volume_traded", "total_buy_quantity",
        "total_sell_quantity", "ohlc", "change",
    ]  # fmt: skip


def test_full_packet_gives_oi_timestamps_and_five_levels_a_side() -> None:
    # Given a 184-byte full packet with distinct depth levels
    (tick,) = parse_ticks(frame(full(NFO_TOKEN, 2_460_000, 2_450_000, depth_price=2_459_000)))
    # Then open interest, both timestamps and the depth are decoded
    assert (tick["oi"], tick["oi_day_high"], tick["oi_day_low"]) == (900, 950, 850)
    assert tick["last_trade_time"] == datetime.fromtimestamp(STAMP - 5, IST)
    assert tick["exchange_timestamp"] == STAMP_IST
    assert tick["depth"]["buy"][0] == {"quantity": 10, "price": 24_590.0, "orders": 1}
    assert tick["depth"]["sell"][4] == {"quantity": 100, "price": 24_590.09, "orders": 10}
    assert [len(tick["depth"][side]) for side in ("buy", "sell")] == [5, 5]
    assert list(tick)[-6:] == [
        "last_trade_time", "oi", "oi_day_high", "oi_day_low", "exchange_timestamp", "depth",
    ]  # fmt: skip


def test_depth_padding_bytes_are_ignored() -> None:
    # Given a full packet whose depth padding bytes are not zero
    clean = full(NFO_TOKEN, 100, 100, depth_price=100)
    dirty = bytearray(clean)
    for level in range(10):
        at = 64 + 12 * level + 10
        dirty[at : at + 2] = b"\xff\xff"
    # When both are parsed, Then the ticks are the same
    assert parse_ticks(frame(bytes(dirty))) == parse_ticks(frame(clean))


def test_prices_are_signed_where_the_official_client_reads_unsigned() -> None:
    # Given a spread trading below zero: negative last, close and depth prices
    packet = full(NFO_TOKEN, last=-1_250, close=-1_000, depth_price=-1_300)
    # When parsed
    tick, last_only = parse_ticks(frame(packet, ltp(NFO_TOKEN, -5)))
    # Then the prices are negative numbers, not 4-billion-something
    assert last_only["last_price"] == -0.05
    assert tick["last_price"] == -12.5
    assert tick["ohlc"]["close"] == -10.0
    assert tick["depth"]["buy"][0]["price"] == -13.0
    assert tick["change"] == (-12.5 - -10.0) * 100 / -10.0


def test_negative_index_change_is_signed() -> None:
    # Given an index that fell (last below close), When parsed, Then change is negative
    packet = index_quote(INDEX_TOKEN, 2_380_000, 2_430_000, 2_370_000, 2_400_000, 2_410_000)
    (tick,) = parse_ticks(frame(packet))
    assert tick["change"] < 0


def test_zero_close_gives_zero_change() -> None:
    # Given a quote whose previous close is 0 (a new listing), Then change is 0, not an error
    (tick,) = parse_ticks(frame(quote(NFO_TOKEN, 2_460_000, 0)))
    assert tick["change"] == 0.0


@pytest.mark.parametrize(
    ("segment", "raw", "price"),
    [
        (Segment.CDS, 832_512_500, 83.25125),
        (Segment.BCD, 832_512, 83.2512),
        (Segment.NCO, 456_789, 45.6789),
        (Segment.MCX, 7_123_400, 71_234.0),
    ],
)
def test_divisor_depends_on_segment(segment: Segment, raw: int, price: float) -> None:
    # Given an LTP packet in a segment, When parsed, Then the price uses its divisor
    (tick,) = parse_ticks(frame(ltp(1 << 8 | segment, raw)))
    assert tick["last_price"] == price


@pytest.mark.parametrize("heartbeat", [HEARTBEAT, b"", b"\xff"])
def test_heartbeats_give_no_ticks(heartbeat: bytes) -> None:
    # Given a frame shorter than a packet count
    stats = DecodeStats()
    # When parsed, Then there are no ticks and it counts as a heartbeat
    assert parse_ticks(heartbeat, stats=stats) == []
    assert (stats.frames, stats.heartbeats, stats.ticks) == (1, 1, 0)


def test_an_empty_data_frame_gives_no_ticks() -> None:
    # Given a frame announcing zero packets, Then it decodes to nothing, without error
    assert parse_ticks(b"\x00\x00") == []


def test_a_timestamp_shared_by_a_frame_is_built_once() -> None:
    # Given a frame of full packets sharing one exchange second
    packets = [full(NFO_TOKEN + (i << 8), 100, 100, 100) for i in range(3)]
    # When parsed
    ticks = parse_ticks(frame(*packets))
    # Then they share one datetime object (equal values, built once)
    assert ticks[0]["exchange_timestamp"] is ticks[2]["exchange_timestamp"]
    assert ticks[1]["last_trade_time"] == datetime.fromtimestamp(STAMP - 5, IST)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_any_bytes_like_frame_decodes(wrap: type) -> None:
    # Given the same frame as bytes, bytearray and memoryview
    data = frame(ltp(NFO_TOKEN, 100), full(NFO_TOKEN, 1, 1, 1))
    # When parsed, Then the ticks are the same
    assert parse_ticks(wrap(data)) == parse_ticks(data)


def test_stats_count_frames_ticks_and_skips() -> None:
    # Given a connection's stats and two frames, one holding a packet of unknown length
    stats = DecodeStats()
    parse_ticks(frame(ltp(NFO_TOKEN, 1), ltp(NFO_TOKEN, 2)), stats=stats)
    parse_ticks(frame(b"\x00" * 12, ltp(NFO_TOKEN, 3)), stats=stats)
    # Then the counts add up across calls
    assert (stats.frames, stats.ticks, stats.skipped_packets) == (2, 3, 1)
    assert stats.malformed_frames == 0


def test_packet_kinds_are_told_apart_by_length() -> None:
    # Given every packet type, Then its length is the one Kite documents
    lengths = {kind: kind.length for kind in PacketKind}
    assert lengths == {
        PacketKind.LTP: 8,
        PacketKind.INDEX_QUOTE: 28,
        PacketKind.INDEX_FULL: 32,
        PacketKind.QUOTE: 44,
        PacketKind.FULL: 184,
    }
