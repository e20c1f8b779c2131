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

from ticker_core.records import _jsonfmt as jf
from ticker_core.records.errors import RecordDecodeError, RecordEncodeError

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
_REQUIRED: Final = frozenset(
    {
        "schema",
        "instrument_token",
        "underlying",
        "expiry",
        "strike",
        "option_type",
        "price",
        "forward",
        "forward_source",
        "t_years",
        "rate",
        *_NUMBERS_BEFORE_RAW,
        "raw",
        "reason",
        "exchange_timestamp",
        "as_of",
        "computed_at",
        "source",
    }
)


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
    """A ``greeks/1`` user record back as a dict.

    ``expiry`` becomes a date and the timestamps aware datetimes; nulls stay
    None. Raises :class:`RecordDecodeError` when ``data`` is not strict JSON,
    not an object, of another schema version, or lacks a required field.
    """
    record = jf.loads_object(data, GREEKS_SCHEMA)
    jf.require(record, _REQUIRED)
    try:
        record["expiry"] = date.fromisoformat(record["expiry"])
    except (TypeError, ValueError) as exc:
        raise RecordDecodeError(f"expiry is not an ISO date: {record['expiry']!r:.40}") from exc
    jf.parse_timestamp(record, "exchange_timestamp")
    jf.parse_timestamp(record, "as_of")
    jf.parse_timestamp(record, "computed_at")
    return record


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
    return {
        "shard_id": jf.text("source.shard_id", value["shard_id"]),
        "sequence_number": jf.text("source.sequence_number", value["sequence_number"]),
        "sub_sequence_number": sub_sequence,
    }
