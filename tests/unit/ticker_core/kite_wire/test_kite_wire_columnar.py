"""decode_frame and encode_columns: the columnar path the feed and the simulator use."""

from __future__ import annotations

import struct
from datetime import datetime

import numpy as np
import pytest

from ticker_core.kite_wire import (
    HEARTBEAT,
    DecodeStats,
    EncodeError,
    PacketKind,
    Segment,
    column_names,
    decode_frame,
    depth_column,
    encode_columns,
    encode_frame,
    join_frames,
    pack_frame,
    parse_ticks,
)
from ticker_core.tz import IST

STAMP = 1_795_754_700  # 2026-11-27 10:15:00 IST
ROWS = 4


def columns_for(kind: PacketKind, segment: int = Segment.NFO) -> dict[str, np.ndarray]:
    """Plausible columns of ROWS instruments of ``kind`` (what encode_columns takes)."""
    rows = np.arange(ROWS)
    columns: dict[str, np.ndarray] = {
        "instrument_token": (1000 + rows) << 8 | segment,
        "last_price": 100.0 + rows,
        "open": 99.0 + rows,
        "high": 101.5 + rows,
        "low": 98.25 + rows,
        "close": 99.5 + rows,
        "last_traded_quantity": 75 * (rows + 1),
        "average_traded_price": 100.05 + rows,
        "volume_traded": 10_000 * (rows + 1),
        "total_buy_quantity": 500 + rows,
        "total_sell_quantity": 600 + rows,
        "last_trade_time": STAMP - rows,
        "oi": 1_000 + rows,
        "oi_day_high": 1_100 + rows,
        "oi_day_low": 900 + rows,
        "exchange_timestamp": np.full(ROWS, STAMP),
        "depth_quantity": np.arange(ROWS * 10).reshape(ROWS, 2, 5),
        "depth_price": 100.0 + np.arange(ROWS * 10).reshape(ROWS, 2, 5) * 0.05,
        "depth_orders": np.arange(ROWS * 10).reshape(ROWS, 2, 5) % 7,
    }
    return {name: columns[name] for name in column_names(kind) if name in columns}


def test_full_batch_has_every_field_as_native_columns() -> None:
    # Given a frame of full-mode packets
    frame = encode_columns(PacketKind.FULL, columns_for(PacketKind.FULL))
    # When decoded to columns
    decoded = decode_frame(frame)
    (batch,) = decoded.batches
    # Then every documented column is there, typed for arithmetic that cannot wrap
    assert set(batch.columns) == set(column_names(PacketKind.FULL))
    assert batch["last_price"].dtype == np.float64
    assert batch["volume_traded"].dtype == np.int64
    assert batch["exchange_timestamp"].dtype == np.int64
    assert batch["tradable"].dtype == np.bool_
    assert batch[depth_column("price")].shape == (ROWS, 2, 5)
    assert batch[depth_column("orders")].dtype == np.int64
    # And the values are the encoded ones
    assert batch["last_price"].tolist() == [100.0, 101.0, 102.0, 103.0]
    assert batch["depth_price"][1, 1, 0] == pytest.approx(100.0 + 15 * 0.05)
    assert batch["exchange_timestamp"].tolist() == [STAMP] * ROWS
    assert batch.positions.tolist() == list(range(ROWS))


def test_columns_do_not_alias_the_frame_buffer() -> None:
    # Given a frame in a buffer the connection will reuse
    buffer = bytearray(encode_columns(PacketKind.QUOTE, columns_for(PacketKind.QUOTE)))
    batch = decode_frame(buffer).batches[0]
    before = batch["last_price"].copy()
    # When the buffer is overwritten
    buffer[2:] = bytes(len(buffer) - 2)
    # Then the decoded columns are unchanged
    assert np.array_equal(batch["last_price"], before)


def test_mixed_frame_gives_one_batch_per_type_in_kind_order() -> None:
    # Given a frame interleaving quote, LTP and index packets, as a mixed connection sends
    ticks = [
        {"mode": "quote", **_quote_tick(1)},
        {"mode": "ltp", "instrument_token": 77 << 8 | Segment.CDS, "last_price": 83.2512345},
        {"mode": "quote", **_index_tick()},
        {"mode": "ltp", "instrument_token": 78 << 8 | Segment.NSE, "last_price": 2500.5},
    ]
    frame = encode_frame(ticks)
    # When decoded to columns
    decoded = decode_frame(frame)
    # Then batches come in PacketKind order, rows know their place in the frame
    assert [b.kind for b in decoded.batches] == [
        PacketKind.LTP,
        PacketKind.INDEX_QUOTE,
        PacketKind.QUOTE,
    ]
    assert decoded.batch(PacketKind.LTP).positions.tolist() == [1, 3]  # type: ignore[union-attr]
    assert decoded.batch(PacketKind.FULL) is None
    # And to_dicts restores wire order and equals parse_ticks
    assert decoded.to_dicts() == parse_ticks(frame)
    # And each segment's divisor was applied per row
    assert decoded.batch(PacketKind.LTP)["last_price"].tolist() == [83.2512345, 2500.5]  # type: ignore[index]


