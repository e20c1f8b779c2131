"""Greeks user records: one JSON object per option tick, schema ``greeks/1``.

The schema is ``schemas/greeks.v1.json``. A row is a mapping with the schema's
field names (``schema`` itself is added here). Option math reports a bad
element as NaN with a reason code, never by failing the batch, so every
number here may be NaN or infinite: it is written as null, because RFC 8259
has no such numbers and Python's ``json`` would otherwise write the invalid
``NaN`` token that most other parsers reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Final

from ticker_core.kite import MAX_INSTRUMENT_TOKEN
from ticker_core.records import _jsonfmt as jf
from ticker_core.records.errors import (
    FieldError,
    FieldRangeError,
    RecordEncodeError,
    SchemaVersionError,
)
from ticker_core.records.lambda_event import SEQUENCE_NUMBER, SHARD_ID

GREEKS_SCHEMA: Final = "greeks/1"
"""Value of every Greeks record's ``schema`` field."""

OPTION_TYPES: Final[frozenset[str | None]] = frozenset({"CE", "PE"})
FORWARD_SOURCES: Final[frozenset[str | None]] = frozenset({"future", "parity", "carried", "none"})
REASONS: Final[frozenset[str | None]] = frozenset(
    {
        None,
        "nan_input",
        "non_positive_price",
        "non_positive_forward",
        "non_positive_strike",
        "expired",
        "below_intrinsic",
        "above_upper_bound",
        "no_convergence",
        "no_forward",
        "unknown_instrument",
    }
)
"""The schema's ``reason`` enum (None: the numbers are valid)."""

_NUMBERS_BEFORE_RAW: Final = ("iv", "delta", "gamma", "theta", "vega", "rho")
_RAW: Final = ("theta", "vega", "rho")
_SOURCE: Final = ("shard_id", "sequence_number", "sub_sequence_number")

GREEKS_NUMBERS: Final = (
    "strike", "price", "forward", "t_years", "rate", *_NUMBERS_BEFORE_RAW,
)  # fmt: skip
"""The number-or-null fields (outside ``raw``)."""

GREEKS_FIELDS: Final = (
    "schema", "instrument_token", "tradingsymbol", "underlying", "expiry", "strike",
    "option_type", "price", "forward", "forward_source", "t_years", "rate",
    *_NUMBERS_BEFORE_RAW, "raw", "reason", "exchange_timestamp", "as_of", "computed_at", "source",
)  # fmt: skip
"""Every field of a ``greeks/1`` record, in the schema's order (none other is allowed)."""

GREEKS_REQUIRED: Final = frozenset(GREEKS_FIELDS) - {"tradingsymbol"}
_FIELD_SET: Final = frozenset(GREEKS_FIELDS)
_RAW_SET: Final = frozenset(_RAW)
_SOURCE_SET: Final = frozenset(_SOURCE)


def encode_greeks(row: Mapping[str, Any]) -> bytes:
    """One Greeks row as a ``greeks/1`` JSON user record (UTF-8 bytes).

    Numbers may be Python or numpy scalars; NaN and infinities become null.
    ``expiry`` is a date (or an ISO date string); ``exchange_timestamp`` an
    aware datetime or None; ``as_of`` (the source tick's exchange timestamp,
    else its receipt time) and ``computed_at`` aware datetimes; ``raw`` a
    mapping of theta, vega and rho; ``source`` a mapping of shard_id,
    sequence_number and sub_sequence_number (see
    :attr:`ticker_core.records.KinesisUserRecord.source`). ``tradingsymbol``
    is optional. Other keys are ignored.

    Raises :class:`RecordEncodeError` naming the first field that is missing
    or of the wrong type, or a string outside its enum.
    """
    try:
        record = _record(row)
    except KeyError as exc:
        raise RecordEncodeError(f"Greeks row lacks {exc}") from exc
    return jf.ENCODER.encode(record).encode()


def decode_greeks(data: bytes) -> dict[str, Any]:
    """A ``greeks/1`` user record back as a dict, checked by :func:`check_greeks`.

    Raises a :class:`RecordDecodeError` subclass when ``data`` is not strict
    JSON, not an object, of another schema version, or breaks a field's rule.
    """
    return check_greeks(jf.loads_object(data, GREEKS_SCHEMA))


