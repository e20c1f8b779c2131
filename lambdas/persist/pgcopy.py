"""PostgreSQL binary COPY payloads from row tuples, encoded column by column (numpy).

asyncpg's ``copy_records_to_table`` encodes each field of each row through a
codec call; for a 25-column tick row that was about 6.5 µs of client CPU, the
persist path's bottleneck once the server work was cut down. Here the
fixed-width columns of a chunk of rows are converted to big-endian numpy
arrays, laid out as one packed record per row (field count, then length and
value per field), and NULL fields are squeezed out with one boolean mask; the
variable-width columns (text, numeric) are encoded once per distinct value.
Fixed-width columns are sent first, whatever their table order: COPY takes
an explicit column list (:attr:`BinaryCopyEncoder.copy_columns`).

Format: https://www.postgresql.org/docs/current/sql-copy.html (binary format).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import chain
from typing import Any

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL_FIELD = struct.pack(">i", -1)
PG_EPOCH_UNIX_US = 946_684_800_000_000  # 2000-01-01T00:00Z, PostgreSQL's epoch
PG_EPOCH_ORDINAL = date(2000, 1, 1).toordinal()
NUMERIC_BASE = 10_000
NUMERIC_NEG = 0x4000
# Small enough that the server starts while the rest is encoded; measured fastest to encode.
DEFAULT_CHUNK_ROWS = 500


class Kind(enum.Enum):
    """PostgreSQL types this encoder writes (binary send format)."""

    INT8 = "int8"
    INT4 = "int4"
    FLOAT8 = "float8"
    TIMESTAMPTZ = "timestamptz"
    DATE = "date"
    TEXT = "text"
    NUMERIC = "numeric"


INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1
"""The ranges of PostgreSQL's integer and bigint (what the decoder bounds values to)."""

FIXED_DTYPE = {
    Kind.INT8: ">i8",
    Kind.INT4: ">i4",
    Kind.FLOAT8: ">f8",
    Kind.TIMESTAMPTZ: ">i8",
    Kind.DATE: ">i4",
}


@dataclass(frozen=True)
class CopyColumn:
    """A column of the target table and its type."""

    name: str
    kind: Kind
    repeats: bool = True
    """Variable-width values recur within a batch (symbols, shard ids), so encode each once."""


