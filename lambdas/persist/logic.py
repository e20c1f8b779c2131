"""Turn a Kinesis batch into database rows; quarantine what can never be stored.

Each user record is one JSON object (``tick/1`` or ``greeks/1``), parsed with
orjson and checked by ticker_core's own rules for its schema
(:func:`ticker_core.records.check_tick`, :func:`~ticker_core.records.check_greeks`),
then bounded to what the tables hold: bigint and integer ranges, and text
without NUL (PostgreSQL text cannot hold it). A record that fails any of it is
*poison*: counted by reason and handed to the quarantine (``market.quarantine``,
its bytes, Kinesis identity, reason and detail), in the same transaction as
the batch's good rows. Every failure is the record's own, so the good records
sharing its aggregate are written, and nothing is reported to Kinesis as
failed: a record that can never be stored is not retried (a retry would only
hold up the shard behind it). The writer quarantines rows the database itself
refuses the same way (see :mod:`lambdas.persist.dal`).

Kite's 0 for a time that has not happened ("never") is decoded as None, so a
tick whose exchange timestamp is "never" is keyed on its receipt time.

Writes are idempotent (the Kinesis identity is in every key), so a batch
delivered again after a failed invocation writes nothing twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from lambdas.common.kinesis_batch import (
    Poisoned,
    PoisonRecordError,
    consume_kinesis_event,
    consume_kinesis_record,
    loads_user_record,
)
from lambdas.persist.pgcopy import INT4_MAX, INT8_MAX, INT8_MIN
from ticker_core.records import (
    GREEKS_SCHEMA,
    TICK_SCHEMA,
    KinesisUserRecord,
    RecordError,
    check_greeks,
    check_tick,
)
from ticker_core.records.ticks import DEPTH_SIDES

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

OUT_OF_RANGE: Final = "out_of_range"
BAD_TEXT: Final = "bad_text"
NUL: Final = "\x00"
_NO_OHLC: Final[Mapping[str, Any]] = {}


def _text(name: str, value: str | None) -> str | None:
    if value is not None and NUL in value:
        raise PoisonRecordError(BAD_TEXT, f"{name} holds a NUL character (text cannot)")
    return value


def depth_text(depth: Mapping[str, Any] | None) -> str | None:
    """Market depth as stored: ``{"buy": [[price, quantity, orders], ...], "sell": [...]}``.

    The same values as tick/1's level objects (already checked), positionally,
    in about 60% of the bytes; depth is most of a full tick's row, and its
    bytes are most of the database's work per row (see migration 0004).
    """
    if depth is None:
        return None
    compact = {
        side: [(level["price"], level["quantity"], level["orders"]) for level in depth[side]]
        for side in DEPTH_SIDES
    }
    try:
        return orjson.dumps(compact).decode()
    except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits, e.g. 1e30 as a quantity
        raise PoisonRecordError(OUT_OF_RANGE, "depth holds a number beyond 64 bits") from exc


def tick_row(record: dict[str, Any], source: KinesisUserRecord) -> tuple[Any, ...]:
    """A ``market.ticks`` row from a ``tick/1`` record checked by :func:`check_tick`."""
    get = record.get
    ltq, volume = get("last_traded_quantity"), get("volume_traded")
    buy, sell = get("total_buy_quantity"), get("total_sell_quantity")
    oi, oi_high, oi_low = get("oi"), get("oi_day_high"), get("oi_day_low")
    for value in (ltq, volume, buy, sell, oi, oi_high, oi_low):
        if value is not None and not INT8_MIN <= value <= INT8_MAX:
            raise PoisonRecordError(OUT_OF_RANGE, "a quantity is outside bigint")
    received_at = record["received_at"]
    exchange_ts = get("exchange_timestamp")
    ohlc = get("ohlc", _NO_OHLC)
    return (
        exchange_ts or received_at,
        record["instrument_token"],
        _text("underlying", record["underlying"]),
        record["mode"],
        record["last_price"],
        ltq,
        get("average_traded_price"),
        volume,
        buy,
        sell,
        ohlc.get("open"),
        ohlc.get("high"),
        ohlc.get("low"),
        ohlc.get("close"),
        get("change"),
        get("last_trade_time"),
        oi,
        oi_high,
        oi_low,
        exchange_ts,
        depth_text(record.get("depth")),
        received_at,
        source.shard_id,
        int(source.sequence_number),  # digits: checked with the event record
        source.sub_sequence_number,
    )


def greeks_row(record: dict[str, Any]) -> tuple[Any, ...]:
    """A ``market.greeks`` row from a checked ``greeks/1`` record.

    Its identity is the *source tick's*, carried in the record, so a
    recomputation of the same tick lands on the same key.
    """
    src = record["source"]
    if src["sub_sequence_number"] > INT4_MAX:
        raise PoisonRecordError(OUT_OF_RANGE, "source.sub_sequence_number is outside integer")
    raw = record["raw"]
    return (
        record["as_of"],  # not computed_at: a recomputed row must land on the same key
        record["instrument_token"],
        _text("tradingsymbol", record.get("tradingsymbol")),
        _text("underlying", record["underlying"]),
        record["expiry"],
        record["strike"],
        record["option_type"],
        record["price"],
        record["forward"],
        record["forward_source"],
        record["t_years"],
        record["rate"],
        record["iv"],
        record["delta"],
        record["gamma"],
        record["theta"],
        record["vega"],
        record["rho"],
        raw["theta"],
        raw["vega"],
        raw["rho"],
        record["reason"],
        record["computed_at"],
        src["shard_id"],
        int(src["sequence_number"]),  # digits: checked by check_greeks
        src["sub_sequence_number"],
    )


def decode(user: KinesisUserRecord) -> tuple[str, tuple[Any, ...]]:
    """``("tick"|"greeks", row)`` for one user record, or :class:`PoisonRecordError`."""
    try:
        record = loads_user_record(user.data)
        schema = record.get("schema")
        if schema == TICK_SCHEMA:
            return "tick", tick_row(check_tick(record), user)
        if schema == GREEKS_SCHEMA:
            return "greeks", greeks_row(check_greeks(record))
    except RecordError as exc:
        raise PoisonRecordError(exc.reason, str(exc)) from exc
    raise PoisonRecordError("unknown_schema", f"schema {schema!r:.40} is not supported")


@dataclass
class Rows:
    """One batch, decoded: rows in stream order (tuples in column order), and its poison.

    ``tick_sources``/``greeks_sources`` are each row's user record, for
    quarantining a row the database refuses.
    """

    stream_arn: str = ""
    ticks: list[tuple[Any, ...]] = field(default_factory=list)
    tick_sources: list[KinesisUserRecord] = field(default_factory=list)
    greeks: list[tuple[Any, ...]] = field(default_factory=list)
    greeks_sources: list[KinesisUserRecord] = field(default_factory=list)
    quarantine: list[Poisoned] = field(default_factory=list)
    poison: Counter[str] = field(default_factory=Counter)

    def add(self, user: KinesisUserRecord) -> None:
        """Decode one user record into its row (:class:`PoisonRecordError` if it cannot be)."""
        kind, row = decode(user)
        if kind == "tick":
            self.ticks.append(row)
            self.tick_sources.append(user)
        else:
            self.greeks.append(row)
            self.greeks_sources.append(user)

    def rejected(self, kind: str, index: int, reason: str, detail: str) -> Poisoned:
        """The quarantine entry of row ``index`` of ``kind`` ("tick" or "greeks")."""
        sources = self.tick_sources if kind == "tick" else self.greeks_sources
        return Poisoned.of(self.stream_arn, sources[index], reason, detail)


class BatchWriter(Protocol):
    """Where rows go (the dal's PostgreSQL writer, or a fake in tests)."""

    async def write(self, rows: Rows) -> Any:
        """Write the good rows and the quarantine, skipping rows already present."""
        ...


@dataclass(frozen=True)
class PersistOutcome:
    """What one invocation did: Lambda's partial batch response plus counts."""

    response: dict[str, Any]
    ticks: int
    """Tick rows offered to the database and not refused by it (stored, or already there)."""
    greeks: int
    poison: Mapping[str, int]
    """User records quarantined, by reason (the decoder's and the database's)."""
    written: Any
    write_ms: float


def decode_kinesis_record(raw: Mapping[str, Any], rows: Rows) -> None:
    """Add one Kinesis record's good rows to ``rows``, and its poison to the quarantine."""
    consume_kinesis_record(raw, rows.add, rows.poison, rows.quarantine.append)


async def persist_event(event: Mapping[str, Any], writer: BatchWriter) -> PersistOutcome:
    """Decode a Kinesis event, write its good rows and its quarantine in one go.

    A write failure that is not about the rows (the database unreachable)
    propagates: the invocation fails and Kinesis redelivers the batch.
    """
    records = event.get("Records")
    first = records[0] if isinstance(records, list) and records else None
    # One event source mapping, one stream: every record of an event names the same.
    stream_arn = first.get("eventSourceARN", "") if isinstance(first, Mapping) else ""
    rows = Rows(stream_arn=str(stream_arn))
    response = consume_kinesis_event(event, rows.add, rows.poison, rows.quarantine.append)
    started = time.perf_counter()
    written = None
    rejected: Counter[str] = Counter()
    ticks, greeks = len(rows.ticks), len(rows.greeks)
    if rows.ticks or rows.greeks or rows.quarantine:
        written = await writer.write(rows)
        rejected.update(entry.reason for entry in written.rejected)
        ticks -= written.ticks_rejected
        greeks -= written.greeks_rejected
    return PersistOutcome(
        response=response,
        ticks=ticks,
        greeks=greeks,
        poison=dict(rows.poison + rejected),
        written=written,
        write_ms=(time.perf_counter() - started) * 1000,
    )
