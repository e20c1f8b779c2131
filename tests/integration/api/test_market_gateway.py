"""Market data through the local API Gateway, against ticks stored as the persist path stores them.

The option chain's IV and Greeks must equal ticker_core's for the same
stored prices; candles must equal a plain SQL aggregation of the stored
ticks; the part of a range before the first stored bar must come from Kite's
historical API (kite_sim's), marked, without overlap.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from lambdas.common.db import connection_parameters
from lambdas.persist.dal import PartitionManager, write_batch
from lambdas.persist.logic import decode
from sandbox.api_stack import Stack, api_stack
from sandbox.moto_server import MotoServer
from sandbox.postgres import ConnectionInfo
from sandbox.stack import database_settings
from testkit.factories import tick_record, user_record
from ticker_core.calendar import NseCalendar, year_fraction
from ticker_core.instruments import InstrumentRegistry, OptionChain, parse_instruments
from ticker_core.options import choose_forward, greeks, implied_vol
from ticker_core.tz import IST

pytestmark = pytest.mark.integration

RATE = 0.065  # the market function's default, as the greeks function's


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, postgres: ConnectionInfo) -> Iterator[Stack]:
    with api_stack(moto_server, postgres, environments=1) as running:
        yield running


@pytest.fixture(scope="module")
def registry(stack: Stack) -> InstrumentRegistry:
    simulator = stack.simulator
    csv = stack.sim.call(lambda: simulator.market.instruments_csv(None))
    return InstrumentRegistry(parse_instruments(csv).instruments)


class Sequence:
    """Kinesis sequence numbers for the stored ticks (every one new)."""

    def __init__(self) -> None:
        self.n = 49_000_000_000_000_000

    def __call__(self) -> str:
        self.n += 1
        return str(self.n)


SEQUENCE = Sequence()


def store_ticks(stack: Stack, records: list[dict[str, Any]]) -> None:
    """Write tick/1 records as one persist batch (ticks and their minute bars)."""

    async def write() -> None:
        conn = await asyncpg.connect(**connection_parameters(database_settings(stack.db)))
        try:
            await conn.execute("set timezone to 'UTC'")
            rows = [
                decode(
                    user_record(json.dumps(r).encode(), SEQUENCE(), partition_key=r["underlying"])
                )[1]
                for r in records
            ]
            await write_batch(conn, PartitionManager(), rows, [])
        finally:
            await conn.close()

    asyncio.run(write())


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- option chain


def _nearest_chain(registry: InstrumentRegistry, today: date) -> OptionChain:
    expiry = next(e for e in registry.expiries("NIFTY") if e > today)
    chain = registry.option_chain("NIFTY", expiry)
    assert chain is not None
    return chain


def test_the_chains_greeks_equal_ticker_cores_for_the_stored_inputs(
    stack: Stack, registry: InstrumentRegistry
) -> None:
    # Given a NIFTY chain whose every option has stored ticks of a few seconds ago
    now = datetime.now(UTC)
    chain = _nearest_chain(registry, now.astimezone(IST).date())
    strikes = chain.strikes
    forward = strikes[len(strikes) // 2] + 7.5
    t = year_fraction(now, chain.expiry)
    rng = random.Random(3)
    records = []
    for n, row in enumerate(chain.rows):
        vol = 0.13 + 0.05 * abs(row.strike - forward) / forward + rng.uniform(0, 0.01)
        for option, call in ((row.ce, True), (row.pe, False)):
            if option is None:
                continue
            price = max(
                0.05, round(float(greeks(forward, row.strike, t, RATE, vol, call).price), 2)
            )
            ts = now - timedelta(seconds=1 + n % 5)
            records.append(tick_record(option.instrument_token, price, ts, underlying="NIFTY"))
    store_ticks(stack, records)
    # When the chain is asked for through the gateway
    status, body, _ = stack.trader_call(
        "GET", f"/market/option-chain/NIFTY?expiry={chain.expiry.isoformat()}"
    )
    assert status == 200, body
    data = body["data"]
    # Then, from the latest stored price of each option, ticker_core gives the same numbers
    stored = {
        r["instrument_token"]: r
        for r in stack.sql(
            "select distinct on (instrument_token) instrument_token, last_price, oi, ts "
            "from market.ticks where instrument_token = any($1::bigint[]) "
            "order by instrument_token, ts desc",
            [o.instrument_token for row in chain.rows for o in (row.ce, row.pe) if o],
        )
    }
    as_of = _parse(data["as_of"])
    t = year_fraction(as_of, chain.expiry)
    assert data["t_years"] == t
    future = next((f for f in registry.futures("NIFTY") if f.expiry == chain.expiry), None)
    future_price = (
        stored[future.instrument_token]["last_price"]
        if future and future.instrument_token in stored
        else None
    )
    calls = [stored[r.ce.instrument_token]["last_price"] if r.ce else math.nan for r in chain.rows]
    puts = [stored[r.pe.instrument_token]["last_price"] if r.pe else math.nan for r in chain.rows]
    expected = choose_forward(future_price, strikes, calls, puts, t, RATE)
    assert data["forward"]["source"] == expected.source
    assert data["forward"]["value"] == expected.forward
    assert data["atm_strike"] == min(strikes, key=lambda k: (abs(k - expected.forward), k))
    compared = 0
    for strike in data["strikes"]:
        for side, call in (("ce", True), ("pe", False)):
            option = strike[side]
            if option is None:
                continue
            row = stored[option["instrument_token"]]
            vol = implied_vol(row["last_price"], expected.forward, strike["strike"], t, RATE, call)
            values = greeks(expected.forward, strike["strike"], t, RATE, vol.iv, call)
            got = option["greeks"]
            assert option["last_price"] == row["last_price"]
            assert _parse(option["timestamp"]) == row["ts"]
            if math.isnan(float(vol.iv)):
                assert got["iv"] is None
                continue
            assert [got[k] for k in ("iv", "delta", "gamma", "theta", "vega", "rho")] == [
                float(vol.iv), float(values.delta), float(values.gamma), float(values.theta),
                float(values.vega), float(values.rho),
            ]  # fmt: skip
            compared += 1
    assert compared >= len(chain.rows)  # most options have a value


# --------------------------------------------------------------------------- candles


def _previous_trading_day(stack: Stack) -> date:
    sim_today = stack.sim.call(lambda: stack.simulator.clock.now()).astimezone(IST).date()
    calendar = NseCalendar.load()
    day = sim_today - timedelta(days=1)
    while not calendar.is_trading_day(day):
        day -= timedelta(days=1)
    return day


def _store_session(
    stack: Stack, token: int, underlying: str, start: datetime, minutes: int
) -> None:
    rng = random.Random(token)
    price, volume = 1500.0, 10_000
    records = []
    for second in range(0, minutes * 60, 7):
        price = round(price * (1 + rng.gauss(0, 0.0008)), 2)
        volume += rng.randint(1, 50)
        ts = start + timedelta(seconds=second)
        records.append(tick_record(token, price, ts, underlying=underlying, volume=volume, oi=0))
    store_ticks(stack, records)


PLAIN_CANDLES = """
with t as (
    select ts, last_price, volume_traded,
           date_bin($4::interval, ts, '2000-01-03 03:45:00+00') as bucket,
           row_number() over (order by ts, src_shard, src_seq, src_subseq) as n
    from market.ticks where instrument_token = $1 and ts >= $2 and ts < $3
),
b as (
    select bucket,
           (array_agg(last_price order by n))[1] as open,
           max(last_price) as high,
           min(last_price) as low,
           (array_agg(last_price order by n desc))[1] as close,
           (array_agg(volume_traded order by n desc))[1] as last_volume,
           (array_agg(volume_traded order by n))[1] as first_volume
    from t group by bucket
)
select bucket, open, high, low, close,
       last_volume - coalesce(lag(last_volume) over (order by bucket), first_volume) as volume
