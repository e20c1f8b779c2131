"""Turn a Kinesis batch into database rows, and decide what to report as failed.

Each user record is one JSON object (``tick/1`` or ``greeks/1``). Anything that
cannot become a row - a corrupt aggregate, bad JSON, an unknown schema, a
missing or mistyped field - is poison: its Kinesis record is reported as a
batch item failure (so it reaches the on-failure destination with its sequence
number after the retries), while every good user record, including the good
ones sharing an aggregate with the poison, is written. Writes are idempotent,
so the redelivery that a reported failure causes writes nothing twice.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

import orjson

from lambdas.common.kinesis_batch import (
    PoisonRecordError,
    consume_kinesis_event,
    consume_kinesis_record,
)
from ticker_core.kite import MODE_RANK, MODES
from ticker_core.records import KinesisUserRecord

TICK_SCHEMA = "tick/1"
GREEKS_SCHEMA = "greeks/1"
OPTION_TYPES = frozenset({"CE", "PE"})
MAX_TOKEN = 2**32 - 1
NUMBER = (int, float)
DEPTH_SIDES = frozenset({"buy", "sell"})
DEPTH_LEVELS = 5
PRICE_TYPES = frozenset({int, float})  # exact types: a bool is not a price
INT8_RANGE = range(-(2**63), 2**63)
# Instants are written as exact µs (lambdas/persist/pgcopy.py), which holds from the
# Unix epoch (Kite's "never", e.g. the last trade time of an untraded contract) to 2105.
YEARS = range(1970, 2106)

TICK_COLUMNS = (
    "ts", "instrument_token", "underlying", "mode", "last_price", "last_traded_quantity",
    "average_traded_price", "volume_traded", "total_buy_quantity", "total_sell_quantity",
    "open", "high", "low", "close", "change", "last_trade_time", "oi", "oi_day_high",
    "oi_day_low", "exchange_timestamp", "depth", "received_at",
    "src_shard", "src_seq", "src_subseq",
)  # fmt: skip
GREEKS_COLUMNS = (
    "ts", "instrument_token", "tradingsymbol", "underlying", "expiry", "strike",
    "option_type", "price", "forward", "forward_source", "t_years", "rate", "iv", "delta",
    "gamma", "theta", "vega", "rho", "theta_per_year", "vega_per_unit", "rho_per_unit",
    "reason", "computed_at", "src_shard", "src_seq", "src_subseq",
)  # fmt: skip


@dataclass
class Rows:
    """Rows decoded from one batch, in stream order, as tuples in column order."""

    ticks: list[tuple[Any, ...]] = field(default_factory=list)
    greeks: list[tuple[Any, ...]] = field(default_factory=list)
    poison: Counter[str] = field(default_factory=Counter)

    def add(self, user: KinesisUserRecord) -> None:
        """Decode one user record into its row (:class:`PoisonRecordError` if it cannot be)."""
        kind, row = decode(user)
        (self.ticks if kind == "tick" else self.greeks).append(row)


def _field(record: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise PoisonRecordError("bad_field", f"{name} must be {kind}, got {type(value).__name__}")
    return value


def _optional(record: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PoisonRecordError("bad_field", f"{name} must be {kind} or null")
    if isinstance(value, int) and value not in INT8_RANGE:
        # A database error here would fail the whole batch on every retry.
        raise PoisonRecordError("bad_field", f"{name} is out of the 64-bit range")
    return value


def _instant(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise PoisonRecordError("bad_field", f"{name} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PoisonRecordError("bad_field", f"{name} is not ISO 8601: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise PoisonRecordError("bad_field", f"{name} has no UTC offset")
    if parsed.year not in YEARS:
        raise PoisonRecordError("bad_field", f"{name} is outside {YEARS.start}-{YEARS.stop - 1}")
    return parsed


def _optional_instant(record: dict[str, Any], name: str) -> datetime | None:
    value = record.get(name)
    return None if value is None else _instant(value, name)


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, NUMBER) or not math.isfinite(value):
        raise PoisonRecordError("bad_field", f"{name} must be a finite number")
    return float(value)


def _token(record: dict[str, Any]) -> int:
    token = _field(record, "instrument_token", int)
    if not 0 <= token <= MAX_TOKEN:
        raise PoisonRecordError("bad_field", "instrument_token out of range")
    return int(token)


def depth_text(depth: Any) -> str | None:
    """Market depth as stored: ``{"buy": [[price, quantity, orders], ...], "sell": [...]}``.

    The same values as tick/1's level objects, positionally, in about 60% of
    the bytes; depth is most of a full tick's row, and its bytes are most of
    the database's work per row (see migration 0003).
    """
    if depth is None:
        return None
    if not isinstance(depth, dict) or depth.keys() != DEPTH_SIDES:
        raise PoisonRecordError("bad_field", "depth must be an object with buy and sell")
    compact = {}
    for side in ("buy", "sell"):
        levels = depth[side]
        if not isinstance(levels, list) or len(levels) > DEPTH_LEVELS:
            raise PoisonRecordError("bad_field", f"depth.{side} must be a list of at most 5 levels")
        try:
            rows = [(level["price"], level["quantity"], level["orders"]) for level in levels]
        except (TypeError, KeyError) as exc:
            raise PoisonRecordError("bad_field", f"depth.{side} has a malformed level") from exc
        for price, quantity, orders in rows:
            if type(quantity) is not int or type(orders) is not int:
                raise PoisonRecordError("bad_field", f"depth.{side} quantities must be integers")
            if type(price) not in PRICE_TYPES or not math.isfinite(price):
                raise PoisonRecordError("bad_field", f"depth.{side} prices must be finite numbers")
        compact[side] = rows
    return orjson.dumps(compact).decode()


def tick_row(record: dict[str, Any], source: KinesisUserRecord) -> tuple[Any, ...]:
    """A ``market.ticks`` row from a ``tick/1`` record."""
    mode = record.get("mode")
    if mode not in MODE_RANK:
        raise PoisonRecordError("bad_field", f"mode must be one of {', '.join(MODES)}")
    underlying = _field(record, "underlying", str)
    if not underlying:
        raise PoisonRecordError("bad_field", "underlying is empty")
    received_at = _instant(record.get("received_at"), "received_at")
    exchange_ts = _optional_instant(record, "exchange_timestamp")
    ohlc = record.get("ohlc")
    if ohlc is not None and not isinstance(ohlc, dict):
        raise PoisonRecordError("bad_field", "ohlc must be an object")
    ohlc = ohlc or {}
    return (
        exchange_ts or received_at,
        _token(record),
        underlying,
        mode,
        _finite(record.get("last_price"), "last_price"),
        _optional(record, "last_traded_quantity", int),
        _optional(record, "average_traded_price", NUMBER),
        _optional(record, "volume_traded", int),
        _optional(record, "total_buy_quantity", int),
        _optional(record, "total_sell_quantity", int),
        _optional(ohlc, "open", NUMBER),
        _optional(ohlc, "high", NUMBER),
        _optional(ohlc, "low", NUMBER),
        _optional(ohlc, "close", NUMBER),
        _optional(record, "change", NUMBER),
        _optional_instant(record, "last_trade_time"),
        _optional(record, "oi", int),
        _optional(record, "oi_day_high", int),
        _optional(record, "oi_day_low", int),
        exchange_ts,
        depth_text(record.get("depth")),
        received_at,
        source.shard_id,
        int(source.sequence_number),
        source.sub_sequence_number,
    )


def greeks_row(record: dict[str, Any]) -> tuple[Any, ...]:
    """A ``market.greeks`` row; its identity is the *source tick's*, carried in the record."""
    src = record.get("source")
    if not isinstance(src, dict):
        raise PoisonRecordError("bad_field", "source must be an object")
    option_type = record.get("option_type")
    if option_type not in OPTION_TYPES:
        raise PoisonRecordError("bad_field", "option_type must be CE or PE")
    try:
        expiry = date.fromisoformat(_field(record, "expiry", str))
        src_seq = int(_field(src, "sequence_number", str))
    except ValueError as exc:
        raise PoisonRecordError("bad_field", str(exc)) from exc
    computed_at = _instant(record.get("computed_at"), "computed_at")
    raw = record.get("raw") or {}
    if not isinstance(raw, dict):
        raise PoisonRecordError("bad_field", "raw must be an object")
    return (
        # as_of, not computed_at: a recomputed row must land on the same key
        _instant(record.get("as_of"), "as_of"),
        _token(record),
        _optional(record, "tradingsymbol", str),
        _field(record, "underlying", str),
        expiry,
        _finite(record.get("strike"), "strike"),
        option_type,
        _finite(record.get("price"), "price"),
        _optional(record, "forward", NUMBER),
        _field(record, "forward_source", str),
        _finite(record.get("t_years"), "t_years"),
        _finite(record.get("rate"), "rate"),
        _optional(record, "iv", NUMBER),
        _optional(record, "delta", NUMBER),
        _optional(record, "gamma", NUMBER),
        _optional(record, "theta", NUMBER),
        _optional(record, "vega", NUMBER),
        _optional(record, "rho", NUMBER),
        _optional(raw, "theta", NUMBER),
        _optional(raw, "vega", NUMBER),
        _optional(raw, "rho", NUMBER),
        _optional(record, "reason", str),
        computed_at,
        _field(src, "shard_id", str),
        src_seq,
        _field(src, "sub_sequence_number", int),
    )