def check_greeks(record: dict[str, Any]) -> dict[str, Any]:
    """A parsed ``greeks/1`` object checked against ``greeks.v1.json``; returns ``record``.

    Every rule of the schema, once, whatever parsed the JSON: its field set,
    required fields, types, enums, the token's 32 bits, ``source`` (a
    sequence number of 1 to 128 digits, a sub-sequence number >= 0); numbers
    are finite or null, timestamps ISO 8601 with an offset within 1970-2106.
    In place, ``expiry`` becomes a date, timestamps aware datetimes and
    integral floats ints. Raises :class:`FieldError` (bad_field) or
    :class:`FieldRangeError` (out_of_range) naming the field.
    """
    if record.get("schema") != GREEKS_SCHEMA:
        schema = record.get("schema")
        raise SchemaVersionError(f"schema {schema!r:.40} is not {GREEKS_SCHEMA!r}")
    jf.decoded_object("greeks", record, _FIELD_SET)
    jf.require_fields("", record, GREEKS_REQUIRED)
    token = record["instrument_token"] = jf.decoded_integer(
        "instrument_token", record["instrument_token"]
    )
    if not 0 <= token <= MAX_INSTRUMENT_TOKEN:
        raise FieldRangeError("instrument_token", "must be an unsigned 32-bit integer")
    if "tradingsymbol" in record:
        jf.decoded_string_or_null("tradingsymbol", record["tradingsymbol"])
    jf.decoded_text("underlying", record["underlying"])
    record["expiry"] = _decoded_expiry(record["expiry"])
    for name in GREEKS_NUMBERS:
        jf.decoded_number_or_null(name, record[name])
    jf.decoded_choice("option_type", record["option_type"], OPTION_TYPES)
    jf.decoded_choice("forward_source", record["forward_source"], FORWARD_SOURCES)
    jf.decoded_choice("reason", record["reason"], REASONS)
    raw = jf.decoded_object("raw", record["raw"], _RAW_SET)
    jf.require_fields("raw", raw, _RAW_SET)
    for name in _RAW:
        jf.decoded_number_or_null(f"raw.{name}", raw[name])
    if record["exchange_timestamp"] is not None:
        record["exchange_timestamp"] = jf.decoded_instant(
            "exchange_timestamp", record["exchange_timestamp"]
        )
    record["as_of"] = jf.decoded_instant("as_of", record["as_of"])
    record["computed_at"] = jf.decoded_instant("computed_at", record["computed_at"])
    _check_source(record["source"])
    return record


def _decoded_expiry(value: object) -> date:
    if type(value) is not str:
        raise FieldError("expiry", f"must be an ISO date string, got {type(value).__name__}")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise FieldError("expiry", f"is not an ISO date: {value!r:.40}") from exc


def _check_source(value: object) -> None:
    source = jf.decoded_object("source", value, _SOURCE_SET)
    jf.require_fields("source", source, _SOURCE_SET)
    shard_id = source["shard_id"]
    if type(shard_id) is not str or not SHARD_ID.fullmatch(shard_id):
        raise FieldError("source.shard_id", "must be a Kinesis shard id")
    sequence = source["sequence_number"]
    if type(sequence) is not str or not SEQUENCE_NUMBER.fullmatch(sequence):
        raise FieldError("source.sequence_number", "must be a string of 1 to 128 digits")
    sub = source["sub_sequence_number"] = jf.decoded_integer(
        "source.sub_sequence_number", source["sub_sequence_number"]
    )
    if sub < 0:
        raise FieldRangeError("source.sub_sequence_number", "must be >= 0")


def _record(row: Mapping[str, Any]) -> dict[str, object]:
    record: dict[str, object] = {
        "schema": GREEKS_SCHEMA,
        "instrument_token": jf.integer("instrument_token", row["instrument_token"]),
    }
    if "tradingsymbol" in row:
        record["tradingsymbol"] = jf.string_or_null("tradingsymbol", row["tradingsymbol"])
    record["underlying"] = jf.text("underlying", row["underlying"])
    record["expiry"] = _expiry(row["expiry"])
    record["strike"] = jf.number_or_null("strike", row["strike"])
    record["option_type"] = jf.one_of("option_type", row["option_type"], OPTION_TYPES)
    record["price"] = jf.number_or_null("price", row["price"])
    record["forward"] = jf.number_or_null("forward", row["forward"])
    record["forward_source"] = jf.one_of("forward_source", row["forward_source"], FORWARD_SOURCES)
    record["t_years"] = jf.number_or_null("t_years", row["t_years"])
    record["rate"] = jf.number_or_null("rate", row["rate"])
    for name in _NUMBERS_BEFORE_RAW:
        record[name] = jf.number_or_null(name, row[name])
    raw = row["raw"]
    if not isinstance(raw, Mapping):
        jf.fail("raw", "must be a mapping of theta, vega and rho", raw)
    record["raw"] = {name: jf.number_or_null(f"raw.{name}", raw[name]) for name in _RAW}
    record["reason"] = jf.one_of("reason", row["reason"], REASONS)
    record["exchange_timestamp"] = jf.timestamp_or_none(
        "exchange_timestamp", row["exchange_timestamp"], jf.exchange_time
    )
    for name in ("as_of", "computed_at"):
        instant = jf.timestamp_or_none(name, row[name], jf.utc_time)
        if instant is None:
            jf.fail(name, "must be a timezone-aware datetime", None)
        record[name] = instant
    record["source"] = _source(row["source"])
    return record


def _expiry(value: object) -> str:
    if isinstance(value, datetime):  # a datetime is a date too; its time would be dropped
        jf.fail("expiry", "must be a date, not a datetime", value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    return jf.fail("expiry", "must be a date or an ISO date string", value)


def _source(value: object) -> dict[str, object]:
    if not isinstance(value, Mapping):
        jf.fail(
            "source", "must be a mapping of shard_id, sequence_number, sub_sequence_number", value
        )
    sub_sequence = jf.integer("source.sub_sequence_number", value["sub_sequence_number"])
    if sub_sequence < 0:
        jf.fail("source.sub_sequence_number", "must be >= 0", sub_sequence)
    sequence = jf.text("source.sequence_number", value["sequence_number"])
    if not SEQUENCE_NUMBER.fullmatch(sequence):
        jf.fail("source.sequence_number", "must be 1 to 128 decimal digits", sequence)
    shard_id = jf.text("source.shard_id", value["shard_id"])
    if not SHARD_ID.fullmatch(shard_id):
        jf.fail("source.shard_id", "must be a Kinesis shard id", shard_id)
    return {
        "shard_id": shard_id,
        "sequence_number": sequence,
        "sub_sequence_number": sub_sequence,
    }
