"""What the tick and Greeks JSON codecs share: strict JSON, timestamps, value checks.

Output is RFC 8259 JSON: compact separators, ASCII (a subset of UTF-8, so
every consumer reads it whatever its default), and never the ``NaN`` or
``Infinity`` tokens Python's ``json`` writes by default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, NoReturn

import numpy as np

from ticker_core.records.errors import (
    FieldError,
    FieldRangeError,
    RecordDecodeError,
    RecordEncodeError,
    SchemaVersionError,
)
from ticker_core.tz import IST

ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=True)
"""One shared encoder: ``json.dumps`` with options builds a new one per call."""

json_string: Final = json.encoder.encode_basestring_ascii
"""A str as a JSON string literal, exactly as :data:`ENCODER` writes it (the C function)."""

EARLIEST_INSTANT: Final = datetime(1970, 1, 1, tzinfo=UTC)
"""No record's instant is earlier: Kite's timestamps are unsigned 32-bit Unix seconds."""

LATEST_INSTANT: Final = datetime.fromtimestamp(2**32 - 1, UTC)
"""No record's instant is later (2106-02-07T06:28:15Z), for the same reason."""


# Exchange times are whole seconds and many ticks share one, and a frame's
# ticks share one receive time; formatting is most of a timestamp's cost, so
# it is memoised. The result depends only on the instant (always rendered in
# one zone), so a cache hit for an equal instant in another zone is correct.
@lru_cache(maxsize=4096)
def exchange_time(value: datetime) -> str:
    """An aware datetime as ISO 8601 in IST (``2026-11-27T09:15:03+05:30``)."""
    if value.utcoffset() is None:
        raise RecordEncodeError(f"timestamp {value!r} is naive; timestamps must be timezone-aware")
    return value.astimezone(IST).isoformat()


