"""Kinesis record codec: aggregation, de-aggregation and tick JSON encoding.

Anchors: the ``aws-kinesis-agg`` library (AWS's Python KPL aggregator and
de-aggregator, protobuf runtime) for aggregation and de-aggregation, and the
``json`` module writing the same tick object (dict built in schema order, one
shared encoder) for tick encoding.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records
from jsonschema import Draft202012Validator, FormatChecker

from ticker_core.records import (
    DEFAULT_AGGREGATE_BYTES,
    Aggregator,
    RecordBatcher,
    deaggregate_event_record,
    encode_greeks,
    encode_tick,
)
from ticker_core.tz import IST
from tools.benchmarking import Comparison, Figure, Result, benchmark, interleaved_rates

# 20 underlyings, the NIFTY and BANKNIFTY chains the busiest.
UNDERLYINGS = ["NIFTY"] * 8 + ["BANKNIFTY"] * 6 + ["FINNIFTY"] * 2 + ["MIDCPNIFTY"]
UNDERLYINGS += ["RELIANCE", "HDFCBANK", "ICICIBANK", "INFY", "TCS", "SBIN", "M&M", "LT"]
UNDERLYINGS += ["AXISBANK", "ITC", "KOTAKBANK", "BHARTIARTL", "TATAMOTORS", "MARUTI"]
UNDERLYINGS += ["BAJFINANCE", "HINDUNILVR"]
RECEIVED_AT = datetime(2026, 11, 27, 3, 45, 3, 123456, tzinfo=UTC)
ENVELOPE: dict[str, Any] = {
    "exchange": "NFO",
    "tradingsymbol": "NIFTY26D0124000CE",
    "account": "ZX1234",
}
USER_RECORDS = 20_000


def _price(rng: random.Random) -> float:
    return rng.randrange(500, 5_000_000) / 100


def kite_tick(rng: random.Random, mode: str) -> dict[str, Any]:
    """A tick dict as kiteconnect produces it, with aware timestamps."""
    when = datetime(2026, 11, 27, 9, 15, tzinfo=IST) + timedelta(seconds=rng.randrange(22_500))
    last = _price(rng)
    tick: dict[str, Any] = {
        "tradable": True,
        "mode": mode,
        "instrument_token": rng.randrange(1, 2**32),
        "last_price": last,
    }
    if mode == "ltp":
        return tick
    close = _price(rng)
    tick.update(
        last_traded_quantity=rng.randrange(1, 5000),
        average_traded_price=_price(rng),
        volume_traded=rng.randrange(10**7),
        total_buy_quantity=rng.randrange(10**6),
        total_sell_quantity=rng.randrange(10**6),
        ohlc={"open": _price(rng), "high": _price(rng), "low": _price(rng), "close": close},
        change=(last - close) * 100 / close,
    )
    if mode == "quote":
        return tick
    tick.update(
        last_trade_time=when - timedelta(seconds=1),
        oi=rng.randrange(10**7),
        oi_day_high=rng.randrange(10**7),
        oi_day_low=rng.randrange(10**7),
        exchange_timestamp=when,
        depth={
            side: [
                {
                    "quantity": rng.randrange(1, 10**5),
                    "price": _price(rng),
                    "orders": rng.randrange(50),
                }
                for _ in range(5)
            ]
            for side in ("buy", "sell")
        },
    )
    return tick


def anchor_record(tick: dict[str, Any], underlying: str) -> dict[str, Any]:
    """The tick record as a dict in schema order, what a json-module encoder would build."""
    record: dict[str, Any] = {
        "schema": "tick/1",
        "instrument_token": tick["instrument_token"],
        "exchange": ENVELOPE["exchange"],
        "tradingsymbol": ENVELOPE["tradingsymbol"],
        "underlying": underlying,
        "mode": tick["mode"],
        "tradable": tick["tradable"],
        "last_price": tick["last_price"],
    }
    for key in (
        "last_traded_quantity",
        "average_traded_price",
        "volume_traded",
        "total_buy_quantity",
        "total_sell_quantity",
        "ohlc",
        "change",
        "last_trade_time",
        "oi",
        "oi_day_high",
        "oi_day_low",
        "exchange_timestamp",
        "depth",
    ):
        if key not in tick:
            continue
        value = tick[key]
        if key in ("last_trade_time", "exchange_timestamp"):
            value = value.astimezone(IST).isoformat()
        elif key == "ohlc":
            value = {k: value[k] for k in ("open", "high", "low", "close")}
        elif key == "depth":
            value = {
                side: [{k: lv[k] for k in ("price", "quantity", "orders")} for lv in value[side]]
                for side in ("buy", "sell")
            }
        record[key] = value
    record["received_at"] = RECEIVED_AT.isoformat(timespec="microseconds")
    record["account"] = ENVELOPE["account"]
    return record


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def json_anchor(tick: dict[str, Any], underlying: str) -> bytes:
    """The same record written by the json module: dict in schema order, one shared encoder."""
    return _ENCODER.encode(anchor_record(tick, underlying)).encode()


def json_dumps_per_call(tick: dict[str, Any], underlying: str) -> bytes:
    """As json_anchor, but json.dumps with options, which builds a new encoder every call."""
    record = anchor_record(tick, underlying)
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def encoders(ticks: list[dict[str, Any]]) -> dict[str, Callable[[], object]]:
    def ours() -> None:
        for tick in ticks:
            encode_tick(tick, underlying="NIFTY", received_at=RECEIVED_AT, **ENVELOPE)

    def anchor() -> None:
        for tick in ticks:
            json_anchor(tick, "NIFTY")

    return {"encode_tick": ours, "json, shared encoder": anchor}


def aggregation_contenders(records: list[tuple[str, bytes]]) -> dict[str, Callable[[], object]]:
    """Each aggregates every user record into per-key aggregates of the same target size."""

    def aws() -> None:
        aggregators: dict[str, RecordAggregator] = {}
        for key, data in records:
            agg = aggregators.get(key)
            if agg is None:
                agg = aggregators[key] = RecordAggregator(DEFAULT_AGGREGATE_BYTES)
            full = agg.add_user_record(key, data)
            if full is not None:
                full.get_contents()
        for agg in aggregators.values():
            agg.clear_and_get().get_contents()

    def aggregator() -> None:
        aggregators: dict[str, Aggregator] = {}
        for key, data in records:
            agg = aggregators.get(key)
            if agg is None:
                agg = aggregators[key] = Aggregator(DEFAULT_AGGREGATE_BYTES)
            if not agg.try_add(key, data):
                agg.build()
                agg = aggregators[key] = Aggregator(DEFAULT_AGGREGATE_BYTES)
                agg.try_add(key, data)
        for agg in aggregators.values():
            agg.build()

    def batcher() -> None:
        batch = RecordBatcher(linger=0.2)
        now = 0.0
        for i, (key, data) in enumerate(records):
            now += 1e-5  # 100,000 records/s
            batch.add(key, data, now)
            if i % 1000 == 999:
                batch.drain(now)
        batch.flush()

    return {
        "aws-kinesis-agg RecordAggregator": aws,
        "Aggregator": aggregator,
        "RecordBatcher (aggregate + pack requests)": batcher,
    }


def lambda_events(records: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    batcher = RecordBatcher(linger=0.2)
    for key, data in records:
        batcher.add(key, data, 0.0)
    return [
        {
            "eventID": f"shardId-000000000000:{n}",
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": entry.partition_key,
                "sequenceNumber": str(n),
                "approximateArrivalTimestamp": 1764215103.5,
                "data": base64.b64encode(entry.data).decode(),
            },
        }
        for n, entry in enumerate(r for b in batcher.flush() for r in b.records)
    ]


@benchmark("records")
def run() -> Result:
    rng = random.Random(20261127)  # reproducible data
    # Typical user records: quote ticks as encode_tick writes them, 350-700 bytes.
    records: list[tuple[str, bytes]] = []
    while len(records) < USER_RECORDS:
        underlying = rng.choice(UNDERLYINGS)
        data = encode_tick(
            kite_tick(rng, "quote"), underlying=underlying, received_at=RECEIVED_AT, **ENVELOPE
        )
        if 350 <= len(data) <= 700:
            records.append((underlying, data))
    mean_size = sum(len(d) for _, d in records) / len(records)

    agg_rates, aggregation = interleaved_rates(
        aggregation_contenders(records), USER_RECORDS, "aws-kinesis-agg RecordAggregator"
    )

    events = lambda_events(records)

    def ours_deaggregate() -> None:
        for event in events:
            deaggregate_event_record(event)

    def aws_deaggregate() -> None:
        deaggregate_records(events)

    deagg_rates, deaggregation = interleaved_rates(
        {
            "deaggregate_event_record": ours_deaggregate,
            "aws-kinesis-agg deaggregate": aws_deaggregate,
        },
        USER_RECORDS,
        "aws-kinesis-agg deaggregate",
    )

    tick_rates: dict[str, float] = {}
    tick_ratios: dict[str, float] = {}
    for mode in ("full", "quote", "ltp"):
        ticks = [kite_tick(rng, mode) for _ in range(2000)]
        rates, ratios = interleaved_rates(encoders(ticks), len(ticks), "json, shared encoder")
        tick_rates[mode] = rates["encode_tick"]
        tick_ratios[mode] = ratios["encode_tick"]
    full_ticks = [kite_tick(rng, "full") for _ in range(2000)]
    dumps_rates, dumps_ratios = interleaved_rates(
        {
            "json, shared encoder": lambda: [json_anchor(t, "NIFTY") for t in full_ticks],
            "json.dumps per call": lambda: [json_dumps_per_call(t, "NIFTY") for t in full_ticks],
        },
        len(full_ticks),
        "json, shared encoder",
        rounds=3,
    )

    greeks_row = _greeks_row()
    greeks_rates, _ = interleaved_rates(
        {"encode_greeks": lambda: [encode_greeks(greeks_row) for _ in range(1000)]},
        1000,
        "encode_greeks",
        rounds=3,
    )

    return Result(
        name="records",
        title="Kinesis record codec (ticker_core.records)",
        method=(
            f"{USER_RECORDS:,} tick user records (quote ticks as encode_tick writes them, "
            f"350-700 bytes, mean {mean_size:.0f}), keyed by 20 underlyings weighted towards "
            "NIFTY and BANKNIFTY, aggregated per key into 50 KiB KPL records (the KPL "
            "default), each aggregate serialised with its MD5. The anchor is aws-kinesis-agg "
            "with one RecordAggregator per key. De-aggregation reads the same records as "
            "Lambda event records (base64). Tick encoding writes kiteconnect-shaped ticks "
            "with the feed envelope; the anchor writes the identical JSON with the json "
            "module (dict in schema order, shared JSONEncoder). Ratios are medians of "
            "per-round ratios (tools/benchmarking.py)."
        ),
        comparisons=[
            Comparison(
                "Aggregator",
                "aws-kinesis-agg RecordAggregator",
                aggregation["Aggregator"],
                target=1.5,
            ),
            Comparison(
                "RecordBatcher (aggregate + pack requests)",
                "aws-kinesis-agg RecordAggregator",
                aggregation["RecordBatcher (aggregate + pack requests)"],
                target=1.3,
            ),
            Comparison(
                "deaggregate_event_record",
                "aws-kinesis-agg deaggregate",
                deaggregation["deaggregate_event_record"],
            ),
            Comparison(
                "encode_tick, full mode", "json, shared encoder", tick_ratios["full"], target=1.3
            ),
            Comparison("encode_tick, quote mode", "json, shared encoder", tick_ratios["quote"]),
            Comparison("encode_tick, ltp mode", "json, shared encoder", tick_ratios["ltp"]),
            Comparison(
                "json.dumps per call", "json, shared encoder", dumps_ratios["json.dumps per call"]
            ),
        ],
        figures=[
            Figure("mean user record size", mean_size, "bytes"),
            Figure("Aggregator", agg_rates["Aggregator"], "user records/s"),
            Figure(
                "RecordBatcher",
                agg_rates["RecordBatcher (aggregate + pack requests)"],
                "user records/s",
            ),
            Figure(
                "aws-kinesis-agg RecordAggregator",
                agg_rates["aws-kinesis-agg RecordAggregator"],
                "user records/s",
            ),
            Figure(
                "deaggregate_event_record",
                deagg_rates["deaggregate_event_record"],
                "user records/s",
            ),
            Figure("encode_tick, full mode (5-level depth)", tick_rates["full"], "ticks/s"),
            Figure("encode_tick, quote mode", tick_rates["quote"], "ticks/s"),
            Figure("encode_tick, ltp mode", tick_rates["ltp"], "ticks/s"),
            Figure(
                "json, shared encoder, full mode", dumps_rates["json, shared encoder"], "ticks/s"
            ),
            Figure("encode_greeks", greeks_rates["encode_greeks"], "rows/s"),
        ],
        checks=[
            (
                "aws-kinesis-agg de-aggregates every batcher record, in order",
                _aws_reads_ours(events, records),
            ),
            (
                "encode_tick equals the json anchor byte for byte (full ticks)",
                all(
                    encode_tick(t, underlying="NIFTY", received_at=RECEIVED_AT, **ENVELOPE)
                    == json_anchor(t, "NIFTY")
                    for t in full_ticks[:200]
                ),
            ),
            ("encoded ticks are valid tick.v1.json", _valid_ticks(full_ticks[:50])),
        ],
        notes=[
            "Aggregation cost has a floor in MD5 over every byte (the format's digest), "
            "which both sides pay.",
            "At 100,000 ticks/s the feed spends roughly 100,000 / (encode rate) cores on "
            "encoding alone; full-mode ticks with depth dominate.",
        ],
    )


def _aws_reads_ours(events: list[dict[str, Any]], records: list[tuple[str, bytes]]) -> bool:
    """Whether aws-kinesis-agg finds every user record, each key's in the order added."""
    out = [
        (r["kinesis"]["partitionKey"], base64.b64decode(r["kinesis"]["data"]))
        for r in deaggregate_records(events)
    ]
    return len(out) == len(records) and all(
        [d for k, d in out if k == key] == [d for k, d in records if k == key]
        for key in set(UNDERLYINGS)
    )


