"""The binary COPY encoder, read back by an independent parser of the format."""

from __future__ import annotations

import random
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from lambdas.persist.pgcopy import (
    HEADER,
    TRAILER,
    BinaryCopyEncoder,
    CopyColumn,
    Kind,
    encode_numeric,
    timestamp_us,
)

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def decode_numeric(body: bytes) -> int:
    ndigits, weight, sign, dscale = struct.unpack(">hhHh", body[:8])
    assert dscale == 0
    digits = struct.unpack(f">{ndigits}H", body[8:])
    value = sum(d * 10_000 ** (weight - i) for i, d in enumerate(digits))
    return -value if sign == 0x4000 else value


def decode_field(kind: Kind, body: bytes) -> Any:
    if kind is Kind.INT8:
        return struct.unpack(">q", body)[0]
    if kind is Kind.INT4:
        return struct.unpack(">i", body)[0]
    if kind is Kind.FLOAT8:
        return struct.unpack(">d", body)[0]
    if kind is Kind.TIMESTAMPTZ:
        return PG_EPOCH + timedelta(microseconds=struct.unpack(">q", body)[0])
    if kind is Kind.DATE:
        return date(2000, 1, 1) + timedelta(days=struct.unpack(">i", body)[0])
    if kind is Kind.TEXT:
        return body.decode()
    return decode_numeric(body)


def parse(payload: bytes, columns: list[CopyColumn]) -> list[dict[str, Any]]:
    """Rows as {column: value} from a whole COPY stream (header to trailer)."""
    assert payload.startswith(HEADER)
    assert payload.endswith(TRAILER)
    at, rows = len(HEADER), []
    while payload[at : at + 2] != TRAILER:
        (count,) = struct.unpack(">h", payload[at : at + 2])
        assert count == len(columns)
        at += 2
        row = {}
        for column in columns:
            (length,) = struct.unpack(">i", payload[at : at + 4])
            at += 4
            if length == -1:
                row[column.name] = None
                continue
            row[column.name] = decode_field(column.kind, payload[at : at + length])
            at += length
        rows.append(row)
    assert at + 2 == len(payload)
    return rows


COLUMNS = [
    CopyColumn("ts", Kind.TIMESTAMPTZ),
    CopyColumn("symbol", Kind.TEXT),
    CopyColumn("qty", Kind.INT8),
    CopyColumn("price", Kind.FLOAT8),
    CopyColumn("expiry", Kind.DATE),
    CopyColumn("blob", Kind.TEXT, repeats=False),
    CopyColumn("seq", Kind.NUMERIC),
    CopyColumn("sub", Kind.INT4),
]


def random_row(rng: random.Random) -> tuple[Any, ...]:
    ist = timezone(timedelta(hours=5, minutes=30))
    instant = UNIX_EPOCH + timedelta(
        microseconds=rng.randrange(1_700_000_000 * 10**6, 4_260_000_000 * 10**6)
    )
    maybe = lambda value: None if rng.random() < 0.3 else value  # noqa: E731
    return (
        instant.astimezone(ist),
        maybe(rng.choice(["NIFTY", "BANKNIFTY", "ŞİŞE"])),
        maybe(rng.randrange(-(2**63), 2**63)),
        maybe(rng.uniform(-1e6, 1e6)),
        maybe(date(2026, 1, 1) + timedelta(days=rng.randrange(400))),
        maybe("x" * rng.randrange(0, 600)),
        rng.randrange(10**55, 10**56),
        rng.randrange(0, 2**31),
    )


def test_rows_with_nulls_anywhere_read_back_exactly_in_copy_column_order() -> None:
    # Given rows with NULLs scattered through fixed- and variable-width columns
    rng = random.Random(3)
    rows = [random_row(rng) for _ in range(2_500)]
    encoder = BinaryCopyEncoder(COLUMNS)
    # When they are encoded in chunks smaller than the batch
    payload = b"".join(encoder.encode(rows, chunk_rows=700))
    # Then an independent parser reads every value back, fixed-width columns first
    by_name = {c.name: c for c in COLUMNS}
    parsed = parse(payload, [by_name[name] for name in encoder.copy_columns])
    assert encoder.copy_columns[:5] == ("ts", "qty", "price", "expiry", "sub")
    expected = [dict(zip([c.name for c in COLUMNS], row, strict=True)) for row in rows]
    assert parsed == expected


def test_an_empty_batch_is_a_header_and_a_trailer() -> None:
    assert BinaryCopyEncoder(COLUMNS).payload([]) == HEADER + TRAILER


@pytest.mark.parametrize(
    "value",
    [
        0,
        1,
        9_999,
        10_000,
        10**8,
        -42,
        49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898,
    ],
)
def test_numeric_encoding_round_trips(value: int) -> None:
    encoded = encode_numeric(value)
    (length,) = struct.unpack(">i", encoded[:4])
    assert length == len(encoded) - 4
    assert decode_numeric(encoded[4:]) == value


def test_numeric_drops_trailing_zero_groups_as_postgres_stores_them() -> None:
    # 10**8 is the single base-10000 digit 1 at weight 2
    assert encode_numeric(10**8)[4:] == struct.pack(">hhHhH", 1, 2, 0, 0, 1)


def test_timestamps_convert_to_exact_microseconds_across_the_range() -> None:
    # Given instants anywhere from 1970 to 2105, in assorted UTC offsets
    rng = random.Random(9)
    offsets = [timezone(timedelta(minutes=m)) for m in (-300, 0, 330, 345)]
    exact = [rng.randrange(0, 4_260_000_000 * 10**6) for _ in range(20_000)]
    instants = [
        (UNIX_EPOCH + timedelta(microseconds=us)).astimezone(rng.choice(offsets)) for us in exact
    ]
    # When converted column-wise
    converted, nulls = timestamp_us(instants)
    # Then every one is its exact µs count (no float rounding slips through)
    assert converted.tolist() == exact
    assert not nulls.any()


def test_rows_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match="fields"):
        BinaryCopyEncoder(COLUMNS[:2]).encode_rows([(datetime.now(UTC), "A", 1)])


def test_an_int4_out_of_range_raises_instead_of_wrapping() -> None:
    encoder = BinaryCopyEncoder([CopyColumn("sub", Kind.INT4)])
    with pytest.raises(OverflowError):
        encoder.encode_rows([(2**31,)])


def test_retained_columns_come_back_as_arrays_over_every_chunk() -> None:
    # Given an encoder asked to keep two fixed-width columns
    rng = random.Random(5)
    rows = [random_row(rng) for _ in range(1_234)]
    encoder = BinaryCopyEncoder(COLUMNS, retain=("ts", "qty"))
    # When a batch is encoded in several chunks
    b"".join(encoder.encode(rows, chunk_rows=500))
    # Then the kept columns span all rows, instants as Unix µs, NULLs masked
    instants, instant_nulls = encoder.retained("ts")
    quantities, qty_nulls = encoder.retained("qty")
    assert instants.tolist() == [(row[0] - UNIX_EPOCH) // timedelta(microseconds=1) for row in rows]
    assert not instant_nulls.any()
    assert qty_nulls.tolist() == [row[2] is None for row in rows]
    assert [
        q for q, null in zip(quantities.tolist(), qty_nulls.tolist(), strict=True) if not null
    ] == [row[2] for row in rows if row[2] is not None]


def test_only_fixed_width_columns_can_be_retained() -> None:
    with pytest.raises(ValueError, match="symbol"):
        BinaryCopyEncoder(COLUMNS, retain=("symbol",))