@lru_cache(maxsize=256)
def utc_time(value: datetime) -> str:
    """An aware datetime as ISO 8601 in UTC with microseconds (``...T03:45:03.123456+00:00``)."""
    if value.utcoffset() is None:
        raise RecordEncodeError(f"timestamp {value!r} is naive; timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def timestamp_or_none(name: str, value: object, render: Callable[[datetime], str]) -> str | None:
    """``render(value)`` for a datetime, None for None, else :class:`RecordEncodeError`."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        fail(name, "must be a timezone-aware datetime or None", value)
    return render(value)


def fail(name: str, requirement: str, value: object) -> NoReturn:
    """Raise :class:`RecordEncodeError` naming the field, the rule and the offending type."""
    raise RecordEncodeError(f"{name} {requirement}, got {type(value).__name__} {value!r:.60}")


def integer(name: str, value: object) -> int:
    """An int (numpy integers too, never bool): the JSON integer."""
    if type(value) is int:
        return value
    if isinstance(value, np.integer):
        return int(value)
    fail(name, "must be an integer", value)


def number(name: str, value: object) -> float | int:
    """A finite int or float (numpy ones too, never bool), kept as it is."""
    if type(value) is float or type(value) is int:
        result: float | int = value
    elif isinstance(value, np.floating):
        result = float(value)
    elif isinstance(value, np.integer):
        result = int(value)
    else:
        fail(name, "must be a number", value)
    if not _finite(result):
        fail(name, "must be finite", value)
    return result


def number_or_null(name: str, value: object) -> float | None:
    """A number as float, or None for None, NaN and infinities (JSON has no such numbers)."""
    if value is None:
        return None
    if type(value) is bool or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(name, "must be a number or None", value)
    try:
        result = float(value)
    except OverflowError:  # an int beyond any float is as good as infinite
        return None
    return result if math.isfinite(result) else None


def _finite(value: float | int) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def text(name: str, value: object) -> str:
    """A non-empty str (as its plain value)."""
    if not isinstance(value, str) or not value:
        fail(name, "must be a non-empty string", value)
    return str(value)  # a str subclass (StrEnum) becomes its plain value


def string_or_null(name: str, value: object) -> str | None:
    """Any str (as its plain value), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        fail(name, "must be a string or None", value)
    return str(value)


def one_of(name: str, value: object, allowed: frozenset[str | None]) -> str | None:
    """``value`` if it is one of ``allowed`` (as its plain str)."""
    if not (value is None or isinstance(value, str)) or value not in allowed:
        fail(name, f"must be one of {sorted(map(str, allowed))}", value)
    return None if value is None else str(value)


# -- decoding: the schemas' rules for values already parsed from JSON ------------
# Shared by the stdlib decoders here and by consumers that parse with a faster
# library and then apply the same rules (the persist function). Each raises a
# FieldError subclass naming the field; values quoted in messages are repr()s,
# so a control character in the input never reaches a log or a database as is.


EXACT_FLOAT_INTEGER: Final = 2**53
"""Beyond this, a float does not hold every integer: a parser that reads a long integer
as a float (orjson beyond 64 bits) may have changed its digits."""


def decoded_integer(name: str, value: object) -> int:
    """A JSON integer: an int, or a float with no fraction (JSON Schema's rule), never a bool.

    A float is taken only while it is exact (within 2**53): ``-9223372036854775809``
    read as a float is ``-2**63``, which is not the number that was written.
    """
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        if abs(value) > EXACT_FLOAT_INTEGER:
            raise FieldRangeError(name, "is an integer too long to be read exactly")
        return int(value)
    raise FieldError(name, f"must be an integer, got {type(value).__name__}")


def decoded_number(name: str, value: object) -> float | int:
    """A finite JSON number (never a bool), kept as parsed."""
    if type(value) is float:
        if value - value != 0.0:  # infinite (NaN is not JSON): e.g. 1e999 read by json
            raise FieldRangeError(name, "must be finite")
        return value
    if type(value) is int:
        if not _finite(value):
            raise FieldRangeError(name, "is beyond any float")
        return value
    raise FieldError(name, f"must be a number, got {type(value).__name__}")


def decoded_number_or_null(name: str, value: object) -> float | int | None:
    """A finite JSON number or null."""
    return None if value is None else decoded_number(name, value)


def decoded_text(name: str, value: object) -> str:
    """A non-empty JSON string."""
    if type(value) is not str or not value:
        raise FieldError(name, "must be a non-empty string")
    return value


def decoded_string_or_null(name: str, value: object) -> str | None:
    """A JSON string (possibly empty) or null."""
    if value is not None and type(value) is not str:
        raise FieldError(name, f"must be a string or null, got {type(value).__name__}")
    return value


def decoded_choice(name: str, value: object, allowed: frozenset[str | None]) -> str | None:
    """``value`` if it is one of ``allowed`` (a JSON string, or null where allowed)."""
    if not (value is None or type(value) is str) or value not in allowed:
        raise FieldError(name, f"must be one of {sorted(map(str, allowed))}, got {value!r:.40}")
    return value


def decoded_instant(name: str, value: object) -> datetime:
    """An ISO 8601 string with a UTC offset, between the earliest and latest instant."""
    if type(value) is not str:
        raise FieldError(name, f"must be an ISO 8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise FieldError(name, f"is not an ISO 8601 timestamp: {value!r:.60}") from exc
    if parsed.tzinfo is None:  # fromisoformat sets one exactly when the string has an offset
        raise FieldError(name, f"has no UTC offset: {value!r:.60}")
    # The year alone settles nearly every instant; the comparisons only near the ends.
    if not EARLIEST_INSTANT.year < parsed.year < LATEST_INSTANT.year and not (
        EARLIEST_INSTANT <= parsed <= LATEST_INSTANT
    ):
        raise FieldRangeError(name, f"is outside {EARLIEST_INSTANT:%Y}-{LATEST_INSTANT:%Y}")
    return parsed


def decoded_object(name: str, value: object, allowed: frozenset[str]) -> dict[str, Any]:
    """A JSON object whose keys are all among ``allowed`` (the schema's field set)."""
    if type(value) is not dict:
        raise FieldError(name, f"must be an object, got {type(value).__name__}")
    if not value.keys() <= allowed:
        unknown = sorted(map(repr, value.keys() - allowed))[:3]
        raise FieldError(name, f"has fields the schema does not define: {', '.join(unknown)}")
    return value


def require_fields(name: str, record: dict[str, Any], required: frozenset[str]) -> None:
    """:class:`FieldError` naming the first missing field, unless all are present."""
    if not required <= record.keys():
        missing = sorted(required - record.keys())
        raise FieldError(f"{name}.{missing[0]}" if name else missing[0], "is missing")


def _reject_constant(token: str) -> NoReturn:
    raise RecordDecodeError(f"{token} is not JSON (RFC 8259 has no such number)")


def loads_object(data: bytes, schema: str) -> dict[str, Any]:
    """Parse strict JSON, require an object whose ``schema`` is ``schema``."""
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; absurd nesting
    # exhausts the parser's recursion.
    except (ValueError, TypeError, RecursionError) as exc:
        if isinstance(exc, RecordDecodeError):
            raise
        raise RecordDecodeError(f"not a JSON user record: {exc}") from exc
    if not isinstance(value, dict):
        raise RecordDecodeError(f"user record is a JSON {type(value).__name__}, not an object")
    if value.get("schema") != schema:
        raise SchemaVersionError(f"schema {value.get('schema')!r:.40} is not {schema!r}")
    return value