def decode(user: KinesisUserRecord) -> tuple[str, tuple[Any, ...]]:
    """``("tick"|"greeks", row)`` for one user record, or :class:`PoisonRecordError`."""
    try:
        # orjson: a quarter of json's time here, and strict RFC 8259 (NaN is not JSON)
        record = orjson.loads(user.data)
    except orjson.JSONDecodeError as exc:
        raise PoisonRecordError("bad_json", str(exc)[:120]) from exc
    if not isinstance(record, dict):
        raise PoisonRecordError("bad_json", "a user record must be a JSON object")
    schema = record.get("schema")
    if schema == TICK_SCHEMA:
        return "tick", tick_row(record, user)
    if schema == GREEKS_SCHEMA:
        return "greeks", greeks_row(record)
    raise PoisonRecordError("unknown_schema", f"schema {str(schema)[:40]!r} is not supported")


class BatchWriter(Protocol):
    """Where rows go (the dal's PostgreSQL writer, or a fake in tests)."""

    async def write(self, ticks: list[tuple[Any, ...]], greeks: list[tuple[Any, ...]]) -> Any:
        """Write both lists in one transaction, skipping rows already present."""
        ...


@dataclass(frozen=True)
class PersistOutcome:
    """What one invocation did: Lambda's partial batch response plus counts."""

    response: dict[str, Any]
    ticks: int
    greeks: int
    poison: Mapping[str, int]
    written: Any
    write_ms: float


def decode_kinesis_record(raw: Mapping[str, Any], rows: Rows) -> None:
    """Add one Kinesis record's good rows to ``rows``; raise if any of it is poison.

    Every user record is decoded before raising, so good rows sharing an
    aggregate with a poison record are still written.
    """
    consume_kinesis_record(raw, rows.add, rows.poison)


async def persist_event(event: Mapping[str, Any], writer: BatchWriter) -> PersistOutcome:
    """Decode a Kinesis event, write its good rows in one transaction, report poison.

    A write failure propagates: the invocation fails, nothing was committed,
    and Kinesis redelivers the batch (bisected on error, if so configured).
    """
    rows = Rows()
    response = consume_kinesis_event(event, rows.add, rows.poison)
    started = time.perf_counter()
    written = await writer.write(rows.ticks, rows.greeks) if rows.ticks or rows.greeks else None
    return PersistOutcome(
        response=response,
        ticks=len(rows.ticks),
        greeks=len(rows.greeks),
        poison=dict(rows.poison),
        written=written,
        write_ms=(time.perf_counter() - started) * 1000,
    )
