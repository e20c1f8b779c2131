"""Market data through the resolver over fakes: search, quotes, chains, candles and their Greeks."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from lambdas.api.candles import bucket_starts, stored_boundary
from lambdas.api.dal.market import MinuteSeries
from lambdas.api.errors import KiteCallError, KiteFailureKind
from lambdas.api.market import INTERVALS
from lambdas.api.market_models import Candles, OptionChain
from lambdas.api.models import Envelope
from testkit.factories import chain, index_instrument
from tests.unit.lambdas.api.account_fakes import NOW, TRADER, AccountRig, account_rig
from tests.unit.lambdas.api.fakes import equity
from ticker_core.calendar import year_fraction
from ticker_core.instruments import InstrumentRegistry
from ticker_core.options import forward_from_parity, greeks, implied_vol
from ticker_core.tz import IST

EXPIRY = date(2027, 1, 28)
WEEKLY = date(2026, 12, 3)
STRIKES = [float(k) for k in range(23500, 24550, 50)]  # 21 strikes
REGISTRY = InstrumentRegistry(
    [
        replace(index_instrument("NIFTY 50", 1001), last_price=24010.0),
        equity("INFY", 1594),
        *chain("NIFTY", EXPIRY, STRIKES, first_exchange_token=60_000, future=True),
        *chain("NIFTY", WEEKLY, STRIKES, first_exchange_token=61_000, future=False),
    ]
)
FUTURE = REGISTRY.futures("NIFTY")[0]
MONTHLY = REGISTRY.option_chain("NIFTY", EXPIRY)
WEEK = REGISTRY.option_chain("NIFTY", WEEKLY)
RATE = 0.065
INFY = REGISTRY.by_symbol("NSE", "INFY")


def tick(token: int, price: float, ts: datetime, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "instrument_token": token, "ts": ts, "mode": "full", "last_price": price,
        "last_traded_quantity": 1, "average_traded_price": price, "volume_traded": 1000,
        "total_buy_quantity": 10, "total_sell_quantity": 12, "open": price, "high": price,
        "low": price, "close": price, "change": 0.5, "last_trade_time": ts, "oi": 500,
        "oi_day_high": 600, "oi_day_low": 400,
        "depth": '{"buy":[[1.0,2,3]],"sell":[[1.1,4,5]]}',
    }  # fmt: skip
    row.update(extra)
    return row


def black_price(forward: float, strike: float, call: bool, t: float, vol: float) -> float:
    return float(greeks(forward, strike, t, RATE, vol, call).price)


def priced_rig(chain_rows, forward: float, *, future_price: float | None) -> AccountRig:  # type: ignore[no-untyped-def]
    """A rig whose store holds every option of ``chain_rows`` at a smile around ``forward``."""
    rig = account_rig(registry=REGISTRY, rate=RATE)
    t = year_fraction(NOW, chain_rows.expiry)
    for n, row in enumerate(chain_rows.rows):
        vol = 0.14 + 0.0004 * abs(row.strike - forward) / 10
        age = timedelta(seconds=n % 7 + 1)
        for option, call in ((row.ce, True), (row.pe, False)):
            price = round(black_price(forward, row.strike, call, t, vol), 2)
            rig.market_store.ticks[option.instrument_token] = tick(
                option.instrument_token, price, NOW - age
            )
    if future_price is not None:
        rig.market_store.ticks[FUTURE.instrument_token] = tick(
            FUTURE.instrument_token, future_price, NOW - timedelta(seconds=2)
        )
    return rig


# --------------------------------------------------------------------------- instruments


def test_search_filters_by_prefix_underlying_expiry_and_type() -> None:
    rig = account_rig(registry=REGISTRY)
    status, body, _ = rig.call(
        "GET", "/market/instruments?prefix=NIFTY26DEC235&instrument_type=CE", market=True,
        user=TRADER,
    )  # fmt: skip
    assert status == 200
    assert [i["tradingsymbol"] for i in body["data"]["instruments"]] == [
        "NIFTY26DEC23500CE", "NIFTY26DEC23550CE",
    ]  # fmt: skip
    data = rig.call(
        "GET", f"/market/instruments?underlying=NIFTY&expiry={WEEKLY}&limit=5", market=True
    )[1]["data"]
    assert len(data["instruments"]) == 5
    assert data["truncated"] is True
    assert {i["expiry"] for i in data["instruments"]} == {WEEKLY.isoformat()}


def test_lookup_by_token_or_symbol_and_unknown_is_404() -> None:
    rig = account_rig(registry=REGISTRY)
    assert INFY is not None
    by_symbol = rig.call("GET", "/market/instruments/NSE:INFY", market=True)[1]["data"]
    by_token = rig.call("GET", f"/market/instruments/{INFY.instrument_token}", market=True)[1][
        "data"
    ]
    assert by_symbol == by_token
    assert by_symbol["underlying"] == "INFY"
    assert by_symbol["lot_size"] == 1
    status, body, _ = rig.call("GET", "/market/instruments/NSE:NOSUCH", market=True)
    assert (status, body["code"]) == (404, "instrument_not_found")


# --------------------------------------------------------------------------- quotes


def test_quotes_answer_the_latest_tick_with_its_age_in_the_order_asked() -> None:
    rig = account_rig(registry=REGISTRY)
    assert INFY is not None
    rig.market_store.ticks[INFY.instrument_token] = tick(
        INFY.instrument_token, 1500.5, NOW - timedelta(seconds=3)
    )
    status, body, _ = rig.call(
        "GET", f"/market/quotes?i=NSE:INFY&i={FUTURE.instrument_token}", market=True
    )
    assert status == 200
    first, second = body["data"]["quotes"]
    assert first["instrument"] == "NSE:INFY"
    assert second["quote"] is None
    quote = first["quote"]
    assert (quote["last_price"], quote["age_seconds"], quote["volume"]) == (1500.5, 3.0, 1000)
    assert quote["depth"] == {
        "buy": [{"price": 1.0, "quantity": 2, "orders": 3}],
        "sell": [{"price": 1.1, "quantity": 4, "orders": 5}],
    }
    status, body, _ = rig.call("GET", "/market/quotes?i=NSE:INFY&i=NSE:NOSUCH", market=True)
    assert (status, body["details"][0]["field"]) == (422, "i[1]")


# --------------------------------------------------------------------------- option chain


def chain_answer(rig: AccountRig, query: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = rig.call("GET", f"/market/option-chain/{query}", market=True)
    if status == 200:
        Envelope[OptionChain].model_validate(body)  # the hand-written JSON is what the docs say
    return status, body


def test_the_chains_greeks_equal_ticker_cores_on_the_same_future_forward() -> None:
    # Given the monthly chain priced around 24010 and its future at 24012.5
    assert MONTHLY is not None
    rig = priced_rig(MONTHLY, 24010.0, future_price=24012.5)
    # When the chain is asked for
    status, body = chain_answer(rig, f"NIFTY?expiry={EXPIRY}")
    assert status == 200
    data = body["data"]
    # Then it is valued on the future, at the answer's instant, with ticker_core's math
    assert data["forward"]["source"] == "future"
    assert data["forward"]["value"] == 24012.5
    assert data["forward"]["future_token"] == FUTURE.instrument_token
    assert data["forward"]["age_seconds"] == 2.0
    assert data["atm_strike"] == 24000.0
    t = year_fraction(NOW, EXPIRY)
    assert data["t_years"] == pytest.approx(t, abs=0)
    assert data["rate"] == RATE
    _assert_ticker_core_greeks(rig, data, 24012.5, t)


def test_without_a_same_expiry_future_the_forward_is_put_call_parity() -> None:
    # Given the weekly chain (no weekly future listed)
    assert WEEK is not None
    rig = priced_rig(WEEK, 23987.0, future_price=24012.5)
    data = chain_answer(rig, f"NIFTY?expiry={WEEKLY}")[1]["data"]
    t = year_fraction(NOW, WEEKLY)
    stored = rig.market_store.ticks
    expected = forward_from_parity(
        WEEK.strikes,
        [stored[r.ce.instrument_token]["last_price"] for r in WEEK.rows],  # type: ignore[union-attr]
        [stored[r.pe.instrument_token]["last_price"] for r in WEEK.rows],  # type: ignore[union-attr]
        t, RATE,
    )  # fmt: skip
    assert data["forward"]["source"] == "parity"
    assert data["forward"]["value"] == expected.forward
    assert data["forward"]["parity_strikes"] == list(expected.strikes)
    assert data["atm_strike"] == 24000.0
    _assert_ticker_core_greeks(rig, data, expected.forward, t)


def _assert_ticker_core_greeks(rig: AccountRig, data: dict, forward: float, t: float) -> None:
    stored = rig.market_store.ticks
    for strike in data["strikes"]:
        for side, call in (("ce", True), ("pe", False)):
            option = strike[side]
            price = stored[option["instrument_token"]]["last_price"]
            vol = implied_vol(price, forward, strike["strike"], t, RATE, call)
            values = greeks(forward, strike["strike"], t, RATE, vol.iv, call)
            got = option["greeks"]
            if math.isnan(float(vol.iv)):
                assert got["iv"] is None
                assert got["reason"] is not None
                continue
            assert got["iv"] == float(vol.iv)
            assert [got[g] for g in ("delta", "gamma", "theta", "vega", "rho")] == [
                float(values.delta), float(values.gamma), float(values.theta),
                float(values.vega), float(values.rho),
            ]  # fmt: skip
            assert option["last_price"] == price
            assert option["oi"] == 500
            assert (
                option["age_seconds"]
                == (NOW - stored[option["instrument_token"]]["ts"]).total_seconds()
            )


def test_options_with_nothing_stored_have_no_price_and_say_why() -> None:
    rig = account_rig(registry=REGISTRY)
    data = chain_answer(rig, "NIFTY")[1]["data"]
    assert data["expiry"] == WEEKLY.isoformat()  # the nearest live expiry by default
    assert data["forward"] == {
        "value": None, "source": "none", "reason": "no_forward", "future_token": None,
        "parity_strikes": [], "age_seconds": None,
    }  # fmt: skip
    first = data["strikes"][0]["ce"]
    assert first["last_price"] is None
    assert first["greeks"]["reason"] == "no_price"
    status, body = chain_answer(rig, "NOSUCH")
    assert (status, body["code"]) == (404, "instrument_not_found")
    status, body = chain_answer(rig, "NIFTY?expiry=0")  # found by schemathesis: was 1970-01-01
    assert (status, body["code"]) == (422, "validation_error")


# --------------------------------------------------------------------------- candles

DAY = datetime(2026, 11, 27, 9, 15, tzinfo=IST)


def minute_bars(
    price: float, start: datetime, minutes: int, volume: float = 1000.0
) -> MinuteSeries:
    """Bars from ``start``: open ``price + m``, close half above, 100 traded a minute."""
    m = np.arange(minutes, dtype=np.float64)
    first = start.timestamp()
    return MinuteSeries(
        minute=first + 60 * m, open=price + m, high=price + m + 1, low=price + m - 1,
        close=price + m + 0.5, cum_volume_open=volume + 100 * m + 10,
        cum_volume_close=volume + 100 * m + 100, oi=np.full(minutes, 7.0),
        close_ts=first + 60 * m + 50,
    )  # fmt: skip


def candles(rig: AccountRig, ref: str, query: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = rig.call("GET", f"/market/candles/{ref}?{query}", market=True)
    if status == 200:
        Envelope[Candles].model_validate(body)  # the hand-written JSON is what the docs say
    return status, body


def test_candles_are_stored_where_there_are_bars_and_kites_before_without_overlap() -> None:
    # Given bars stored from 09:30 and Kite's history for the whole morning
    rig = account_rig(registry=REGISTRY)
    assert INFY is not None
    token = INFY.instrument_token
    rig.market_store.bars[token] = minute_bars(1500.0, DAY + timedelta(minutes=15), 30)
    rig.history.candles_by_token[token] = [
        {"date": (DAY + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%S%z"), "open": 1.0,
         "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10, "oi": 0}
        for m in range(45)
    ]  # fmt: skip
    # When 09:15-09:45 is asked for in 1m candles
    start, end = DAY, DAY + timedelta(minutes=30)
    query = f"from={start.isoformat()}&to={end.isoformat()}&interval=1m".replace("+", "%2B")
    status, body = candles(rig, "NSE:INFY", query)
    # Then 09:15-09:29 come from Kite, 09:30-09:44 from storage, marked, in order, once each
    assert status == 200, body
    data = body["data"]
    assert data["fields"] == ["date", "open", "high", "low", "close", "volume", "oi", "source"]
    rows = data["candles"]
    assert [r[7] for r in rows] == ["kite"] * 15 + ["stored"] * 15
    assert [r[0] for r in rows] == [(DAY + timedelta(minutes=m)).isoformat() for m in range(30)]
    assert rows[0][1:7] == [1.0, 2.0, 0.5, 1.5, 10, 0]
    # the first stored minute's volume: its own (the day's first bar: close - open cumulative)
    assert rows[15][1:7] == [1500.0, 1501.0, 1499.0, 1500.5, 90, 7]
    assert rows[16][5] == 100
    assert data["missing"] == []
    ((_, asked_from, asked_to, interval),) = rig.history.calls
    assert (asked_from, asked_to, interval) == (
        DAY, DAY + timedelta(minutes=14, seconds=59), "minute",
    )  # fmt: skip


def test_five_minute_candles_fold_the_minutes() -> None:
    rig = account_rig(registry=REGISTRY)
    assert INFY is not None
    rig.market_store.bars[INFY.instrument_token] = minute_bars(100.0, DAY, 12)
    query = f"from={DAY:%Y-%m-%d %H:%M:%S}&to={DAY + timedelta(minutes=12):%Y-%m-%d %H:%M:%S}"
    status, body = candles(rig, "NSE:INFY", f"{query}&interval=5m")
    assert status == 200, body
    rows = body["data"]["candles"]
    assert [r[:7] for r in rows] == [
        [DAY.isoformat(), 100.0, 105.0, 99.0, 104.5, 90 + 4 * 100, 7],
        [(DAY + timedelta(minutes=5)).isoformat(), 105.0, 110.0, 104.0, 109.5, 500, 7],
        [(DAY + timedelta(minutes=10)).isoformat(), 110.0, 112.0, 109.0, 111.5, 200, 7],
    ]


def test_when_kite_cannot_be_asked_the_stored_candles_still_come_and_missing_says_why() -> None:
    rig = account_rig(registry=REGISTRY)
    assert INFY is not None
    rig.market_store.bars[INFY.instrument_token] = minute_bars(1500.0, DAY, 5)
    rig.history.failure = KiteCallError(KiteFailureKind.LOGIN_REQUIRED, "nobody logged in")
    start = DAY - timedelta(days=1)
    query = f"from={start:%Y-%m-%d %H:%M:%S}&to={DAY + timedelta(minutes=5):%Y-%m-%d %H:%M:%S}"
    _status, body = candles(rig, "NSE:INFY", query)
    data = body["data"]
    assert [r[7] for r in data["candles"]] == ["stored"] * 5
    (missing,) = data["missing"]
    assert missing["reason"] == "kite_login_required"
    assert datetime.fromisoformat(missing["start"]) == start
    assert datetime.fromisoformat(missing["end"]) == DAY


def test_option_candles_carry_iv_and_greeks_on_the_future_else_parity_at_each_close() -> None:
    # Given 1m bars of a monthly call, its put and the same-expiry future (the future only
    # for the first three minutes)
    assert MONTHLY is not None
    row = MONTHLY.rows[10]
    call, put = row.ce, row.pe
    assert call is not None
    assert put is not None
    rig = account_rig(registry=REGISTRY, rate=RATE)
    rig.market_store.bars[call.instrument_token] = minute_bars(210.0, DAY, 5)
    rig.market_store.bars[put.instrument_token] = minute_bars(190.0, DAY, 5)
    rig.market_store.bars[FUTURE.instrument_token] = minute_bars(24020.0, DAY, 3)
    query = f"from={DAY:%Y-%m-%d %H:%M:%S}&to={DAY + timedelta(minutes=5):%Y-%m-%d %H:%M:%S}"
    _status, body = candles(rig, str(call.instrument_token), query)
    data = body["data"]
    assert data["fields"][8:] == ["iv", "delta", "gamma", "theta", "vega", "rho", "reason"]
    for m, candle in enumerate(data["candles"]):
        close_at = DAY + timedelta(minutes=m, seconds=50)
        t = year_fraction(close_at, EXPIRY)
        price = 210.0 + m + 0.5
        if m < 3:
            forward = 24020.0 + m + 0.5
        else:
            forward = row.strike + math.exp(RATE * t) * (price - (190.0 + m + 0.5))
        vol = implied_vol(price, forward, row.strike, t, RATE, True)
        values = greeks(forward, row.strike, t, RATE, vol.iv, True)
        expected = [float(vol.iv), *(float(getattr(values, g)) for g in (
            "delta", "gamma", "theta", "vega", "rho"))]  # fmt: skip
        assert candle[8:14] == pytest.approx(expected, rel=1e-12), m
        assert candle[14] is None


def test_candle_ranges_are_checked() -> None:
    rig = account_rig(registry=REGISTRY)
    for query in (
        "from=2026-11-27&to=2026-11-26",
        "from=2026-01-01&to=2026-11-26&interval=1m",
        "from=0&to=2026-11-26",  # a number is not read as a Unix time
    ):
        status, body = candles(rig, "NSE:INFY", query)
        assert (status, body["code"]) == (422, "validation_error"), query


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("interval", "instant", "start"),
    [
        ("5m", "2026-11-27T09:17:30+05:30", "2026-11-27T09:15:00+05:30"),
        ("15m", "2026-11-27T10:01:00+05:30", "2026-11-27T10:00:00+05:30"),
        ("1h", "2026-11-27T10:14:59+05:30", "2026-11-27T09:15:00+05:30"),
        ("1h", "2026-11-27T10:15:00+05:30", "2026-11-27T10:15:00+05:30"),
        ("1d", "2026-11-27T15:29:00+05:30", "2026-11-27T00:00:00+05:30"),
    ],
)
def test_buckets_align_to_the_nse_open_and_ist_days(
    interval: str, instant: str, start: str
) -> None:
    spec = INTERVALS[interval]
    assert spec.bucket is not None
    got = bucket_starts(
        np.array([_epoch(instant)]), spec.bucket.total_seconds(), spec.origin.timestamp()
    )
    assert got[0] == _epoch(start)


def test_a_partly_stored_candle_comes_from_kite_entirely() -> None:
    spec = INTERVALS["5m"]
    assert spec.bucket is not None
    bucket, origin = spec.bucket.total_seconds(), spec.origin.timestamp()
    day, end = DAY.timestamp(), (DAY + timedelta(hours=1)).timestamp()
    assert stored_boundary(day + 120, end, bucket, origin) == day + 300
    assert stored_boundary(day + 300, end, bucket, origin) == day + 300
    assert stored_boundary(None, end, bucket, origin) == end
