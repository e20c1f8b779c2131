"""Encoding ticks and frames, and the one layout definition both codecs derive from."""

from __future__ import annotations

import copy
import struct
from datetime import datetime
from typing import Any

import pytest

from ticker_core.kite_wire import (
    DEPTH_LEVELS,
    DEPTH_SIDES,
    HEARTBEAT,
    EncodeError,
    PacketKind,
    Role,
    Segment,
    encode_frame,
    encode_packet,
    join_frames,
    pack_frame,
    parse_ticks,
)
from ticker_core.tz import IST

STAMP_IST = datetime(2026, 11, 27, 10, 15, tzinfo=IST)


def full_tick() -> dict[str, Any]:
    return {
        "tradable": True,
        "mode": "full",
        "instrument_token": 12345 << 8 | Segment.NFO,
        "last_price": 112.5,
        "last_traded_quantity": 75,
        "average_traded_price": 110.25,
        "volume_traded": 1_500_000,
        "total_buy_quantity": 30_000,
        "total_sell_quantity": 45_000,
        "ohlc": {"open": 100.0, "high": 120.0, "low": 95.0, "close": 98.0},
        "change": 14.795918367346939,
        "last_trade_time": STAMP_IST,
        "oi": 2_000_000,
        "oi_day_high": 2_100_000,
        "oi_day_low": 1_900_000,
        "exchange_timestamp": STAMP_IST,
        "depth": {
            side: [
                {
                    "quantity": 75 * (i + 1),
                    "price": 112.5 + (i if side == "sell" else -i) * 0.05,
                    "orders": i + 1,
                }
                for i in range(DEPTH_LEVELS)
            ]
            for side in DEPTH_SIDES
        },
    }


def test_a_tick_encodes_to_the_packet_it_was_parsed_from() -> None:
    # Given a full tick, When encoded and parsed again, Then it is the same tick
    tick = full_tick()
    (back,) = parse_ticks(encode_frame([tick]))
    assert back == tick


@pytest.mark.parametrize(
    ("mode", "drop", "kind"),
    [
        ("ltp", (), PacketKind.LTP),
        ("quote", (), PacketKind.QUOTE),
        ("quote", ("last_traded_quantity",), PacketKind.INDEX_QUOTE),
        ("full", (), PacketKind.FULL),
        ("full", ("depth",), PacketKind.INDEX_FULL),
    ],
)
def test_packet_type_follows_mode_and_keys(
    mode: str, drop: tuple[str, ...], kind: PacketKind
) -> None:
    # Given a tick of a mode, with or without the tradable instruments' keys
    tick = {k: v for k, v in full_tick().items() if k not in drop} | {"mode": mode}
    # When encoded, Then the packet has that type's length
    assert len(encode_packet(tick)) == kind.length


def test_prices_round_to_the_wire_unit() -> None:
    # Given a price finer than the segment's paise, When encoded, Then it rounds
    tick = {"mode": "ltp", "instrument_token": 1 << 8 | Segment.NSE, "last_price": 100.004}
    assert struct.unpack(">Ii", encode_packet(tick))[1] == 10_000


def test_epoch_seconds_are_accepted_for_timestamps() -> None:
    tick = full_tick() | {"exchange_timestamp": int(STAMP_IST.timestamp())}
    assert parse_ticks(encode_frame([tick]))[0]["exchange_timestamp"] == STAMP_IST