def _valid_ticks(ticks: list[dict[str, Any]]) -> bool:
    schema = json.loads(resources.files("ticker_core.schemas").joinpath("tick.v1.json").read_text())
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    return all(
        not list(
            validator.iter_errors(
                json.loads(encode_tick(t, underlying="NIFTY", received_at=RECEIVED_AT, **ENVELOPE))
            )
        )
        for t in ticks
    )


def _greeks_row() -> dict[str, Any]:
    """A row whose numbers are all finite floats (their values do not matter for speed)."""
    names = ("strike", "price", "forward", "t_years", "rate", "iv", "delta", "gamma", "theta")
    row: dict[str, Any] = {name: 1234.56789 * (i + 1) for i, name in enumerate(names)}
    row.update(vega=9.87, rho=1.52, raw={"theta": -4526.1, "vega": 987.2, "rho": 152.3})
    row.update(
        instrument_token=12345602,
        tradingsymbol="BANKNIFTY26D0152000PE",
        underlying="BANKNIFTY",
        expiry=datetime(2026, 12, 1).date(),
        option_type="PE",
        forward_source="parity",
        reason=None,
        exchange_timestamp=datetime(2026, 11, 27, 9, 15, 3, tzinfo=IST),
        as_of=datetime(2026, 11, 27, 9, 15, 3, tzinfo=IST),
        computed_at=RECEIVED_AT,
        source={
            "shard_id": "shardId-000000000001",
            "sequence_number": "1",
            "sub_sequence_number": 0,
        },
    )
    return row