def _quote_tick(i: int) -> dict[str, object]:
    return {
        "instrument_token": i << 8 | Segment.NFO,
        "last_price": 10.0,
        "last_traded_quantity": 1,
        "average_traded_price": 10.0,
        "volume_traded": 1,
        "total_buy_quantity": 1,
        "total_sell_quantity": 1,
        "ohlc": {"open": 9.0, "high": 11.0, "low": 8.0, "close": 9.5},
    }


def _index_tick() -> dict[str, object]:
    return {
        "instrument_token": 256265,
        "last_price": 24_000.0,
        "ohlc": {"high": 24_100.0, "low": 23_900.0, "open": 23_950.0, "close": 23_980.0},
    }


def test_select_keeps_the_rows_that_pass_validation() -> None:
    # Given a decoded batch and a vectorized sanity check on it
    batch = decode_frame(encode_columns(PacketKind.FULL, columns_for(PacketKind.FULL))).batches[0]
    sane = batch["last_price"] >= 101.0
    # When the passing rows are selected
    kept = batch.select(sane)
    # Then every column, depth included, and the positions follow the selection
    assert len(kept) == 3
    assert kept.positions.tolist() == [1, 2, 3]
    assert kept[depth_column("quantity")].shape == (3, 2, 5)
    assert kept.to_dicts() == batch.to_dicts()[1:]
    assert batch.select(slice(0, 1)).to_dicts() == batch.to_dicts()[:1]


def test_to_dicts_gives_plain_python_values() -> None:
    # Given a decoded full-mode batch
    batch = decode_frame(encode_columns(PacketKind.FULL, columns_for(PacketKind.FULL))).batches[0]
    # When converted to dicts
    (first, *_) = batch.to_dicts()
    # Then values are Python's own types (json.dumps refuses numpy scalars)
    assert type(first["instrument_token"]) is int
    assert type(first["oi"]) is int
    assert type(first["last_price"]) is float
    assert type(first["ohlc"]["close"]) is float
    assert type(first["depth"]["sell"][4]["price"]) is float
    assert type(first["depth"]["sell"][4]["orders"]) is int
    assert type(first["tradable"]) is bool
    # And timestamps are aware datetimes in IST
    assert first["exchange_timestamp"] == datetime.fromtimestamp(STAMP, IST)
    assert first["exchange_timestamp"].tzinfo is IST


def test_heartbeat_decodes_to_an_empty_frame() -> None:
    # Given a heartbeat, When decoded, Then there are no batches and it is counted
    stats = DecodeStats()
    decoded = decode_frame(HEARTBEAT, stats=stats)
    assert (decoded.batches, len(decoded), decoded.to_dicts()) == ((), 0, [])
    assert (stats.frames, stats.heartbeats) == (1, 1)


def test_an_empty_data_frame_decodes_to_nothing() -> None:
    decoded = decode_frame(b"\x00\x00")
    assert (decoded.declared, decoded.skipped, len(decoded)) == (0, 0, 0)


@pytest.mark.parametrize("kind", list(PacketKind))
@pytest.mark.parametrize("segment", [Segment.NFO, Segment.CDS, Segment.BCD, Segment.NCO])
def test_every_kind_and_segment_round_trips_through_columns(
    kind: PacketKind, segment: Segment
) -> None:
    # Given columns of one packet type in a segment with its own divisor
    columns = columns_for(kind, segment)
    # When encoded and decoded
    frame = encode_columns(kind, columns)
    batch = decode_frame(frame).batches[0]
    # Then every wire column comes back (prices to the wire's resolution)
    for name, values in columns.items():
        assert np.allclose(batch[name], values, rtol=0, atol=1e-7), name
    # And the frame is what the tick encoder makes of the same ticks
    assert encode_frame(parse_ticks(frame)) == frame