from b order by bucket
"""


@pytest.mark.parametrize(
    ("interval", "step"), [("1m", "1 minute"), ("5m", "5 minutes"), ("15m", "15 minutes")]
)
def test_candles_equal_a_plain_sql_aggregation_of_the_stored_ticks(
    stack: Stack, registry: InstrumentRegistry, interval: str, step: str
) -> None:
    # Given 40 minutes of an equity's ticks stored (from the session open)
    instrument = registry.by_symbol("NSE", "INFY")
    assert instrument is not None
    day = _previous_trading_day(stack)
    start = datetime.combine(day, time(9, 15), IST)
    if not stack.sql(
        "select 1 from market.ticks where instrument_token = $1 and ts >= $2 limit 1",
        instrument.instrument_token, start,
    ):  # fmt: skip
        _store_session(stack, instrument.instrument_token, "INFY", start, 40)
    end = start + timedelta(minutes=40)
    # When its candles are asked for
    query = f"interval={interval}&from={quote(start.isoformat())}&to={quote(end.isoformat())}"
    status, body, _ = stack.trader_call(
        "GET", f"/market/candles/{instrument.instrument_token}?{query}"
    )
    assert status == 200, body
    data = body["data"]
    # Then they are exactly the plain aggregation of the ticks, all from storage
    plain = stack.sql(
        PLAIN_CANDLES,
        instrument.instrument_token,
        start,
        end,
        timedelta(minutes=int(step.split()[0])),
    )
    got = [(_parse(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in data["candles"]]
    assert got == [
        (r["bucket"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in plain
    ]
    assert {r[7] for r in data["candles"]} == {"stored"}
    assert data["missing"] == []


def test_before_the_first_stored_bar_candles_come_from_kite_without_overlap(
    stack: Stack, registry: InstrumentRegistry
) -> None:
    # Given an instrument stored from 10:00 on a trading day
    instrument = registry.by_symbol("NSE", "RELIANCE")
    assert instrument is not None
    day = _previous_trading_day(stack)
    stored_from = datetime.combine(day, time(10, 0), IST)
    _store_session(stack, instrument.instrument_token, "RELIANCE", stored_from, 20)
    # When 09:30-10:20 is asked for
    start, end = stored_from - timedelta(minutes=30), stored_from + timedelta(minutes=20)
    query = f"interval=5m&from={quote(start.isoformat())}&to={quote(end.isoformat())}"
    status, body, _ = stack.trader_call("GET", f"/market/candles/NSE:RELIANCE?{query}")
    assert status == 200, body
    rows = body["data"]["candles"]
    # Then 09:30-09:55 come from Kite, 10:00-10:15 from storage, each bucket once, in order
    times = [_parse(r[0]) for r in rows]
    assert times == [start + timedelta(minutes=5 * k) for k in range(10)]
    assert [r[7] for r in rows] == ["kite"] * 6 + ["stored"] * 4
    assert body["data"]["missing"] == []
