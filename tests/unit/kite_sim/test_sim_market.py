"""Universe, market model, feed schedule, wire frames and candles of the simulator."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pytest

from kite_sim.clock import ManualClock, MarketClock
from kite_sim.feed import MODE_FULL, MODE_LTP, MODE_QUOTE, ConnectionLimitError, FeedHub
from kite_sim.historical import CandleGenerator, parse_when
from kite_sim.market import KIND_CALL, KIND_FUT, KIND_PUT, Market
from kite_sim.universe import UniverseConfig, build_universe, option_symbol
from kite_sim.wire import encode_ticks, malformed_frame, one_packet
from ticker_core.calendar import NseCalendar
from ticker_core.instruments import parse_instruments
from ticker_core.kite_wire import FrameError, parse_ticks
from ticker_core.options import black76_price
from ticker_core.tz import IST

START = datetime(2024, 6, 3, 9, 15, tzinfo=IST)  # a Monday
SMALL = UniverseConfig(stocks=3, nifty_weeklies=2, monthlies=2, index_strikes=5, stock_strikes=3)


@pytest.fixture(scope="module")
def calendar() -> NseCalendar:
    return NseCalendar.load()


def make_market(calendar: NseCalendar, seed: int = 5) -> tuple[Market, ManualClock]:
    base = ManualClock()
    clock = MarketClock(base, START)
    universe = build_universe(seed, START.date(), calendar, SMALL)
    return Market(universe, clock, seed=seed, step_seconds=0.1), base


def test_universe_tokens_symbols_and_expiries(calendar: NseCalendar) -> None:
    universe = build_universe(1, START.date(), calendar, SMALL)
    insts = universe.instruments
    # Tokens follow Kite's rule and are unique
    assert len({i.instrument_token for i in insts}) == len(insts)
    codes = {"NSE": 1, "NFO": 2, "CDS": 3, "BCD": 6, "INDICES": 9}
    for inst in insts:
        family = inst.segment.partition("-")[0]
        assert inst.instrument_token == inst.exchange_token << 8 | codes[family]
    names = {i.tradingsymbol for i in insts}
    assert {"NIFTY 50", "NIFTY BANK", "NIFTY FIN SERVICE"} <= names
    segments = {i.segment for i in insts}
    assert {"INDICES", "NSE", "NFO-FUT", "NFO-OPT", "CDS-FUT", "CDS-OPT", "BCD-FUT"} <= segments
    # Index derivatives expire on Tuesdays (or the trading day before a holiday)
    expiries = {i.expiry for i in insts if i.name == "NIFTY" and i.expiry}
    assert all(d.weekday() in (0, 1) for d in expiries)
    assert min(expiries) >= START.date()
    # Weekly and monthly symbol formats
    assert option_symbol("NIFTY", date(2024, 6, 11), 22000, "CE", weekly=True) == (
        "NIFTY2461122000CE"
    )
    assert option_symbol("NIFTY", date(2024, 10, 8), 22000, "PE", weekly=True) == (
        "NIFTY24O0822000PE"
    )
    assert option_symbol("USDINR", date(2024, 6, 26), 83.25, "CE", weekly=False) == (
        "USDINR24JUN83.25CE"
    )
    # Strike steps are NSE's: 50 for NIFTY
    nifty_strikes = sorted({i.strike for i in insts if i.name == "NIFTY" and i.strike})
    assert set(np.diff(nifty_strikes)) == {50.0}


def test_instruments_csv_round_trips_through_ticker_core(calendar: NseCalendar) -> None:
    market, _ = make_market(calendar)
    parsed = parse_instruments(market.instruments_csv(), strict=True)
    assert len(parsed.instruments) == market.size
    nfo = parse_instruments(market.instruments_csv("NFO"), strict=True)
    assert {i.exchange for i in nfo.instruments} == {"NFO"}


def test_market_is_deterministic_given_seed_and_times(calendar: NseCalendar) -> None:
    a, base_a = make_market(calendar, seed=9)
    b, base_b = make_market(calendar, seed=9)
    c, _ = make_market(calendar, seed=10)
    # Given the same seed, advanced to the same times in different batches
    base_a.advance(30)
    a.advance()
    for _ in range(30):
        base_b.advance(1)
        b.advance()
    # Then the underlying paths agree; another seed differs
    np.testing.assert_allclose(a.spot, b.spot)
    assert not np.allclose(a.spot, c.spot)


def test_prices_follow_forward_and_black76_with_the_smile(calendar: NseCalendar) -> None:
    market, base = make_market(calendar)
    base.advance(60)
    market.advance()
    idx = np.arange(market.size, dtype=np.int64)
    theo = market.theoretical(idx)
    t = (market.expiry_epoch - market.clock.epoch()) / (365 * 86400)
    futs = idx[market.kind == KIND_FUT]
    fwd = market.forward(futs, t[futs])
    np.testing.assert_allclose(theo[futs], fwd)
    opts = idx[(market.kind == KIND_CALL) | (market.kind == KIND_PUT)]
    f = market.forward(opts, t[opts])
    sigma = market.implied_vol(opts, f, t[opts])
    expected = black76_price(
        f, market.strike[opts], t[opts], market.r, sigma, market.kind[opts] == KIND_CALL
    )
    np.testing.assert_allclose(theo[opts], expected, rtol=1e-12)
    # Skew: low strikes carry more vol than high strikes at the same distance
    nifty = opts[market.und[opts] == 0]
    low_strike = nifty[np.argmin(market.strike[nifty])]
    high_strike = nifty[np.argmax(market.strike[nifty])]
    atm_f = market.forward(np.array([low_strike]), np.array([0.05]))
    pair = np.array([low_strike, high_strike])
    vols = market.implied_vol(pair, np.repeat(atm_f, 2), np.array([0.05, 0.05]))
    assert vols[0] > vols[1]


def test_ticks_keep_state_consistent(calendar: NseCalendar) -> None:
    market, base = make_market(calendar)
    idx = np.arange(market.size, dtype=np.int64)
    for _ in range(20):
        base.advance(0.5)
        market.advance()
        market.tick(idx)
    tradable = ~market.is_index
    assert (market.bid_px[tradable, 0] < market.ask_px[tradable, 0]).all()
    assert (np.diff(market.bid_px[tradable], axis=1) < 0).all()
    assert (np.diff(market.ask_px[tradable], axis=1) > 0).all()
    assert (market.low <= market.ltp).all()
    assert (market.ltp <= market.high).all()
    assert (market.volume[tradable] > 0).all()
    assert (market.volume[market.is_index] == 0).all()
    assert (market.bid_qty[tradable] % market.lot[tradable, None] == 0).all()
    steps = market.ltp / market.tick_size
    assert np.allclose(steps[tradable], np.round(steps[tradable]))
    assert (market.oi[market.kind == 0] == 0).all()
    assert (market.ticks == 20).all()


def test_snapshot_day_roll_and_shock(calendar: NseCalendar) -> None:
    market, _base = make_market(calendar)
    token = int(market.tokens[0])
    snap = market.snapshot(token)
    assert snap.last_price > 0
    assert snap.lower_circuit < snap.close < snap.upper_circuit
    before = float(market.spot[0])
    market.shock(market.universe.underlyings[0].name, -5.0)
    assert market.spot[0] == pytest.approx(before * 0.95)
    with pytest.raises(KeyError):
        market.shock("NOPE", 1.0)
    market.tick(np.array([1], dtype=np.int64))
    market.clock.set(datetime(2024, 6, 4, 9, 15, tzinfo=IST))
    market.advance()
    assert market.volume.sum() == 0
    assert market.describe()["underlyings"][0]["name"] == "NIFTY"
    assert market.instrument("NSE", "NIFTY 50") is not None
    assert market.by_token(1) is None
    assert list(market.index_of([token, 1])) == [0]


def test_clock_jump_takes_one_aggregated_step(calendar: NseCalendar) -> None:
    market, base = make_market(calendar)
    base.advance(3600 * 5)
    assert market.advance() == 5 * 3600 * 10
    assert np.isfinite(market.spot).all()


def test_feed_hub_schedule_modes_limits_and_counts() -> None:
    tokens = [101, 102, 103, 104]
    hub = FeedHub(
        tokens, [10.0, 10.0, 1.0, 1.0], max_connections_per_key=2, max_instruments_per_connection=3
    )
    a = hub.open("key", "U1")
    hub.open("key", "U1")
    with pytest.raises(ConnectionLimitError):
        hub.open("key", "U1")
    assert hub.refused_connections == 1
    errors = hub.handle_text(a, '{"a": "subscribe", "v": [101, 102, 103, 104, 999]}', 0.0)
    assert errors
    assert "limit" in errors[0]
    assert a.subscribed == 3
    hub.handle_text(a, '{"a": "mode", "v": ["full", [101]]}', 0.0)
    hub.handle_text(a, '{"a": "mode", "v": ["ltp", [104]]}', 0.0)  # not subscribed: ignored
    assert a.modes[0] == MODE_FULL
    assert a.modes[1] == MODE_QUOTE
    assert a.modes[3] == 0
    # First plan sends every fresh subscription at once
    idx, _modes = hub.plan(a, hub.due(0.0))
    assert sorted(idx.tolist()) == [0, 1, 2]
    hub.record_sent(a, idx, 0.0)
    # Over one second at 10/s and 1/s, the schedule gives ~10, ~10 and ~1 ticks
    sent = np.zeros(4, dtype=np.int64)
    for step in range(1, 11):
        due = hub.due(step * 0.1)
        picked, _ = hub.plan(a, due)
        sent[picked] += 1
        hub.record_sent(a, picked, step * 0.1)
    assert sent[0] == 10
    assert sent[1] == 10
    assert sent[2] == 1
    counters = hub.counters()
    assert counters["per_instrument"]["101"] == 11
    assert counters["connections"][str(a.conn_id)]["per_instrument"]["103"] == 2
    assert hub.handle_text(a, "nope", 0) == ["Invalid message: not JSON."]
    assert hub.handle_text(a, "[1]", 0)
    assert hub.handle_text(a, '{"a": "dance"}', 0)
    assert hub.handle_text(a, '{"a": "subscribe", "v": "x"}', 0)
    hub.handle_text(a, '{"a": "unsubscribe", "v": [101, 102, 103]}', 1.0)
    assert a.subscribed == 0
    assert np.isinf(hub.next_due).all()
    hub.close(a)
    hub.close(a)
    assert hub.closed_connections == 1
    assert len(hub.for_api_key("key")) == 1
    with pytest.raises(ValueError, match="rate"):
        FeedHub(tokens, [1.0])


def test_feed_hub_total_cap() -> None:
    hub = FeedHub(list(range(1000)), [100.0] * 1000, max_ticks_per_second=1000.0)
    conn = hub.open("k", "u")
    hub.subscribe(conn, list(range(1000)), 0.0, MODE_LTP)
    hub.due(0.0)
    total = sum(len(hub.due(0.01 * step)) for step in range(1, 101))
    assert 900 <= total <= 1100


def test_encoded_frames_parse_like_the_official_client(calendar: NseCalendar) -> None:
    market, _base = make_market(calendar)
    idx = np.arange(market.size, dtype=np.int64)
    market.tick(idx)
    modes = np.array([(k % 3) + 1 for k in range(market.size)], dtype=np.int8)
    ticks = parse_ticks(encode_ticks(market, idx, modes))
    assert len(ticks) == market.size
    by_token = {t["instrument_token"]: t for t in ticks}
    for k in range(market.size):
        tick = by_token[int(market.tokens[k])]
        assert tick["mode"] == {1: "ltp", 2: "quote", 3: "full"}[int(modes[k])]
        assert tick["last_price"] == pytest.approx(market.ltp[k], abs=1e-6)
    single = encode_ticks(market, idx[:1], modes[:1])
    assert len(parse_ticks(single)) == 1
    packet = one_packet(market, 0)
    for kind in ("truncated", "bad_length", "count_mismatch", "garbage"):
        frame = malformed_frame(kind, packet)
        try:
            parse_ticks(frame)
        except FrameError:
            continue
    with pytest.raises(ValueError, match="malformed"):
        malformed_frame("other", packet)


def test_candles_are_deterministic_and_aggregate(calendar: NseCalendar) -> None:
    gen = CandleGenerator(3, calendar)
    kwargs = {"anchor": 1500.0, "today": date(2024, 6, 5), "tick": 0.05, "vol": 0.2, "lot": 1}
    start, end = parse_when("2024-06-03 09:15:00"), parse_when("2024-06-03 09:44:59")
    minutes = gen.candles(42, "minute", start, end, oi=True, **kwargs)
    fives = gen.candles(42, "5minute", start, end, oi=False, **kwargs)
    assert len(minutes) == 30
    assert len(fives) == 6
    assert minutes == gen.candles(42, "minute", start, end, oi=True, **kwargs)
    first_five = minutes[:5]
    assert fives[0][1] == first_five[0][1]
    assert fives[0][4] == first_five[-1][4]
    assert fives[0][2] == max(c[2] for c in first_five)
    assert fives[0][5] == sum(c[5] for c in first_five)
    assert minutes[0][0] == "2024-06-03T09:15:00+0530"
    days = gen.candles(
        42, "day", parse_when("2024-05-01"), parse_when("2024-06-05"), oi=False, **kwargs
    )
    closes = {row[0][:10]: row[4] for row in days}
    assert closes["2024-06-04"] == pytest.approx(1500.0, abs=0.05)  # the previous close
    from kite_sim.errors import InputError

    with pytest.raises(InputError):
        gen.candles(42, "2minute", start, end, oi=False, **kwargs)
    with pytest.raises(InputError):
        gen.candles(42, "minute", end, start, oi=False, **kwargs)
    with pytest.raises(InputError):
        gen.candles(42, "minute", parse_when("2024-01-01"), end, oi=False, **kwargs)
    with pytest.raises(InputError):
        parse_when("yesterday")