def test_negative_prices_round_trip_through_columns() -> None:
    columns = columns_for(PacketKind.FULL)
    columns["last_price"] = -columns["last_price"]
    columns["depth_price"] = -columns["depth_price"]
    batch = decode_frame(encode_columns(PacketKind.FULL, columns)).batches[0]
    assert batch["last_price"].tolist() == [-100.0, -101.0, -102.0, -103.0]
    assert (batch["depth_price"] < 0).all()
    assert (batch["change"] < 0).all()


def test_index_net_change_is_derived_unless_given() -> None:
    # Given index columns without net change, When encoded
    columns = columns_for(PacketKind.INDEX_QUOTE)
    derived = decode_frame(encode_columns(PacketKind.INDEX_QUOTE, columns)).batches[0]
    # Then the wire carries last minus close, as Kite does
    assert np.allclose(derived["net_change"], columns["last_price"] - columns["close"])
    # And a given net change is sent as it is
    given = {**columns, "net_change": np.full(ROWS, 1.25)}
    assert (
        decode_frame(encode_columns(PacketKind.INDEX_QUOTE, given))
        .batches[0]["net_change"]
        .tolist()
        == [1.25] * ROWS
    )


def test_datetime64_timestamps_are_accepted() -> None:
    columns = columns_for(PacketKind.INDEX_FULL)
    columns["exchange_timestamp"] = np.full(ROWS, STAMP).astype("datetime64[s]")
    batch = decode_frame(encode_columns(PacketKind.INDEX_FULL, columns)).batches[0]
    assert batch["exchange_timestamp"].tolist() == [STAMP] * ROWS


def test_frames_of_several_types_join_into_one() -> None:
    # Given a frame per packet type, as the simulator builds them, and a heartbeat
    ltp = encode_columns(PacketKind.LTP, columns_for(PacketKind.LTP))
    full = encode_columns(PacketKind.FULL, columns_for(PacketKind.FULL))
    # When joined
    joined = join_frames([ltp, HEARTBEAT, full])
    # Then one frame holds all their packets, in order
    assert parse_ticks(joined) == parse_ticks(ltp) + parse_ticks(full)
    assert join_frames([]) == b"\x00\x00"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instrument_token": None}, "no column 'instrument_token'"),
        ({"last_price": None}, "no column 'last_price'"),
        ({"instrument_token": np.zeros((2, 2), dtype=np.int64)}, "not \\(rows,\\)"),
        ({"oi": np.zeros(ROWS + 1, dtype=np.int64)}, "shape \\(5,\\), not \\(4,\\)"),
        ({"depth_price": np.zeros((ROWS, 5))}, "not \\(4, 2, 5\\)"),
        ({"last_price": np.array(["a"] * ROWS)}, "is not numeric"),
        ({"last_price": [[1.0], [1.0, 2.0], [], []]}, "is not an array"),
        ({"oi": np.full(ROWS, 1.5)}, "is not integer"),
        ({"exchange_timestamp": np.full(ROWS, 1.0)}, "is not integer"),
        ({"last_price": np.full(ROWS, np.nan)}, "not finite"),
        ({"last_price": np.full(ROWS, 3e7)}, "outside the wire range"),
        ({"oi": np.full(ROWS, -1)}, "outside the wire range"),
        ({"depth_orders": np.full((ROWS, 2, 5), 70_000)}, "outside the wire range"),
        ({"instrument_token": np.full(ROWS, 2**32)}, "outside the wire range"),
    ],
    ids=lambda v: str(v)[:30] if isinstance(v, str) else None,
)
def test_columns_the_wire_cannot_carry_are_refused(
    change: dict[str, np.ndarray | None], message: str
) -> None:
    # Given full-mode columns with one missing, misshapen, mistyped or out of range
    columns = {**columns_for(PacketKind.FULL), **change}
    columns = {k: v for k, v in columns.items() if v is not None}
    # When encoded, Then EncodeError names the column and the problem
    with pytest.raises(EncodeError, match=message):
        encode_columns(PacketKind.FULL, columns)


def test_too_many_rows_for_one_frame_are_refused() -> None:
    columns = {"instrument_token": np.zeros(70_000, np.int64), "last_price": np.zeros(70_000)}
    with pytest.raises(EncodeError, match="exceed the 65535"):
        encode_columns(PacketKind.LTP, columns)


def test_pack_frame_frames_raw_packets_for_fault_injection() -> None:
    # Given raw packets, one of a length no layout has
    frame = pack_frame([b"\x00" * 5, struct.pack(">Ii", 1 << 8 | Segment.NSE, 100)])
    # When decoded, Then the odd packet is skipped and counted
    decoded = decode_frame(frame)
    assert (decoded.skipped, len(decoded)) == (1, 1)
