"""Tick user records: kiteconnect's tick dicts to schema-valid JSON and back."""

from __future__ import annotations

import json
import math
import secrets
import struct
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from kiteconnect import KiteTicker

from ticker_core.records import (
    TICK_SCHEMA,
    RecordDecodeError,
    RecordEncodeError,
    decode_tick,
    encode_tick,
)
from ticker_core.records import ticks as ticks_module
from ticker_core.tz import IST

SCHEMA = json.loads(resources.files("ticker_core.schemas").joinpath("tick.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
RECEIVED_AT = datetime(2026, 11, 27, 3, 45, 3, 123456, tzinfo=UTC)
ENVELOPE: dict[str, Any] = {
    "underlying": "NIFTY",
    "received_at": RECEIVED_AT,
    "exchange": "NFO",
    "tradingsymbol": "NIFTY26D0124000CE",
    "account": "ZX1234",
}

# -- kiteconnect's own parser makes the tick dicts ------------------------------------
# Packets are laid out as Kite sends them; KiteTicker._parse_binary turns them
# into exactly the dicts the official client hands to on_ticks.

u32 = st.integers(0, 2**32 - 1)
prices = st.integers(0, 2**31 - 1)
epoch = st.integers(1_600_000_000, 1_900_000_000)
# Segment is token & 0xff: 9 is indices (not tradable), 2 NFO, 3 CDS (1e7 divisor).
tokens = st.tuples(st.integers(0, 2**24 - 1), st.sampled_from([1, 2, 3, 9])).map(
    lambda t: (t[0] << 8) | t[1]
)


def ltp_packet(token: int, ltp: int) -> bytes:
    return struct.pack(">II", token, ltp)


def index_packet(token: int, ltp: int, hloc: list[int], ts: int | None) -> bytes:
    packet = struct.pack(">IIIIIIi", token, ltp, *hloc, 0)
    return packet if ts is None else packet + struct.pack(">I", ts)


def quote_packet(token: int, ltp: int, q: list[int], ohlc: list[int]) -> bytes:
    return struct.pack(">II" + "I" * 9, token, ltp, *q, *ohlc)


def full_packet(
    token: int, ltp: int, q: list[int], ohlc: list[int], full: list[int], depth: list[int]
) -> bytes:
    levels = b"".join(
        struct.pack(">IIHxx", depth[i], depth[i + 1], depth[i + 2] & 0xFFFF)
        for i in range(0, 30, 3)
    )
    return quote_packet(token, ltp, q, ohlc) + struct.pack(">IIIII", *full) + levels


packets = st.one_of(
    st.builds(ltp_packet, tokens, prices),
    st.builds(
        index_packet, tokens, prices, st.lists(prices, min_size=4, max_size=4), st.none() | epoch
    ),
    st.builds(
        quote_packet,
        tokens,
        prices,
        st.lists(u32, min_size=5, max_size=5).map(lambda q: [q[0], q[1] >> 1, *q[2:]]),
        st.lists(prices, min_size=4, max_size=4),
    ),
    st.builds(
        full_packet,
        tokens,
        prices,
        st.lists(u32, min_size=5, max_size=5).map(lambda q: [q[0], q[1] >> 1, *q[2:]]),
        st.lists(prices, min_size=4, max_size=4),
        st.tuples(epoch, u32, u32, u32, epoch).map(list),
        st.lists(st.integers(0, 2**31 - 1), min_size=30, max_size=30),
    ),
)


def kite_ticks(*packets: bytes) -> list[dict[str, Any]]:
    """Ticks as kiteconnect parses them, datetimes made aware as the feed does."""
    frame = struct.pack(">H", len(packets))
    frame += b"".join(struct.pack(">H", len(p)) + p for p in packets)
    ticker = KiteTicker(secrets.token_hex(8), secrets.token_hex(16))
    ticks: list[dict[str, Any]] = ticker._parse_binary(frame)
    for tick in ticks:  # kiteconnect makes naive local times; the feed's codec makes them aware
        for key in ("last_trade_time", "exchange_timestamp"):
            if isinstance(tick.get(key), datetime):
                tick[key] = tick[key].astimezone()
    return ticks


def expected_record(tick: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    """What decode_tick must return for ``tick`` encoded with ``envelope``."""
    out = {"schema": TICK_SCHEMA, **tick, **envelope}
    out.setdefault("exchange", None)
    out.setdefault("tradingsymbol", None)
    return out


def envelope_tuple(kw: dict[str, Any]) -> Any:
    return (
        kw["underlying"],
        kw["received_at"],
        kw.get("exchange"),
        kw.get("tradingsymbol"),
        kw.get("account"),
    )


def checked(tick: dict[str, Any], **kw: Any) -> bytes:
    """The checked (json-module) path alone, bypassing the fast path."""
    return ticks_module._encode_checked(tick, envelope_tuple(kw)).encode()


def fast(tick: dict[str, Any], **kw: Any) -> bytes:
    """The fast path alone: raises if it would hand the tick to the checked path."""
    return ticks_module._encode_fast(tick, envelope_tuple(kw)).encode()


SAMPLE_FULL = full_packet(
    12345602,
    24535,
    [75, 24312, 1234500, 456000, 389025],
    [23000, 26045, 22130, 23890],
    [1764215102, 4567800, 4600000, 4100000, 1764215103],
    [750 * (i // 3 + 1) if i % 3 == 0 else 24530 - i if i % 3 == 1 else i for i in range(30)],
)


@pytest.mark.parametrize(
    ("packet", "keys"),
    [
        (ltp_packet(256265, 2401050), 4),
        (index_packet(256265, 2401050, [2410000, 2390000, 2395000, 2400000], None), 6),
        (index_packet(256265, 2401050, [2410000, 2390000, 2395000, 2400000], 1764215103), 7),
        (
            quote_packet(
                12345602, 24535, [75, 24312, 1234500, 456000, 389025], [23000, 26045, 22130, 23890]
            ),
            11,
        ),
        (SAMPLE_FULL, 17),
    ],
    ids=["ltp", "index-quote", "index-full", "quote", "full"],
)
def test_each_kite_shape_encodes_to_a_schema_valid_record(packet: bytes, keys: int) -> None:
    # Given a tick of each shape kiteconnect produces
    (tick,) = kite_ticks(packet)
    assert len(tick) == keys
    # When encoded with the feed's envelope
    data = encode_tick(tick, **ENVELOPE)
    # Then it is compact ASCII JSON valid against tick.v1.json
    assert data.isascii()
    assert b" " not in data
    assert list(VALIDATOR.iter_errors(json.loads(data))) == []
    # And decodes to the tick plus its envelope, timestamps as aware datetimes
    assert decode_tick(data) == expected_record(tick, **ENVELOPE)
    # And the fast path took it, writing exactly what the checked path writes
    assert data == fast(tick, **ENVELOPE) == checked(tick, **ENVELOPE)


def test_a_full_tick_is_the_size_the_aggregation_benchmark_assumes() -> None:
    (tick,) = kite_ticks(SAMPLE_FULL)
    assert 900 < len(encode_tick(tick, **ENVELOPE)) < 1200


@settings(max_examples=150, deadline=None)
@given(st.lists(packets, min_size=1, max_size=4), st.booleans())
def test_any_kite_tick_encodes_identically_on_both_paths_and_round_trips(
    frame: list[bytes], with_optional: bool
) -> None:
    # Given ticks parsed by kiteconnect from any packets, with or without optional envelope
    envelope = ENVELOPE if with_optional else {"underlying": "M&M", "received_at": RECEIVED_AT}
    for tick in kite_ticks(*frame):
        # When encoded
        data = encode_tick(tick, **envelope)
        # Then the fast path equals the checked path byte for byte, the
        # record is schema-valid, and it decodes back to what went in
        assert data == fast(tick, **envelope) == checked(tick, **envelope)
        assert list(VALIDATOR.iter_errors(json.loads(data))) == []
        assert decode_tick(data) == expected_record(tick, **envelope)


def test_keys_follow_the_schema_order_whatever_the_input_order() -> None:
    # Given a full tick whose keys and depth levels are in reverse order
    (tick,) = kite_ticks(SAMPLE_FULL)
    reversed_tick = dict(reversed(list(tick.items())))
    reversed_tick["depth"] = {
        side: [dict(reversed(list(level.items()))) for level in levels]
        for side, levels in reversed(list(tick["depth"].items()))
    }
    # When both are encoded, Then the bytes are equal and the keys in schema order
    data = encode_tick(reversed_tick, **ENVELOPE)
    assert data == encode_tick(tick, **ENVELOPE)
    schema_order = list(SCHEMA["properties"])
    keys = list(json.loads(data))
    assert keys == [k for k in schema_order if k in keys]


def test_timestamps_are_rendered_in_ist_and_utc_whatever_zone_they_come_in() -> None:
    # Given the same instants expressed in other zones
    (tick,) = kite_ticks(SAMPLE_FULL)
    moved = {
        **tick,
        "exchange_timestamp": tick["exchange_timestamp"].astimezone(UTC),
        "last_trade_time": tick["last_trade_time"].astimezone(IST),
    }
    received = RECEIVED_AT.astimezone(IST)
    # Then the record is the same: exchange times in IST, received_at in UTC
    data = encode_tick(moved, **{**ENVELOPE, "received_at": received})
    assert data == encode_tick(tick, **ENVELOPE)
    record = json.loads(data)
    assert record["exchange_timestamp"].endswith("+05:30")
    assert record["received_at"] == "2026-11-27T03:45:03.123456+00:00"


def test_null_timestamps_and_zero_change_from_kite_are_kept() -> None:
    # Given kiteconnect's own edge values: int 0 change (close is 0), None times
    (tick,) = kite_ticks(SAMPLE_FULL)
    tick.update(change=0, last_trade_time=None, exchange_timestamp=None)
    data = encode_tick(tick, **ENVELOPE)
    record = json.loads(data)
    assert (record["change"], record["last_trade_time"], record["exchange_timestamp"]) == (
        0,
        None,
        None,
    )
    assert data == fast(tick, **ENVELOPE) == checked(tick, **ENVELOPE)
    assert list(VALIDATOR.iter_errors(record)) == []


def test_numpy_scalars_encode_as_the_python_numbers_they_hold() -> None:
    # Given a quote tick whose numbers are numpy scalars (a vectorised decoder's output)
    (tick,) = kite_ticks(
        quote_packet(
            12345602, 24535, [75, 24312, 1234500, 456000, 389025], [23000, 26045, 22130, 23890]
        )
    )
    as_numpy = {
        k: np.float64(v) if type(v) is float else np.int64(v) if type(v) is int else v
        for k, v in tick.items()
    }
    as_numpy["ohlc"] = {k: np.float64(v) for k, v in tick["ohlc"].items()}
    # Then the record is byte-identical to the one from Python numbers
    assert encode_tick(as_numpy, **ENVELOPE) == encode_tick(tick, **ENVELOPE)


@pytest.mark.parametrize(
    "path",
    [
        ("instrument_token",),
        ("volume_traded",),
        ("oi_day_low",),
        ("average_traded_price",),
        ("change",),
        ("ohlc", "close"),
        ("depth", "buy", 2, "quantity"),
        ("depth", "sell", 4, "orders"),
        ("depth", "sell", 0, "price"),
    ],
)
def test_any_numpy_value_hands_the_tick_to_the_checked_path_with_the_same_result(
    path: tuple[Any, ...],
) -> None:
    # Given a full tick with one number replaced by its numpy equivalent
    tick = full_tick()
    odd = json.loads(json.dumps(tick, default=str))  # a deep copy
    odd.update(
        last_trade_time=tick["last_trade_time"], exchange_timestamp=tick["exchange_timestamp"]
    )
    *parents, leaf = path
    target = odd
    for step in parents:
        target = target[step]
    value = target[leaf]
    target[leaf] = np.float64(value) if isinstance(value, float) else np.int64(value)
    # When encoded, Then the fast path declines and the result is the same record
    with pytest.raises(ticks_module._CheckedPathError):
        fast(odd, **ENVELOPE)
    assert encode_tick(odd, **ENVELOPE) == encode_tick(tick, **ENVELOPE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instrument_token": -1}, "unsigned 32-bit"),
        ({"instrument_token": 2**32}, "unsigned 32-bit"),
        ({"depth": {"buy": [{"price": 1.0, "quantity": 1, "orders": -1}], "sell": []}}, ">= 0"),
    ],
)
def test_values_outside_the_schema_ranges_are_typed_errors(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(RecordEncodeError, match=message):
        encode_tick({**full_tick(), **change}, **ENVELOPE)


def test_an_integer_price_is_written_as_an_integer_whatever_its_type() -> None:
    (tick,) = kite_ticks(ltp_packet(256265, 2401050))
    as_int = encode_tick({**tick, "last_price": 24010}, **ENVELOPE)
    assert b'"last_price":24010,' in as_int
    assert encode_tick({**tick, "last_price": np.int64(24010)}, **ENVELOPE) == as_int


def test_keys_the_schema_does_not_know_are_left_out() -> None:
    (tick,) = kite_ticks(SAMPLE_FULL)
    data = encode_tick({**tick, "segment": "NFO-OPT"}, **ENVELOPE)
    assert data == encode_tick(tick, **ENVELOPE)


def test_fewer_depth_levels_are_allowed() -> None:
    (tick,) = kite_ticks(SAMPLE_FULL)
    tick["depth"] = {"buy": tick["depth"]["buy"][:2], "sell": []}
    record = json.loads(encode_tick(tick, **ENVELOPE))
    assert [len(record["depth"][side]) for side in ("buy", "sell")] == [2, 0]
    assert list(VALIDATOR.iter_errors(record)) == []


def full_tick() -> dict[str, Any]:
    (tick,) = kite_ticks(SAMPLE_FULL)
    return tick


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"last_price": math.nan}, "last_price must be finite"),
        ({"last_price": math.inf}, "last_price must be finite"),
        ({"change": -math.inf}, "change must be finite"),
        ({"change": 10**400}, "change must be finite"),
        ({"ohlc": {"open": 1.0, "high": math.nan, "low": 1.0, "close": 1.0}}, "ohlc.high"),
        ({"ohlc": {"open": 1.0, "high": 1.0, "low": 1.0}}, "ohlc lacks 'close'"),
        ({"ohlc": [1.0, 2.0]}, "ohlc must be a mapping"),
        ({"last_price": None}, "last_price must be a number"),
        ({"last_price": True}, "last_price must be a number"),
        ({"last_price": "245.3"}, "last_price must be a number"),
        ({"volume_traded": 10.0}, "volume_traded must be an integer"),
        ({"oi": True}, "oi must be an integer"),
        ({"tradable": 1}, "tradable must be a bool"),
        ({"mode": "snap"}, "mode must be one of"),
        ({"exchange_timestamp": datetime(2026, 11, 27, 9, 15)}, "naive"),
        ({"last_trade_time": "2026-11-27T09:15:00+05:30"}, "timezone-aware datetime"),
        ({"depth": {"buy": []}}, "depth must be a mapping with buy and sell"),
        (
            {"depth": {"buy": [{"price": 1.0, "quantity": 1, "orders": 1}] * 6, "sell": []}},
            "at most 5",
        ),
        (
            {"depth": {"buy": [{"price": 1.0, "quantity": 1}], "sell": []}},
            r"depth.buy\[0\] lacks 'orders'",
        ),
        ({"depth": {"buy": [(1.0, 1, 1)], "sell": []}}, "must be a mapping"),
        (
            {"depth": {"buy": [{"price": math.nan, "quantity": 1, "orders": 1}], "sell": []}},
            "must be finite",
        ),
    ],
)
def test_values_the_schema_cannot_carry_are_typed_errors(
    change: dict[str, Any], message: str
) -> None:
    # Given a full tick with one bad value
    tick = {**full_tick(), **change}
    # When encoded, Then a RecordEncodeError names the field; no invalid JSON is written
    with pytest.raises(RecordEncodeError, match=message):
        encode_tick(tick, **ENVELOPE)


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ({"underlying": ""}, "underlying must be a non-empty string"),
        ({"underlying": None}, "underlying must be a non-empty string"),
        ({"received_at": datetime(2026, 11, 27, 3, 45)}, "naive"),
        ({"received_at": None}, "received_at must be a timezone-aware datetime"),
        ({"exchange": 7}, "exchange must be a string or None"),
        ({"account": b"ZX1234"}, "account must be a string or None"),
    ],
)
def test_a_bad_envelope_is_a_typed_error(envelope: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordEncodeError, match=message):
        encode_tick(full_tick(), **{**ENVELOPE, **envelope})


