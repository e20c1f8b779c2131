"""Regenerate the sample payloads in ``events/`` (data only; no secrets).

Every sample is built with the service's own codecs from fixed, made-up
values, so the files always match the code that reads them; a unit test
regenerates them and fails if a committed file drifted.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ticker_core.kite_wire import encode_text
from ticker_core.records import Aggregator, encode_greeks, encode_tick, lambda_event_record
from ticker_core.tz import IST

EVENTS = Path(__file__).resolve().parent.parent / "events"
RECEIVED = datetime(2026, 11, 27, 4, 0, 0, 123456, tzinfo=UTC)
EXCHANGE_TS = datetime(2026, 11, 27, 9, 30, 0, tzinfo=IST)


def _full_tick(token: int, price: float) -> dict[str, Any]:
    level = {"quantity": 75, "price": price, "orders": 3}
    return {
        "tradable": True,
        "mode": "full",
        "instrument_token": token,
        "last_price": price,
        "last_traded_quantity": 75,
        "average_traded_price": price,
        "volume_traded": 123450,
        "total_buy_quantity": 9000,
        "total_sell_quantity": 8700,
        "ohlc": {"open": price, "high": price + 5, "low": price - 5, "close": price - 2},
        "change": 1.2,
        "last_trade_time": EXCHANGE_TS,
        "oi": 456000,
        "oi_day_high": 460000,
        "oi_day_low": 440000,
        "exchange_timestamp": EXCHANGE_TS,
        "depth": {"buy": [level] * 5, "sell": [level] * 5},
    }


def _index_tick(token: int, price: float) -> dict[str, Any]:
    return {
        "tradable": False,
        "mode": "full",
        "instrument_token": token,
        "last_price": price,
        "ohlc": {"high": price + 40, "low": price - 60, "open": price - 10, "close": price - 20},
        "change": 0.08,
        "exchange_timestamp": EXCHANGE_TS,
    }


def _lambda_record(
    data: bytes, partition_key: str, sequence: str, stream: str, shard: str
) -> dict[str, Any]:
    return lambda_event_record(
        data,
        partition_key=partition_key,
        sequence_number=sequence,
        shard_id=shard,
        stream_arn=f"arn:aws:kinesis:ap-south-1:123456789012:stream/{stream}",
        arrival=1795752000.123,
        function_role_arn="arn:aws:iam::123456789012:role/ticker-stream-consumer",
    )


def ticks_event() -> dict[str, Any]:
    """A Lambda event from the ``ticks`` stream: one KPL aggregate of three ticks."""
    aggregate = Aggregator()
    for tick, symbol, exchange in (
        (_index_tick(256265, 24015.5), "NIFTY 50", "NSE"),
        (_full_tick(13368834, 24110.0), "NIFTY26DECFUT", "NFO"),
        (_full_tick(12345602, 212.35), "NIFTY26D0324000CE", "NFO"),
    ):
        data = encode_tick(
            tick, underlying="NIFTY", received_at=RECEIVED, exchange=exchange, tradingsymbol=symbol
        )
        aggregate.try_add("NIFTY", data)
    sequence = "49658000000000000000000000000000000000000000000001"
    record = _lambda_record(aggregate.build(), "NIFTY", sequence, "ticks", "shardId-000000000000")
    return {"Records": [record]}


def greeks_event() -> dict[str, Any]:
    """A Lambda event from the ``greeks`` stream: one Greeks row, not aggregated."""
    row = {
        "instrument_token": 12345602,
        "tradingsymbol": "NIFTY26D0324000CE",
        "underlying": "NIFTY",
        "expiry": "2026-12-03",
        "strike": 24000.0,
        "option_type": "CE",
        "price": 212.35,
        "forward": 24110.0,
        "forward_source": "future",
        "t_years": 0.01780,
        "rate": 0.065,
        "iv": 0.1234,
        "delta": 0.6012,
        "gamma": 0.00091,
        "theta": -14.2,
        "vega": 12.7,
        "rho": -0.038,
        "raw": {"theta": -5183.0, "vega": 1270.0, "rho": -3.8},
        "reason": None,
        "exchange_timestamp": EXCHANGE_TS,
        "as_of": EXCHANGE_TS,
        "computed_at": RECEIVED,
        "source": {
            "shard_id": "shardId-000000000000",
            "sequence_number": "49658000000000000000000000000000000000000000000001",
            "sub_sequence_number": 2,
        },
    }
    sequence = "49658100000000000000000000000000000000000000000007"
    record = _lambda_record(encode_greeks(row), "NIFTY", sequence, "greeks", "shardId-000000000001")
    return {"Records": [record]}


def kite_order_update() -> dict[str, Any]:
    """An ``order`` text message as Kite sends it on the WebSocket."""
    data: dict[str, Any] = {
        "order_id": "261127000000001",
        "exchange_order_id": "1100000000000001",
        "status": "COMPLETE",
        "tradingsymbol": "NIFTY26D0324000CE",
        "exchange": "NFO",
        "transaction_type": "BUY",
        "order_type": "LIMIT",
        "product": "NRML",
        "variety": "regular",
        "quantity": 75,
        "filled_quantity": 75,
        "pending_quantity": 0,
        "price": 212.5,
        "average_price": 212.35,
        "tag": "tsvc-3f9a1c",
        "order_timestamp": "2026-11-27 09:30:00",
        "exchange_timestamp": "2026-11-27 09:30:00",
    }
    return dict(json.loads(encode_text("order", data)))


SAMPLES = {
    "kinesis_ticks.json": ticks_event,
    "kinesis_greeks.json": greeks_event,
    "kite_order_update.json": kite_order_update,
}


def render(name: str) -> str:
    """The committed text of one sample."""
    return json.dumps(SAMPLES[name](), indent=2, sort_keys=True) + "\n"


def main() -> int:
    """Write every sample into ``events/``."""
    EVENTS.mkdir(exist_ok=True)
    for name in SAMPLES:
        (EVENTS / name).write_text(render(name))
        print(f"wrote events/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