def timestamp_us(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Aware datetimes as int64 µs since the Unix epoch, and a NULL mask.

    ``datetime.timestamp()`` is the exact µs count divided by 10**6, correctly
    rounded; scaling it back and rounding is exact while the rounding errors
    stay under half a µs, which holds for every instant before 2106.
    """
    nulls = _null_mask(values)
    if nulls is None:
        seconds = np.fromiter((v.timestamp() for v in values), np.float64, len(values))
    else:
        seconds = np.fromiter(
            (0.0 if v is None else v.timestamp() for v in values), np.float64, len(values)
        )
    return np.rint(seconds * 1e6).astype(np.int64), _mask_or_empty(nulls, len(values))


def numbers(values: Sequence[Any], dtype: type[np.generic]) -> tuple[np.ndarray, np.ndarray]:
    """Ints or floats (None for NULL) as a numpy array of ``dtype``, and a NULL mask."""
    nulls = _null_mask(values)
    if nulls is None:
        return np.array(values, dtype=dtype), np.zeros(len(values), bool)
    return np.array([0 if v is None else v for v in values], dtype=dtype), nulls


def _null_mask(values: Sequence[Any]) -> np.ndarray | None:
    if None not in values:
        return None
    return np.fromiter((v is None for v in values), bool, len(values))


def _mask_or_empty(nulls: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, bool) if nulls is None else nulls


def encode_numeric(value: int) -> bytes:
    """An integer as a length-prefixed binary ``numeric`` field."""
    sign = NUMERIC_NEG if value < 0 else 0
    value = abs(value)
    groups = []
    while value:
        value, group = divmod(value, NUMERIC_BASE)
        groups.append(group)
    weight = len(groups) - 1
    groups.reverse()
    while groups and groups[-1] == 0:  # trailing zero groups are implied by the weight
        groups.pop()
    if not groups:
        sign = weight = 0
    body = struct.pack(f">hhHh{len(groups)}H", len(groups), weight, sign, 0, *groups)
    return struct.pack(">i", len(body)) + body


def encode_text(value: str) -> bytes:
    """A string as a length-prefixed binary ``text`` field."""
    data = value.encode()
    return struct.pack(">i", len(data)) + data


class _FieldCache(dict[Any, bytes]):
    """Encoded fields by value: symbols, shard ids and sequence numbers repeat in a batch."""

    def __init__(self, kind: Kind) -> None:
        super().__init__()
        self._encode = encode_text if kind is Kind.TEXT else encode_numeric
        self[None] = NULL_FIELD

    def __missing__(self, value: Any) -> bytes:
        encoded = self[value] = self._encode(value)
        return encoded


class BinaryCopyEncoder:
    """Encodes row tuples (in ``columns`` order) as a binary COPY stream.

    Values must already be valid for their column (the caller's decoder
    bounds integers to the column's range); an out-of-range integer raises
    OverflowError here rather than being written wrongly.
    """

    def __init__(
        self,
        columns: Sequence[CopyColumn],
        cache_limit: int = 100_000,
        retain: Iterable[str] = (),
    ) -> None:
        """``retain`` names fixed-width columns whose arrays :meth:`retained` gives back
        after encoding, for callers that need them too (the minute bars)."""
        self.columns = tuple(columns)
        self._fixed = [(i, c) for i, c in enumerate(self.columns) if c.kind in FIXED_DTYPE]
        self._variable = [(i, c) for i, c in enumerate(self.columns) if c.kind not in FIXED_DTYPE]
        self.copy_columns = tuple(c.name for _, c in self._fixed + self._variable)
        fields: list[tuple[str, str]] = [("count", ">i2")]
        for n, (_, column) in enumerate(self._fixed):
            fields += [(f"len{n}", ">i4"), (f"val{n}", FIXED_DTYPE[column.kind])]
        self._record = np.dtype(fields)
        fields_at: Mapping[str, Any] = self._record.fields or {}
        self._value_offsets = [fields_at[f"val{n}"][1] for n in range(len(self._fixed))]
        self._cache_limit = cache_limit
        self._caches = {i: _FieldCache(c.kind) for i, c in self._variable if c.repeats}
        self._widths = [np.dtype(FIXED_DTYPE[c.kind]).itemsize for _, c in self._fixed]
        fixed_names = {c.name for _, c in self._fixed}
        if not set(retain) <= fixed_names:
            raise ValueError(
                f"only fixed-width columns can be retained: {set(retain) - fixed_names}"
            )
        self._retained: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in retain}

    def retained(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Values (instants as Unix µs) and NULL mask of a retained column, all rows so far."""
        parts = self._retained[name]
        if not parts:
            return np.empty(0, FIXED_DTYPE[self._kind_of(name)]), np.empty(0, bool)
        return np.concatenate([v for v, _ in parts]), np.concatenate([n for _, n in parts])

    def _kind_of(self, name: str) -> Kind:
        return next(c.kind for c in self.columns if c.name == name)

    def encode(
        self, rows: Sequence[tuple[Any, ...]], chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[bytes]:
        """The COPY stream in chunks of ``chunk_rows`` rows (header first, trailer last).

        Chunks let the server start on the first rows while later ones are encoded.
        """
        yield HEADER
        for start in range(0, len(rows), chunk_rows):
            yield self.encode_rows(rows[start : start + chunk_rows])
        yield TRAILER

    def payload(self, rows: Sequence[tuple[Any, ...]]) -> bytes:
        """The whole COPY stream as one bytes object."""
        return b"".join(self.encode(rows))

    def encode_rows(self, rows: Sequence[tuple[Any, ...]]) -> bytes:
        """The tuple data for ``rows`` (no header or trailer)."""
        if not rows:
            return b""
        by_column = list(zip(*rows, strict=True))
        if len(by_column) != len(self.columns):
            raise ValueError(f"rows have {len(by_column)} fields, expected {len(self.columns)}")
        fixed = self._fixed_part(by_column, len(rows))
        variable = [self._variable_part(i, by_column[i]) for i, _ in self._variable]
        return b"".join(chain.from_iterable(zip(fixed, *variable, strict=True)))

    def _fixed_part(self, by_column: list[tuple[Any, ...]], n: int) -> list[bytes]:
        records = np.empty(n, self._record)
        records["count"] = len(self.columns)
        keep: np.ndarray | None = None
        for slot, (i, column) in enumerate(self._fixed):
            values, nulls = _column_array(by_column[i], column.kind)
            if column.name in self._retained:
                self._retained[column.name].append((values, nulls))
            if column.kind is Kind.TIMESTAMPTZ:
                values = values - PG_EPOCH_UNIX_US
            records[f"val{slot}"] = values  # numpy converts to the big-endian field
            width = self._widths[slot]
            lengths = np.full(n, width, np.int32)
            if nulls.any():
                lengths[nulls] = -1
                if keep is None:
                    keep = np.ones((n, self._record.itemsize), bool)
                offset = self._value_offsets[slot]
                keep[np.flatnonzero(nulls), offset : offset + width] = False
            records[f"len{slot}"] = lengths
        raw = records.view(np.uint8).reshape(n, self._record.itemsize)
        if keep is None:
            flat = raw.tobytes()
            size = self._record.itemsize
            return [flat[k : k + size] for k in range(0, n * size, size)]
        flat = raw[keep].tobytes()
        ends = np.cumsum(keep.sum(axis=1)).tolist()
        return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def _variable_part(self, index: int, values: tuple[Any, ...]) -> list[bytes]:
        cache = self._caches.get(index)
        if cache is None:
            encode = encode_text if self.columns[index].kind is Kind.TEXT else encode_numeric
            return [NULL_FIELD if v is None else encode(v) for v in values]
        if len(cache) > self._cache_limit:
            cache.clear()
            cache[None] = NULL_FIELD
        return [cache[v] for v in values]


def _column_array(values: Sequence[Any], kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    """Native-endian values (instants as Unix µs) and a NULL mask."""
    if kind is Kind.TIMESTAMPTZ:
        return timestamp_us(values)
    if kind is Kind.DATE:
        nulls = _mask_or_empty(_null_mask(values), len(values))
        days = [0 if v is None else v.toordinal() - PG_EPOCH_ORDINAL for v in values]
        return np.array(days, dtype=np.int32), nulls
    dtype = np.float64 if kind is Kind.FLOAT8 else np.int64
    array, nulls = numbers(values, dtype)
    if kind is Kind.INT4 and len(array) and (array.max() > INT4_MAX or array.min() < INT4_MIN):
        raise OverflowError("value out of range for int4")
    return array, nulls