@pytest.mark.parametrize("missing", ["instrument_token", "mode", "tradable", "last_price"])
def test_a_tick_without_a_required_field_is_a_typed_error(missing: str) -> None:
    tick = full_tick()
    del tick[missing]
    with pytest.raises(RecordEncodeError, match=missing):
        encode_tick(tick, **ENVELOPE)


def test_a_tick_that_is_not_a_mapping_is_a_typed_error() -> None:
    with pytest.raises(RecordEncodeError, match="tick must be a mapping"):
        encode_tick([("mode", "ltp")], **ENVELOPE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{", "not a JSON user record"),
        (b'{"schema":"tick/1",', "not a JSON user record"),
        (b'{"schema":"tick/1","last_price":NaN}', "NaN is not JSON"),
        (b'{"schema":"tick/1","last_price":-Infinity}', "-Infinity is not JSON"),
        (b"[1,2]", "JSON list, not an object"),
        (b'{"schema":"tick/2"}', "'tick/2' is not 'tick/1'"),
        (b'{"schema":"tick/1"}', "lacks"),
        (b"[" * 100_000, "not a JSON user record"),
    ],
)
def test_bad_records_are_typed_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(RecordDecodeError, match=message):
        decode_tick(data)


@pytest.mark.parametrize(
    ("timestamp", "message"), [("yesterday", "not an ISO 8601"), ("2026-11-27T09:15:00", "offset")]
)
def test_bad_timestamps_are_typed_decode_errors(timestamp: str, message: str) -> None:
    record = json.loads(encode_tick(full_tick(), **ENVELOPE))
    record["exchange_timestamp"] = timestamp
    with pytest.raises(RecordDecodeError, match=message):
        decode_tick(json.dumps(record).encode())


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_a_typed_error(data: bytes) -> None:
    try:
        decode_tick(data)
    except RecordDecodeError:
        return


