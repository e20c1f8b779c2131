"""market_api: option chains and a month of candles through the local API Gateway, beside bare SQL.

The database holds a trading month (the last 22 NSE trading days, 375
minutes each) of minute bars for 1,000 instruments (8.25 million bars in
day partitions, as the persist function lays them out) and one trading day
of ticks for one option chain (200 strikes, a call and a put each, and the
same-expiry future: 401 instruments ticking every 5 s, about 1.8 million
ticks). The day's instruments snapshot lists exactly these instruments.

Measured on one loopback stack (``sandbox.api_stack``), each request through
the local API Gateway (Cognito token check, the market-data function in a
worker process, PostgreSQL), and in the same rounds the bare SQL the route
runs (the same query on a direct asyncpg connection):

1. **Option chain, 200 strikes**: ``GET /market/option-chain/BENCH`` (latest
   price of 401 instruments, forward, IV and Greeks of 400 options) against
   the latest-price query for the same 401 tokens. Target: p99 <= 50 ms.
2. **One month of 1m candles**: ``GET /market/candles/<equity>?interval=1m``
   over the month (8,250 candles) against the minute-candle query. Target:
   p99 <= 100 ms.
3. The same for an option of the chain (its candles carry IV and Greeks,
   so the future's and the other side's bars are read too): recorded, no target.

Each series is warmed, then timed over ``ROUNDS`` requests alternating API
and bare SQL. An API request is timed until its whole answer is read (not
parsed: that is the client's own work); a SQL one until asyncpg has decoded
its rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from tools.benchmarking import Comparison, Figure, Result, benchmark

ROUNDS = 200
STRIKES = 200
INSTRUMENTS = 1000
TRADING_DAYS = 22
TICK_EVERY_S = 5
UNDERLYING = "BENCH"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _universe(expiry: date) -> tuple[bytes, list[int], list[int], int]:
    """The snapshot: a 200-strike chain and its future, equities to 1,000 instruments.

    Returns (CSV, every token with bars, the chain's option tokens, the future's token).
    """
    from ticker_core.instruments import (
        Instrument,
        InstrumentType,
        instrument_token,
        write_instruments_csv,
    )

    def make(exchange_token: int, symbol: str, kind: InstrumentType, **fields: Any) -> Instrument:
        segment = fields.pop("segment")
        return Instrument(
            instrument_token=instrument_token(exchange_token, segment),
            exchange_token=exchange_token,
            tradingsymbol=symbol,
            name=fields.pop("name", symbol),
            last_price=fields.pop("last_price", 0.0),
            expiry=fields.pop("expiry", None),
            strike=fields.pop("strike", 0.0),
            tick_size=0.05,
            lot_size=fields.pop("lot_size", 1),
            instrument_type=kind,
            segment=segment,
            exchange=fields.pop("exchange", "NSE"),
        )

    tag = f"{expiry:%y%b}".upper()
    future = make(
        70_000, f"{UNDERLYING}{tag}FUT", InstrumentType.FUT, segment="NFO-FUT",
        exchange="NFO", name=UNDERLYING, expiry=expiry, lot_size=50,
    )  # fmt: skip
    options = []
    for n in range(STRIKES):
        strike = 20_000.0 + 50 * n
        for m, kind in enumerate((InstrumentType.CE, InstrumentType.PE)):
            options.append(
                make(
                    70_001 + 2 * n + m,
                    f"{UNDERLYING}{tag}{strike:g}{kind}",
                    kind,
                    segment="NFO-OPT",
                    exchange="NFO",
                    name=UNDERLYING,
                    expiry=expiry,
                    strike=strike,
                    lot_size=50,
                )
            )
    equities = [
        make(80_000 + n, f"EQ{n:04d}", InstrumentType.EQ, segment="NSE", last_price=1000.0)
        for n in range(INSTRUMENTS - len(options) - 1)
    ]
    everything = [future, *options, *equities]
    csv = write_instruments_csv(everything).encode()
    return (
        csv,
        [i.instrument_token for i in everything],
        [o.instrument_token for o in options],
        future.instrument_token,
    )


def _trading_days(before: date, count: int) -> list[date]:
    from ticker_core.calendar import NseCalendar

    calendar = NseCalendar.load()
    days: list[date] = []
    day = before - timedelta(days=1)
    while len(days) < count:
        if calendar.is_trading_day(day):
            days.append(day)
        day -= timedelta(days=1)
    return sorted(days)


BARS_SQL = """
insert into market.bars_1m
    (instrument_token, minute, open, high, low, close, open_ts, close_ts,
     cum_volume_open, cum_volume_close, oi, tick_count)