def _with(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    tick = copy.deepcopy(full_tick())
    node: Any = tick
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tick


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("mode",), "snap", "tick mode 'snap'"),
        (("instrument_token",), _DELETE, "tick has no instrument_token"),
        (("ohlc", "close"), _DELETE, "tick has no ohlc.close"),
        (("depth", "sell", 4), _DELETE, "depth.sell is not a list of 5 levels"),
        (("depth", "sell"), 5, "depth.sell is not a list of 5 levels"),
        (("depth", "buy", 2, "orders"), _DELETE, "tick has no depth.buy.2.orders"),
        (("depth", "buy", 0, "orders"), 70_000, "depth.buy.0.orders = 70000 is outside"),
        (("volume_traded",), -1, "volume_traded = -1 is outside"),
        (("volume_traded",), 1.5, "volume_traded = 1.5 is not an integer"),
        (("oi",), True, "oi is a bool"),
        (("last_price",), float("nan"), "last_price = nan is not finite"),
        (("last_price",), "112.5x", "is not a number"),
        (("last_price",), 10**400, "is not a number"),
        (("last_price",), 30_000_000.0, "outside the wire range"),
        (("exchange_timestamp",), datetime(2026, 1, 1), "naive datetime"),
        (("last_trade_time",), datetime(1960, 1, 1, tzinfo=IST), "outside the wire range"),
    ],
)
def test_values_the_wire_cannot_carry_are_refused(
    path: tuple[str | int, ...], value: object, message: str
) -> None:
    # Given a tick with one value missing, mistyped or out of range
    tick = _with(path, value)
    # When encoded, Then EncodeError names where and why
    with pytest.raises(EncodeError, match=message):
        encode_packet(tick)


def test_index_net_change_saturates_rather_than_refusing_a_valid_tick() -> None:
    # Given an index tick whose last minus close overflows int32 in wire units
    tick = {
        "mode": "quote",
        "instrument_token": 256265,
        "last_price": 21_474_836.47,
        "ohlc": {"high": 0.0, "low": 0.0, "open": 0.0, "close": -21_474_836.48},
    }
    # When encoded, Then the derived net change is clamped and the tick survives
    packet = encode_packet(tick)
    assert struct.unpack(">Iiiiiii", packet)[6] == 2**31 - 1
    assert parse_ticks(pack_frame([packet]))[0]["last_price"] == tick["last_price"]


def test_frame_limits_are_enforced() -> None:
    # Given more packets than a count can hold, or a packet longer than a prefix can say
    with pytest.raises(EncodeError, match="65536 packets"):
        pack_frame([b""] * 65_536)
    with pytest.raises(EncodeError, match="65536 bytes"):
        pack_frame([bytes(65_536)])
    with pytest.raises(EncodeError, match="65536 packets"):
        join_frames([pack_frame([b""] * 65_535), pack_frame([b""])])


def test_join_frames_drops_heartbeats_and_adds_counts() -> None:
    one = pack_frame([b"\x01"])
    assert join_frames([HEARTBEAT, one, one]) == pack_frame([b"\x01", b"\x01"])


def test_layouts_put_fields_where_kite_documents_them() -> None:
    # Given the one layout definition
    full = PacketKind.FULL.layout
    # Then the offsets are Kite's
    assert full.offsets["last_trade_time"] == 44
    assert full.offsets["exchange_timestamp"] == 60
    assert full.offsets["depth"] == 64
    assert PacketKind.INDEX_FULL.layout.offsets["exchange_timestamp"] == 28
    assert PacketKind.QUOTE.layout.offsets["close"] == 40
    # And the struct format and numpy dtype derived from it agree on size and values
    for kind in PacketKind:
        assert struct.calcsize(kind.layout.struct_format) == kind.length
        assert kind.layout.numpy_dtype().itemsize == kind.length
        unpacked = struct.unpack(kind.layout.struct_format, bytes(kind.length))
        assert len(unpacked) == kind.layout.value_count


def test_only_prices_are_signed_and_scaled() -> None:
    for kind in PacketKind:
        for field in kind.layout.fields:
            signed = field.role.wire_range[0] < 0
            assert signed == field.role.scaled == (field.role is Role.PRICE), field


def test_packet_kinds_show_their_length() -> None:
    assert repr(PacketKind.FULL) == "<PacketKind.FULL: 184 bytes>"
    assert PacketKind.QUOTE.mode == "quote"