def test_received_at_keeps_microseconds_and_is_never_shortened() -> None:
    # Given a receive time on a whole second
    whole = datetime(2026, 11, 27, 3, 45, 3, tzinfo=UTC)
    (tick,) = kite_ticks(ltp_packet(256265, 2401050))
    record = json.loads(encode_tick(tick, underlying="NIFTY", received_at=whole))
    # Then its width is fixed, for consumers that sort or slice the string
    assert record["received_at"] == "2026-11-27T03:45:03.000000+00:00"
    assert decode_tick(encode_tick(tick, underlying="NIFTY", received_at=whole))[
        "received_at"
    ] == whole + timedelta(0)


anything = st.one_of(
    st.floats(),  # NaN and infinities included
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.floats().map(np.float64),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.datetimes(),  # naive
    st.lists(st.integers(), max_size=2),
)
finite = st.floats(allow_nan=False, allow_infinity=False)
valid = {
    "price": st.one_of(finite, st.integers(-(10**9), 10**9), finite.map(np.float64)),
    "int": st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1).map(np.uint32)),
    "time": st.none() | st.datetimes(timezones=st.sampled_from([IST, UTC])),
}
KINDS = {
    "last_price": "price",
    "average_traded_price": "price",
    "change": "price",
    "instrument_token": "int",
    "last_traded_quantity": "int",
    "volume_traded": "int",
    "total_buy_quantity": "int",
    "total_sell_quantity": "int",
    "oi": "int",
    "oi_day_high": "int",
    "oi_day_low": "int",
    "last_trade_time": "time",
    "exchange_timestamp": "time",
}
SHAPES = [
    ("tradable", "mode", "instrument_token", "last_price"),
    ("tradable", "mode", "instrument_token", "last_price", "ohlc", "change"),
    ("tradable", "mode", "instrument_token", "last_price", "ohlc", "change", "exchange_timestamp"),
    (*KINDS, "tradable", "mode", "ohlc", "depth"),
]


