"""The few protobuf wire-format rules the KPL aggregation format needs.

Hand-written so ``ticker_core`` depends on no protobuf runtime: base-128
varints, field keys ``(field_number << 3) | wire_type``, length-delimited
fields, and skipping fields a reader does not know (protobuf's forward
compatibility rule). Readers raise :class:`DeaggregationError` on anything
truncated or malformed and never read past ``end``.
"""

from __future__ import annotations

from typing import Final

from ticker_core.records.errors import DeaggregationError

WIRE_VARINT: Final = 0
WIRE_FIXED64: Final = 1
WIRE_LEN: Final = 2
WIRE_START_GROUP: Final = 3
WIRE_END_GROUP: Final = 4
WIRE_FIXED32: Final = 5

MAX_VARINT_BYTES: Final = 10
"""A uint64 needs at most ten 7-bit groups."""

UINT64_MAX: Final = 2**64 - 1

# Single-byte varints are by far the most common (keys, small indexes, short
# strings); precomputing them avoids an allocation per field.
_ONE_BYTE: Final = tuple(bytes((i,)) for i in range(0x80))


def key(field_number: int, wire_type: int) -> bytes:
    """The encoded key that starts a field."""
    return varint((field_number << 3) | wire_type)


def varint(value: int) -> bytes:
    """``value`` (0 <= value < 2**64) as a protobuf base-128 varint."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return (value, position after it)."""
    if pos >= end:
        raise DeaggregationError("truncated varint")
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= end:
            raise DeaggregationError("truncated varint")
        if shift >= 7 * MAX_VARINT_BYTES:
            raise DeaggregationError("varint longer than 10 bytes")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if value > UINT64_MAX:
        raise DeaggregationError("varint overflows 64 bits")
    return value, pos


def read_length_delimited(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix at ``pos``; return (start, stop) of the payload it announces."""
    length, start = read_varint(buf, pos, end)
    stop = start + length
    if stop > end:
        raise DeaggregationError("length-delimited field runs past the end of its message")
    return start, stop


def skip_field(buf: bytes, pos: int, end: int, wire_type: int) -> int:
    """Skip the value of an unknown field whose key was just read; return the next position."""
    if wire_type == WIRE_VARINT:
        return read_varint(buf, pos, end)[1]
    if wire_type == WIRE_LEN:
        return read_length_delimited(buf, pos, end)[1]
    if wire_type in (WIRE_FIXED64, WIRE_FIXED32):
        stop = pos + (8 if wire_type == WIRE_FIXED64 else 4)
        if stop > end:
            raise DeaggregationError("truncated fixed-width field")
        return stop
    # Groups (3, 4) are deprecated and never used by the KPL; 6 and 7 do not exist.
    raise DeaggregationError(f"unsupported wire type {wire_type}")