select t.token, m.minute, p, p + 1, p - 1, p + 0.5,
       m.minute, m.minute + interval '59 seconds',
       m.n * 100, m.n * 100 + 50, 1000 + m.n, 12
from unnest($1::bigint[]) as t(token)
cross join lateral (
    select $2::timestamptz + (k * interval '1 minute') as minute, k as n
    from generate_series(0, 374) as k
) m
cross join lateral (select 100 + (t.token % 997) + m.n * 0.01 as p) price
"""
TICKS_SQL = """
insert into market.ticks
    (ts, instrument_token, underlying, mode, last_price, volume_traded, oi, exchange_timestamp,
     received_at, src_shard, src_seq, src_subseq)
select $2::timestamptz + (k * $3::interval), t.token, 'BENCH', 'full',
       greatest(0.05, 5 + (t.token % 400) + (k % 17) * 0.05), k * 10, 1000 + k,
       $2::timestamptz + (k * $3::interval), $2::timestamptz + (k * $3::interval),
       'shardId-000000000000', t.token * 100000 + k, 0
from unnest($1::bigint[]) as t(token)
cross join generate_series(0, $4::int - 1) as k
"""


async def _fill(db: Any, bar_tokens: list[int], chain_tokens: list[int], days: list[date]) -> int:
    import asyncpg

    from lambdas.common.db import connection_parameters
    from lambdas.persist.dal import PartitionManager
    from sandbox.stack import database_settings
    from ticker_core.tz import ist_date

    conn = await asyncpg.connect(**connection_parameters(database_settings(db)))
    try:
        today_open = datetime.now(UTC).replace(hour=3, minute=45, second=0, microsecond=0)
        if today_open > datetime.now(UTC):
            today_open -= timedelta(days=1)
        await PartitionManager().ensure(conn, [*days, ist_date(today_open)])
        for day in days:
            open_at = datetime(day.year, day.month, day.day, 3, 45, tzinfo=UTC)  # 09:15 IST
            await conn.execute(BARS_SQL, bar_tokens, open_at)
        ticks = 375 * 60 // TICK_EVERY_S
        await conn.execute(
            TICKS_SQL, chain_tokens, today_open, timedelta(seconds=TICK_EVERY_S), ticks
        )
        await conn.execute("analyze market.bars_1m")
        await conn.execute("analyze market.ticks")
        return int(await conn.fetchval("select count(*) from market.ticks"))
    finally:
        await conn.close()


def _series(api: Callable[[], None], bare: Callable[[], None]) -> tuple[list[float], list[float]]:
    for _ in range(5):
        api()
        bare()
    api_ms: list[float] = []
    bare_ms: list[float] = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        api()
        api_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        bare()
        bare_ms.append((time.perf_counter() - started) * 1000)
    return api_ms, bare_ms


@benchmark("market_api")
def market_api() -> Result:
    """Run the three measurements (module docstring)."""
    import asyncpg

    from lambdas.api.dal.market import LATEST_PRICES, MINUTE_BARS
    from lambdas.common.db import connection_parameters
    from sandbox.accounts import fetch
    from sandbox.api_stack import api_stack
    from sandbox.moto_server import MotoServer
    from sandbox.postgres import EmbeddedPostgres
    from sandbox.stack import database_settings
    from sandbox.trading import api_call
    from ticker_core.tz import IST, ist_midnight_before

    today = datetime.now(UTC).astimezone(IST).date()
    expiry = today + timedelta(days=30)
    csv, bar_tokens, option_tokens, future_token = _universe(expiry)
    days = _trading_days(today, TRADING_DAYS)
    month_start = datetime(days[0].year, days[0].month, days[0].day, 3, 45, tzinfo=UTC)
    month_end = datetime(days[-1].year, days[-1].month, days[-1].day, 10, 0, tzinfo=UTC)
    equity = bar_tokens[-1]
    option = option_tokens[STRIKES]  # a call mid-chain
    with (
        MotoServer() as moto,
        EmbeddedPostgres() as pg,
        api_stack(moto, pg.info, accounts=1, environments=1, snapshot_csv=csv) as stack,
    ):
        started = time.perf_counter()
        ticks = asyncio.run(_fill(stack.db, bar_tokens, [*option_tokens, future_token], days))
        fill_s = time.perf_counter() - started
        token = stack.api.trader.id_token
        chain_url = f"{stack.api.url}/market/option-chain/{UNDERLYING}?expiry={expiry}"
        span = f"from={quote(month_start.isoformat())}&to={quote(month_end.isoformat())}"

        def get(url: str) -> Callable[[], None]:
            def call() -> None:
                answer = fetch("GET", url, token=token)  # read whole; parsing is the client's
                if answer.status != 200 or not answer.body:
                    raise RuntimeError(f"{url}: HTTP {answer.status} {answer.body[:200]!r}")

            return call

        loop = asyncio.new_event_loop()
        conn = loop.run_until_complete(
            asyncpg.connect(**connection_parameters(database_settings(stack.db)))
        )

        def sql(query: str, *args: Any) -> Callable[[], None]:
            def call() -> None:
                coro: Coroutine[Any, Any, Any] = conn.fetch(query, *args)
                loop.run_until_complete(coro)

            return call

        since = datetime.now(UTC) - timedelta(days=7)
        context = ist_midnight_before(month_start)
        try:
            chain = _series(
                get(chain_url), sql(LATEST_PRICES, [*option_tokens, future_token], since)
            )
            candles = _series(
                get(f"{stack.api.url}/market/candles/{equity}?interval=1m&{span}"),
                sql(MINUTE_BARS, equity, context, month_end),
            )

            def option_bare() -> None:
                for t in (option, option + 256, future_token):  # the call, its put, the future
                    sql(MINUTE_BARS, t, context, month_end)()

            option_series = _series(
                get(f"{stack.api.url}/market/candles/{option}?interval=1m&{span}"), option_bare
            )
            status, body, _ = api_call(
                "GET", f"{stack.api.url}/market/candles/{equity}?interval=1m&{span}", token=token
            )
            candle_count = len(body["data"]["candles"]) if status == 200 else 0
            status, body, _ = api_call("GET", chain_url, token=token)
            strike_count = len(body["data"]["strikes"]) if status == 200 else 0
        finally:
            loop.run_until_complete(conn.close())
            loop.close()

    def p(values: list[float], q: float) -> float:
        return _percentile(values, q)

    chain_p99, candles_p99 = p(chain[0], 0.99), p(candles[0], 0.99)
    return Result(
        name="market_api",
        title="Market data: option chain and a month of 1m candles through the local API Gateway",
        method=__doc__ or "",
        figures=[
            Figure("database fill (8.25M bars, a day of ticks for 401 instruments)", fill_s, "s"),
            Figure("ticks stored", ticks, "rows"),
            Figure("option chain (200 strikes) via API p50", p(chain[0], 0.5), "ms"),
            Figure("option chain (200 strikes) via API p99", chain_p99, "ms"),
            Figure("option chain bare SQL p50", p(chain[1], 0.5), "ms"),
            Figure("option chain bare SQL p99", p(chain[1], 0.99), "ms"),
            Figure("month of 1m candles via API p50", p(candles[0], 0.5), "ms"),
            Figure("month of 1m candles via API p99", candles_p99, "ms"),
            Figure("month of 1m candles bare SQL p50", p(candles[1], 0.5), "ms"),
            Figure("month of 1m candles bare SQL p99", p(candles[1], 0.99), "ms"),
            Figure("candles per month answer", candle_count, "candles"),
            Figure(
                "option's month of 1m candles with IV/Greeks via API p50",
                p(option_series[0], 0.5),
                "ms",
            ),
            Figure(
                "option's month of 1m candles with IV/Greeks via API p99",
                p(option_series[0], 0.99),
                "ms",
            ),
            Figure("option's candles bare SQL (3 series) p50", p(option_series[1], 0.5), "ms"),
        ],
        comparisons=[
            Comparison("option chain via API p99", "bare SQL p99", p(chain[1], 0.99) / chain_p99),
            Comparison(
                "month of 1m candles via API p99", "bare SQL p99", p(candles[1], 0.99) / candles_p99
            ),
        ],
        checks=[
            ("option chain (200 strikes) p99 <= 50 ms", chain_p99 <= 50.0),
            ("month of 1m candles p99 <= 100 ms", candles_p99 <= 100.0),
            (f"the chain answered {STRIKES} strikes", strike_count == STRIKES),
            (f"a month is {TRADING_DAYS * 375} candles", candle_count == TRADING_DAYS * 375),
        ],
        notes=[
            "ratios are bare SQL / API at p99: the share of the answer's time the query is",
            f"{ROUNDS} requests per series after 5 warm-up requests; one execution environment "
            "per function, started before measuring (as provisioned concurrency)",
        ],
    )
