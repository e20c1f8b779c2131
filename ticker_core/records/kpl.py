"""KPL aggregated records, byte for byte as the Kinesis Producer Library writes them.

An aggregated record packs many user records into one Kinesis record::

    magic (4 bytes F3 89 9A C2) | protobuf AggregatedRecord | MD5 of the protobuf (16 bytes)

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }

Fields are written in field-number order (tables first), as protobuf
serializers do, so KCL, Firehose and ``aws-kinesis-agg`` read our records and
their digests exactly as they read the KPL's. The Kinesis record carrying an
aggregate takes the partition key and explicit hash key of its first user
record, as in the KPL.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Final

from ticker_core.records import _protobuf as pb
from ticker_core.records.errors import (
    DeaggregationError,
    DigestMismatchError,
    InvalidKeyError,
)
from ticker_core.records.limits import (
    MAX_EXPLICIT_HASH_KEY,
    MAX_PARTITION_KEY_CHARS,
    MAX_RECORD_BYTES,
)

MAGIC: Final = b"\xf3\x89\x9a\xc2"
"""First four bytes of every aggregated record."""

DIGEST_SIZE: Final = 16
"""Length of the MD5 digest that ends every aggregated record."""

FRAMING_BYTES: Final = len(MAGIC) + DIGEST_SIZE
"""Bytes an aggregated record adds around its protobuf body."""

# Field keys, precomputed: (field_number << 3) | wire_type.
_PK_TABLE_KEY: Final = pb.key(1, pb.WIRE_LEN)  # AggregatedRecord.partition_key_table
_EHK_TABLE_KEY: Final = pb.key(2, pb.WIRE_LEN)  # AggregatedRecord.explicit_hash_key_table
_RECORD_KEY: Final = pb.key(3, pb.WIRE_LEN)  # AggregatedRecord.records
_PK_INDEX_KEY: Final = pb.key(1, pb.WIRE_VARINT)  # Record.partition_key_index
_EHK_INDEX_KEY: Final = pb.key(2, pb.WIRE_VARINT)  # Record.explicit_hash_key_index
_DATA_KEY: Final = pb.key(3, pb.WIRE_LEN)  # Record.data


def _record_header(pk_index: int, ehk_index: int | None, data_size: int) -> bytes:
    """Everything of one ``records`` entry before its data bytes."""
    index_fields = _PK_INDEX_KEY + pb.varint(pk_index)
    if ehk_index is not None:
        index_fields += _EHK_INDEX_KEY + pb.varint(ehk_index)
    data_prefix = _DATA_KEY + pb.varint(data_size)
    body_size = len(index_fields) + len(data_prefix) + data_size
    return b"".join((_RECORD_KEY, pb.varint(body_size), index_fields, data_prefix))


_HOT_LIMIT: Final = 4096
# Headers of records that use partition key 0 and no explicit hash key, by
# data size: every record of a single-key aggregate, and ticks are well under
# 4 KiB. About 200 KB, built once.
_PK0_HEADERS: Final = tuple(_record_header(0, None, n) for n in range(_HOT_LIMIT))
#: What a record of n bytes adds to such an aggregate: its header and its data.
_PK0_GROWTH: Final = tuple(len(h) + n for n, h in enumerate(_PK0_HEADERS))


def _md5(body: bytes) -> bytes:
    # MD5 is the format's integrity check, not a security control.
    return hashlib.md5(body, usedforsecurity=False).digest()


def validate_partition_key(partition_key: str) -> bytes:
    """``partition_key`` as UTF-8, or :class:`InvalidKeyError` if Kinesis would reject it."""
    if not 0 < len(partition_key) <= MAX_PARTITION_KEY_CHARS:
        raise InvalidKeyError(
            f"partition key must be 1 to {MAX_PARTITION_KEY_CHARS} characters, "
            f"got {len(partition_key)}"
        )
    try:
        return partition_key.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise InvalidKeyError("partition key is not valid Unicode") from exc


def validate_explicit_hash_key(explicit_hash_key: str) -> bytes:
    """Return the key as ASCII, or raise :class:`InvalidKeyError` unless it is a 128-bit decimal."""
    if not (
        explicit_hash_key.isascii()
        and explicit_hash_key.isdigit()
        and len(explicit_hash_key) <= 39  # digits in 2**128 - 1
        and int(explicit_hash_key) <= MAX_EXPLICIT_HASH_KEY
    ):
        raise InvalidKeyError(
            f"explicit hash key must be a decimal integer in [0, 2**128), got {explicit_hash_key!r}"
        )
    return explicit_hash_key.encode("ascii")


def _table_entry(field_key: bytes, value: bytes) -> bytes:
    return b"".join((field_key, pb.varint(len(value)), value))


class Aggregator:
    """Builds one aggregated record incrementally, knowing its exact size at every step.

    Sizes are Kinesis record sizes: the aggregated data blob plus the UTF-8
    partition key Kinesis will carry it under (the first user record's), which
    is what Kinesis counts against its 1 MiB limit. :meth:`size_with` tells the
    size a user record would bring the record to before it is added, and
    :meth:`try_add` adds it only if the result stays within ``max_bytes``.
    Single use: call :meth:`build` once it is full, then start a new one.
    """

    __slots__ = (
        "_ehk_index",
        "_ehk_table",
        "_first_data",
        "_first_ehk",
        "_first_pk",
        "_first_pk_bytes",
        "_max_bytes",
        "_payload_bytes",
        "_pb_size",
        "_pk_index",
        "_pk_table",
        "_records",
    )

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        """An empty aggregate that will not grow beyond ``max_bytes`` (at most 1 MiB)."""
        if not 0 < max_bytes <= MAX_RECORD_BYTES:
            raise ValueError(f"max_bytes must be in (0, {MAX_RECORD_BYTES}], got {max_bytes}")
        self._max_bytes = max_bytes
        self._pk_index: dict[str, int] = {}
        self._pk_table: list[bytes] = []
        self._ehk_index: dict[str, int] = {}
        self._ehk_table: list[bytes] = []
        # Alternating record header (key, length, index fields, data key and
        # length) and data, joined once by build(): no copy per add.
        self._records: list[bytes] = []
        self._pb_size = 0
        self._payload_bytes = 0
        self._first_pk: str | None = None
        self._first_pk_bytes = 0
        self._first_ehk: str | None = None
        self._first_data = b""

    def __len__(self) -> int:
        """Number of user records added."""
        return len(self._records) // 2

    @property
    def max_bytes(self) -> int:
        """The Kinesis record size this aggregate stays within."""
        return self._max_bytes

    @property
    def partition_key(self) -> str | None:
        """Partition key of the Kinesis record (the first user record's); None while empty."""
        return self._first_pk

    @property
    def explicit_hash_key(self) -> str | None:
        """Explicit hash key of the Kinesis record (the first user record's), if it had one."""
        return self._first_ehk

    @property
    def size(self) -> int:
        """Kinesis record size now: magic + protobuf + digest + partition key."""
        return FRAMING_BYTES + self._pb_size + self._first_pk_bytes

    @property
    def payload_bytes(self) -> int:
        """Sum of the user records' data sizes."""
        return self._payload_bytes

    def size_with(
        self, partition_key: str, data: bytes, explicit_hash_key: str | None = None
    ) -> int:
        """Kinesis record size after adding this user record (nothing is added).

        Raises :class:`InvalidKeyError` for a key Kinesis would reject.
        """
        return self._plan(partition_key, data, explicit_hash_key)[0]

    def try_add(
        self, partition_key: str, data: bytes, explicit_hash_key: str | None = None
    ) -> bool:
        """Add the user record if the result stays within ``max_bytes``; report whether it did.

        False leaves the aggregate unchanged: it is full for this record. On an
        empty aggregate, False means the record cannot fit one of this size at all.
        Raises :class:`InvalidKeyError` for a key Kinesis would reject.
        """
        if type(data) is not bytes:
            # Checked here, not at build(): a str or a mutable buffer inside the
            # aggregate would only fail, or change, long after this call.
            raise TypeError(f"user record data must be bytes, got {type(data).__name__}")
        n = len(data)
        if explicit_hash_key is None and self._pk_index.get(partition_key) == 0 and n < _HOT_LIMIT:
            # Hot path (every record after the first in a single-key aggregate,
            # as the batcher builds them): the header is precomputed and the
            # size arithmetic is one addition.
            header = _PK0_HEADERS[n]
            growth = len(header) + n
            if FRAMING_BYTES + self._pb_size + growth + self._first_pk_bytes > self._max_bytes:
                return False
            self._records.append(header)
            self._records.append(data)
            self._pb_size += growth
            self._payload_bytes += n
            return True
        size, pk_entry, ehk_entry, header = self._plan(partition_key, data, explicit_hash_key)
        if size > self._max_bytes:
            return False
        if pk_entry:
            self._pk_index[partition_key] = len(self._pk_table)
            self._pk_table.append(pk_entry)
        if ehk_entry and explicit_hash_key is not None:
            self._ehk_index[explicit_hash_key] = len(self._ehk_table)
            self._ehk_table.append(ehk_entry)
        if self._first_pk is None:
            self._first_pk = partition_key
            self._first_pk_bytes = len(partition_key.encode("utf-8"))
            self._first_ehk = explicit_hash_key
            self._first_data = data
        self._records.append(header)
        self._records.append(data)
        self._pb_size += len(pk_entry) + len(ehk_entry) + len(header) + len(data)
        self._payload_bytes += len(data)
        return True

    def extend(self, partition_key: str, datas: Sequence[bytes], start: int = 0) -> tuple[int, int]:
        """Add ``datas[start:]`` while they fit; returns (records added, their bytes).

        The bulk form of :meth:`try_add` for an aggregate whose first key is
        ``partition_key`` (what the batcher builds): it stops at the first
        record that does not fit, or that needs the general path (another key
        first, a record of 4 KiB or more), and adds nothing when the aggregate
        is empty, so the caller continues with :meth:`try_add`.
        """
        if self._pk_index.get(partition_key) != 0:
            return 0, 0
        chunk = datas[start:] if start else datas
        if not chunk:
            return 0, 0
        # Every step below is one C-level pass over the chunk (this is the feed's
        # hot path: one call per key and frame, tens to hundreds of records each).
        if set(map(type, chunk)) != {bytes}:
            bad = next(d for d in chunk if type(d) is not bytes)
            raise TypeError(f"user record data must be bytes, got {type(bad).__name__}")
        lengths = list(map(len, chunk))
        room = self._max_bytes - FRAMING_BYTES - self._first_pk_bytes - self._pb_size
        if max(lengths) < _HOT_LIMIT:
            growth = sum(map(_PK0_GROWTH.__getitem__, lengths))
            if growth <= room:  # the common case: all of them fit, no prefix sums needed
                headers = map(_PK0_HEADERS.__getitem__, lengths)
                self._records.extend(chain.from_iterable(zip(headers, chunk, strict=True)))
                payload = sum(lengths)
                self._pb_size += growth
                self._payload_bytes += payload
                return len(lengths), payload
        else:  # the general path takes the first large record and what follows
            lengths = lengths[: next(i for i, n in enumerate(lengths) if n >= _HOT_LIMIT)]
        grown = list(accumulate(map(_PK0_GROWTH.__getitem__, lengths)))
        added = bisect_right(grown, room)
        if not added:
            return 0, 0
        lengths = lengths[:added]
        headers = map(_PK0_HEADERS.__getitem__, lengths)
        self._records.extend(chain.from_iterable(zip(headers, chunk[:added], strict=True)))
        payload = sum(lengths)
        self._pb_size += grown[added - 1]
        self._payload_bytes += payload
        return added, payload

    def _plan(
        self, partition_key: str, data: bytes, explicit_hash_key: str | None
    ) -> tuple[int, bytes, bytes, bytes]:
        """(Kinesis size after adding, new pk table entry, new ehk table entry, record header).

        A table entry is empty when its key is already in the table.
        """
        pk_entry = ehk_entry = b""
        pk_index = self._pk_index.get(partition_key)
        if pk_index is None:
            pk_entry = _table_entry(_PK_TABLE_KEY, validate_partition_key(partition_key))
            pk_index = len(self._pk_table)
        ehk_index = None
        if explicit_hash_key is not None:
            ehk_index = self._ehk_index.get(explicit_hash_key)
            if ehk_index is None:
                ehk_bytes = validate_explicit_hash_key(explicit_hash_key)
                ehk_entry = _table_entry(_EHK_TABLE_KEY, ehk_bytes)
                ehk_index = len(self._ehk_table)
        n = len(data)
        header = _record_header(pk_index, ehk_index, n)
        if self._first_pk is None:  # this record's key becomes the Kinesis record's
            kinesis_pk_bytes = len(partition_key.encode("utf-8"))
        else:
            kinesis_pk_bytes = self._first_pk_bytes
        growth = len(pk_entry) + len(ehk_entry) + len(header) + n
        size = FRAMING_BYTES + self._pb_size + growth + kinesis_pk_bytes
        return size, pk_entry, ehk_entry, header

    def build(self, *, unwrap_single: bool = False) -> bytes:
        """The aggregated record's data blob: magic, protobuf, MD5 digest.

        With ``unwrap_single``, an aggregate of exactly one user record returns
        that record's data as it is, as the KPL does (de-aggregators pass a
        non-aggregated record through unchanged, and it saves the framing),
        unless the data itself starts with the magic bytes and would be misread
        as an aggregate.
        """
        if unwrap_single and len(self._records) == 2 and not self._first_data.startswith(MAGIC):
            return self._first_data
        body = b"".join((*self._pk_table, *self._ehk_table, *self._records))
        return b"".join((MAGIC, body, _md5(body)))


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user record out of a Kinesis record."""

    partition_key: str
    data: bytes
    explicit_hash_key: str | None = None


def is_aggregated(data: bytes) -> bool:
    """Whether ``data`` claims to be an aggregated record (starts with the magic bytes)."""
    return data.startswith(MAGIC)


def deaggregate(data: bytes, partition_key: str = "") -> list[UserRecord]:
    """The user records in one Kinesis record's data, in the order they were aggregated.

    Data that does not start with the magic bytes is not aggregated and comes
    back as one user record under ``partition_key`` (pass the Kinesis record's
    own partition key). Data that does start with them must be a well-formed
    aggregate: a wrong digest raises :class:`DigestMismatchError`; a truncated
    or malformed body raises :class:`DeaggregationError`. Unlike KCL and
    ``aws-kinesis-agg``, which hand such a record on as opaque data, this
    fails loudly: our producer never writes one, so it means corruption.
    """
    if not data.startswith(MAGIC):
        return [UserRecord(partition_key, data)]
    if len(data) < FRAMING_BYTES:
        raise DeaggregationError(f"aggregated record of {len(data)} bytes is truncated")
    body = data[len(MAGIC) : -DIGEST_SIZE]
    if _md5(body) != data[-DIGEST_SIZE:]:
        raise DigestMismatchError("MD5 digest does not match the aggregated record's body")
    return _parse_aggregated_record(body)


def _parse_aggregated_record(body: bytes) -> list[UserRecord]:
    partition_keys: list[str] = []
    hash_keys: list[str] = []
    spans: list[tuple[int, int]] = []
    pos, end = 0, len(body)
    while pos < end:
        field_key, pos = pb.read_varint(body, pos, end)
        field, wire_type = field_key >> 3, field_key & 7
        if field in (1, 2, 3):
            if wire_type != pb.WIRE_LEN:
                raise DeaggregationError(f"AggregatedRecord field {field}: wire type {wire_type}")
            start, pos = pb.read_length_delimited(body, pos, end)
            if field == 3:
                # Records are resolved after the loop: protobuf allows the
                # tables to come after the records that index them.
                spans.append((start, pos))
            else:
                (partition_keys if field == 1 else hash_keys).append(_utf8(body[start:pos]))
        elif field == 0:
            raise DeaggregationError("field number 0 is invalid")
        else:
            pos = pb.skip_field(body, pos, end, wire_type)
    return [_parse_record(body, start, stop, partition_keys, hash_keys) for start, stop in spans]


def _parse_record(
    body: bytes, pos: int, end: int, partition_keys: list[str], hash_keys: list[str]
) -> UserRecord:
    pk_index: int | None = None
    ehk_index: int | None = None
    data: bytes | None = None
    while pos < end:
        field_key, pos = pb.read_varint(body, pos, end)
        field, wire_type = field_key >> 3, field_key & 7
        if field in (1, 2):
            if wire_type != pb.WIRE_VARINT:
                raise DeaggregationError(f"Record field {field} has wire type {wire_type}")
            value, pos = pb.read_varint(body, pos, end)
            if field == 1:
                pk_index = value
            else:
                ehk_index = value
        elif field in (3, 4):
            if wire_type != pb.WIRE_LEN:
                raise DeaggregationError(f"Record field {field} has wire type {wire_type}")
            start, pos = pb.read_length_delimited(body, pos, end)
            if field == 3:  # tags (4) carry nothing a consumer of ours reads
                data = body[start:pos]
        elif field == 0:
            raise DeaggregationError("field number 0 is invalid")
        else:
            pos = pb.skip_field(body, pos, end, wire_type)
    if pk_index is None or data is None:
        raise DeaggregationError("Record lacks its required partition_key_index or data")
    if pk_index >= len(partition_keys):
        raise DeaggregationError(f"partition_key_index {pk_index} is outside the key table")
    hash_key = None
    if ehk_index is not None:
        if ehk_index >= len(hash_keys):
            raise DeaggregationError(f"explicit_hash_key_index {ehk_index} is outside the table")
        hash_key = hash_keys[ehk_index]
    return UserRecord(partition_keys[pk_index], data, hash_key)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeaggregationError("key table entry is not UTF-8") from exc