@st.composite
def odd_ticks(draw: st.DrawFn) -> dict[str, Any]:
    """Kite-shaped ticks of valid values of any numeric type, one of them maybe wild."""
    level = st.fixed_dictionaries(
        {"price": valid["price"], "quantity": valid["int"], "orders": valid["int"]}
    )
    tick: dict[str, Any] = {}
    for key in draw(st.sampled_from(SHAPES)):
        if key == "ohlc":
            tick[key] = {k: draw(valid["price"]) for k in ("open", "high", "low", "close")}
        elif key == "depth":
            tick[key] = {side: draw(st.lists(level, max_size=5)) for side in ("buy", "sell")}
        elif key == "mode":
            tick[key] = draw(st.sampled_from(["ltp", "quote", "full"]))
        elif key == "tradable":
            tick[key] = draw(st.booleans())
        else:
            tick[key] = draw(valid[KINDS[key]])
    if draw(st.booleans()):  # one wild value, at the top or nested
        target = tick
        key = draw(st.sampled_from(sorted(tick)))
        if key in ("ohlc", "depth") and draw(st.booleans()):
            target = tick[key]
            key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(anything)
    return tick


@settings(max_examples=300, deadline=None)
@given(odd_ticks())
def test_any_values_give_a_schema_valid_record_or_a_typed_error(tick: dict[str, Any]) -> None:
    # Given a tick whose values may be wrong in any way
    try:
        data = encode_tick(tick, **ENVELOPE)
    except RecordEncodeError:
        return
    # Then what is written is strict JSON, valid against the schema...
    record = json.loads(data, parse_constant=lambda token: pytest.fail(f"{token} written"))
    assert list(VALIDATOR.iter_errors(record)) == []
    # ...and exactly what the checked path writes
    assert data == checked(tick, **ENVELOPE)
