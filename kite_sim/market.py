"""The market model: seeded price paths and every instrument's state, columnar.

Underlyings follow geometric Brownian motion with a mean-reverting at-the-money
volatility, a mean-reverting futures basis and occasional jumps (compound
Poisson). The random numbers of step ``n`` depend only on ``(seed, n)``, so a
path is the same however the steps are batched: the market is deterministic
given its seed and the market times it is advanced to.

Derived prices: a future trades at the forward ``F = S * exp((r + basis) *
T)``; an option at Black-76 on that same forward (ticker_core's pricer) with a
smile ``sigma(K) = atm * (1 + skew * x + smile * x^2)``, ``x = ln(K/F) /
sqrt(T)`` floored and capped, so implied vols recovered downstream are the
model's. Time to expiry is ticker_core's year fraction to 15:30 IST.

Every instrument's state lives in numpy arrays indexed like the universe:
last price, last quantity, volume, VWAP, OHLC, OI and its day range, last
trade time and five levels of depth. :meth:`Market.tick` makes a trade happen
on a batch of instruments (what the feed sends); :meth:`Market.snapshot`
reprices one instrument without trading (what REST reads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kite_sim.clock import MarketClock
from kite_sim.marketview import Level, Snapshot
from kite_sim.universe import Universe
from ticker_core.expiry_arrays import expiry_epoch_seconds, year_fractions
from ticker_core.instruments import Instrument, write_instruments_csv
from ticker_core.options import black76_price
from ticker_core.tz import IST

TRADING_SECONDS_PER_YEAR = 252 * 6.25 * 3600  # volatility accrues in trading time
RISK_FREE = 0.065
DEPTH = 5
CHUNK = 1024  # steps whose random numbers are drawn together
MAX_EXACT_STEPS = 20_000  # beyond this a catch-up is simulated as one aggregated step

KIND_SPOT, KIND_FUT, KIND_CALL, KIND_PUT = 0, 1, 2, 3

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


class Market:
    """All instruments' state, advanced along seeded underlying paths."""

    def __init__(
        self,
        universe: Universe,
        clock: MarketClock,
        *,
        seed: int,
        step_seconds: float = 0.1,
        risk_free: float = RISK_FREE,
    ) -> None:
        self.universe = universe
        self.clock = clock
        self.seed = seed
        self.step_seconds = step_seconds
        self.r = risk_free
        insts = universe.instruments
        n = len(insts)
        self.size = n
        self.tokens = np.array([i.instrument_token for i in insts], dtype=np.int64)
        self.token_index = {int(t): k for k, t in enumerate(self.tokens)}
        self.symbol_index = {(i.exchange, i.tradingsymbol): k for k, i in enumerate(insts)}
        self.und = np.array(universe.underlying_of, dtype=np.int64)
        kinds = {"EQ": KIND_SPOT, "FUT": KIND_FUT, "CE": KIND_CALL, "PE": KIND_PUT}
        self.kind = np.array([kinds[str(i.instrument_type)] for i in insts], dtype=np.int8)
        self.is_index = np.array([i.segment == "INDICES" for i in insts], dtype=bool)
        self.strike = np.array([i.strike for i in insts], dtype=np.float64)
        self.tick_size = np.array([i.tick_size or 0.05 for i in insts], dtype=np.float64)
        self.lot = np.array([max(1, i.lot_size) for i in insts], dtype=np.int64)
        self.is_derivative = self.kind != KIND_SPOT
        expiries = np.array(
            [np.datetime64(i.expiry) if i.expiry else np.datetime64("NaT") for i in insts],
            dtype="datetime64[D]",
        )
        self.expiry_epoch = expiry_epoch_seconds(expiries)

        specs = universe.underlyings
        self.spec_vol = np.array([s.vol for s in specs])
        self.spec_basis = np.array([s.basis for s in specs])
        self.skew = np.array([s.skew for s in specs])
        self.smile = np.array([s.smile for s in specs])
        self.jump_rate = np.array([s.jump_rate for s in specs])
        self.jump_size = np.array([s.jump_size for s in specs])
        self.spot = np.array([s.spot for s in specs], dtype=np.float64)
        self.vol = self.spec_vol.copy()
        self.basis = self.spec_basis.copy()
        self.steps_done = 0
        self.start_epoch = clock.epoch()
        self._chunk_id = -1
        self._chunk: F64 = np.empty((0, 0, 5))
        self._draws = 0

        self.ltp = np.zeros(n)
        self.theo = np.zeros(n)
        self.close = np.zeros(n)
        self.open = np.zeros(n)
        self.high = np.zeros(n)
        self.low = np.zeros(n)
        self.vwap = np.zeros(n)
        self.volume = np.zeros(n, dtype=np.int64)
        self.last_qty = np.zeros(n, dtype=np.int64)
        self.oi = np.zeros(n, dtype=np.int64)
        self.oi_high = np.zeros(n, dtype=np.int64)
        self.oi_low = np.zeros(n, dtype=np.int64)
        self.last_trade_time = np.zeros(n, dtype=np.int64)
        self.exchange_time = np.zeros(n, dtype=np.int64)
        self.buy_qty = np.zeros(n, dtype=np.int64)
        self.sell_qty = np.zeros(n, dtype=np.int64)
        self.bid_px = np.zeros((n, DEPTH))
        self.ask_px = np.zeros((n, DEPTH))
        self.bid_qty = np.zeros((n, DEPTH), dtype=np.int64)
        self.ask_qty = np.zeros((n, DEPTH), dtype=np.int64)
        self.bid_n = np.zeros((n, DEPTH), dtype=np.int64)
        self.ask_n = np.zeros((n, DEPTH), dtype=np.int64)
        self.priced_step = np.full(n, -1, dtype=np.int64)
        self.ticks = np.zeros(n, dtype=np.int64)
        self._day: date = clock.now().date()
        self._init_day(first=True)

    # -- lookups (MarketView) ----------------------------------------------------
    def instrument(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        """The instrument listed as ``exchange:tradingsymbol``."""
        k = self.symbol_index.get((exchange, tradingsymbol))
        return None if k is None else self.universe.instruments[k]

    def by_token(self, token: int) -> Instrument | None:
        """The instrument with this token."""
        k = self.token_index.get(int(token))
        return None if k is None else self.universe.instruments[k]

    def index_of(self, tokens: Sequence[int]) -> I64:
        """Universe indices of ``tokens`` (unknown tokens are dropped)."""
        out = [self.token_index[int(t)] for t in tokens if int(t) in self.token_index]
        return np.array(out, dtype=np.int64)

    # -- the underlying process ------------------------------------------------------
    def _draws_for(self, step: int) -> F64:
        chunk_id = step // CHUNK
        if chunk_id != self._chunk_id:
            rng = np.random.default_rng([self.seed, 1, chunk_id])
            u = len(self.spot)
            block = rng.standard_normal((CHUNK, u, 5))
            block[:, :, 3] = rng.random((CHUNK, u))  # uniform for the jump test
            self._chunk, self._chunk_id = block, chunk_id
        row: F64 = self._chunk[step % CHUNK]
        return row

    def _evolve(self, z: F64, dt: float) -> None:
        """One step of length ``dt`` trading-years with draws ``z`` (shape (U, 5))."""
        vol = self.vol
        sqdt = np.sqrt(dt)
        jump = np.where(z[:, 3] < self.jump_rate * dt, z[:, 4] * self.jump_size, 0.0)
        self.spot = self.spot * np.exp(-0.5 * vol * vol * dt + vol * sqdt * z[:, 0] + jump)
        kappa = 4.0
        self.vol = np.clip(
            vol + kappa * (self.spec_vol - vol) * dt + 0.6 * vol * sqdt * z[:, 1] + 0.5 * jump**2,
            0.3 * self.spec_vol,
            4.0 * self.spec_vol,
        )
        self.basis = self.basis + 8.0 * (self.spec_basis - self.basis) * dt + 0.01 * sqdt * z[:, 2]

    def advance(self) -> int:
        """Advance the underlyings to the market clock; how many steps were taken."""
        now = self.clock.epoch()
        self._roll_day_if_needed()
        target = int((now - self.start_epoch) / self.step_seconds + 1e-6)
        todo = target - self.steps_done
        if todo <= 0:
            return 0
        dt = self.step_seconds / TRADING_SECONDS_PER_YEAR
        if todo > MAX_EXACT_STEPS:
            # A clock jump: one step carrying the variance of all of them.
            z = self._draws_for(target).copy()
            z[:, 3] = 1.0  # no jump test at aggregate scale; the variance covers it
            self._evolve(z, dt * todo)
        else:
            for step in range(self.steps_done + 1, target + 1):
                self._evolve(self._draws_for(step), dt)
        self.steps_done = target
        return todo

    # -- pricing ---------------------------------------------------------------------------
    def implied_vol(self, idx: I64, forward: F64, t: F64) -> F64:
        """The smile's volatility for options ``idx`` at ``forward`` and ``t``."""
        u = self.und[idx]
        tt = np.maximum(t, 1.0 / 365.0)
        x = np.log(self.strike[idx] / forward) / np.sqrt(tt)
        x = np.clip(x, -2.5, 2.5)
        factor = 1.0 + self.skew[u] * x + self.smile[u] * x * x
        return np.clip(self.vol[u] * factor, 0.5 * self.vol[u], 3.0 * self.vol[u])

    def forward(self, idx: I64, t: F64) -> F64:
        """Forward price for instruments ``idx`` at year fractions ``t``."""
        u = self.und[idx]
        return self.spot[u] * np.exp((self.r + self.basis[u]) * np.maximum(t, 0.0))

    def theoretical(self, idx: I64) -> F64:
        """Model prices (not rounded) of instruments ``idx`` now."""
        kind = self.kind[idx]
        u = self.und[idx]
        out = self.spot[u].copy()
        deriv = kind != KIND_SPOT
        if not deriv.any():
            return out
        t = year_fractions(self.clock.epoch(), self.expiry_epoch[idx])
        t = np.where(np.isnan(t), 0.0, t)
        fwd = self.forward(idx, t)
        out = np.where(kind == KIND_FUT, fwd, out)
        opt = (kind == KIND_CALL) | (kind == KIND_PUT)
        if opt.any():
            oi = idx[opt]
            to = t[opt]
            fo = fwd[opt]
            strike = self.strike[oi]
            is_call = kind[opt] == KIND_CALL
            live = to > 0
            prices = np.where(is_call, np.maximum(fo - strike, 0.0), np.maximum(strike - fo, 0.0))
            if live.any():
                sigma = self.implied_vol(oi[live], fo[live], to[live])
                priced = black76_price(
                    fo[live], strike[live], to[live], self.r, sigma, is_call[live]
                )
                prices[live] = np.asarray(priced, dtype=np.float64)
            out[opt] = prices
        return out

    # -- state updates -------------------------------------------------------------------
    def _rng(self) -> np.random.Generator:
        self._draws += 1
        return np.random.default_rng([self.seed, 2, self.steps_done, self._draws])

    def _round(self, idx: I64, price: F64) -> F64:
        tick = self.tick_size[idx]
        rounded = np.round(price / tick) * tick
        floor = np.where(self.kind[idx] >= KIND_CALL, tick, 0.0)
        return np.asarray(np.round(np.maximum(rounded, floor), 4), dtype=np.float64)

    def _reprice(self, idx: I64, rng: np.random.Generator) -> None:
        """Fresh prices and depth for ``idx`` (no trade)."""
        theo = self.theoretical(idx)
        self.theo[idx] = theo
        tick = self.tick_size[idx]
        n = len(idx)
        index = self.is_index[idx]
        # The touch straddles the model price: bid at or below it, ask above.
        bid0 = np.floor(theo / tick) * tick
        spread = tick * (1 + (rng.random(n) < 0.3))
        ask0 = bid0 + spread
        side = rng.random(n) < 0.5
        ltp = np.where(side, bid0, ask0)
        ltp = np.where(index, theo, ltp)
        ltp = self._round(idx, ltp)
        self.ltp[idx] = ltp
        gaps = np.cumsum(1 + (rng.random((n, DEPTH)) < 0.25), axis=1) - 1
        bid_px = bid0[:, None] - gaps * tick[:, None]
        ask_px = ask0[:, None] + gaps * tick[:, None]
        lots = self.lot[idx][:, None]
        bid_qty = rng.integers(1, 40, size=(n, DEPTH)) * lots
        ask_qty = rng.integers(1, 40, size=(n, DEPTH)) * lots
        bid_n = np.minimum(rng.integers(1, 25, size=(n, DEPTH)), bid_qty // lots)
        ask_n = np.minimum(rng.integers(1, 25, size=(n, DEPTH)), ask_qty // lots)
        no_depth = index[:, None] | (bid_px <= 0)
        self.bid_px[idx] = np.where(no_depth, 0.0, np.round(bid_px, 4))
        self.bid_qty[idx] = np.where(no_depth, 0, bid_qty)
        self.bid_n[idx] = np.where(no_depth, 0, bid_n)
        no_ask = index[:, None]
        self.ask_px[idx] = np.where(no_ask, 0.0, np.round(ask_px, 4))
        self.ask_qty[idx] = np.where(no_ask, 0, ask_qty)
        self.ask_n[idx] = np.where(no_ask, 0, ask_n)
        tradable = ~index
        scale = rng.integers(20, 200, size=n)
        self.buy_qty[idx] = np.where(tradable, self.bid_qty[idx].sum(axis=1) * scale, 0)
        self.sell_qty[idx] = np.where(tradable, self.ask_qty[idx].sum(axis=1) * scale, 0)
        self.high[idx] = np.maximum(self.high[idx], ltp)
        self.low[idx] = np.where(self.low[idx] > 0, np.minimum(self.low[idx], ltp), ltp)
        self.exchange_time[idx] = int(self.clock.epoch())
        self.priced_step[idx] = self.steps_done

    def tick(self, idx: I64) -> None:
        """A trade on each of ``idx`` at the current market: what a tick reports."""
        if len(idx) == 0:
            return
        rng = self._rng()
        self._reprice(idx, rng)
        tradable = ~self.is_index[idx]
        qty = rng.integers(1, 10, size=len(idx)) * self.lot[idx]
        qty = np.where(tradable, qty, 0)
        old_volume = self.volume[idx]
        new_volume = old_volume + qty
        ltp = self.ltp[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            vwap = np.where(
                new_volume > 0,
                (self.vwap[idx] * old_volume + ltp * qty) / np.maximum(new_volume, 1),
                0.0,
            )
        tick = self.tick_size[idx]
        self.vwap[idx] = np.round(vwap / tick) * tick * (tradable > 0)
        self.volume[idx] = new_volume
        self.last_qty[idx] = qty
        now = int(self.clock.epoch())
        self.last_trade_time[idx] = np.where(tradable, now, self.last_trade_time[idx])
        deriv = self.is_derivative[idx]
        oi_step = rng.integers(-3, 4, size=len(idx)) * self.lot[idx]
        oi = np.where(deriv, np.maximum(self.oi[idx] + oi_step, 0), 0)
        self.oi[idx] = oi
        self.oi_high[idx] = np.maximum(self.oi_high[idx], oi)
        self.oi_low[idx] = np.where(deriv, np.minimum(self.oi_low[idx], oi), 0)
        np.add.at(self.ticks, idx, 1)

    def refresh(self, idx: I64) -> None:
        """Reprice ``idx`` at the current step where not yet done (no trade)."""
        stale = idx[self.priced_step[idx] != self.steps_done]
        if len(stale):
            self._reprice(stale, self._rng())

    # -- day boundaries ---------------------------------------------------------------------
    def _init_day(self, *, first: bool) -> None:
        every = np.arange(self.size, dtype=np.int64)
        rng = np.random.default_rng([self.seed, 3, self._day.toordinal()])
        if first:
            theo = self._round(every, self.theoretical(every))
            gap = np.exp(rng.normal(0.0, 0.006, size=self.size))
            self.close = self._round(every, theo / gap)
            self.oi = np.where(
                self.is_derivative, rng.integers(50, 5000, size=self.size) * self.lot, 0
            )
        else:
            self.close = np.where(self.ltp > 0, self.ltp, self.close)
        self.volume[:] = 0
        self.vwap[:] = 0.0
        self.last_qty[:] = 0
        self.high[:] = 0.0
        self.low[:] = 0.0
        self.priced_step[:] = -1
        self._reprice(every, rng)
        self.open[:] = self.ltp
        self.high[:] = self.ltp
        self.low[:] = self.ltp
        self.oi_high[:] = self.oi
        self.oi_low[:] = self.oi

    def _roll_day_if_needed(self) -> None:
        today = self.clock.now().date()
        if today != self._day:
            self._day = today
            self._init_day(first=False)

    # -- reads ---------------------------------------------------------------------------------
    def circuit(self, k: int) -> tuple[float, float]:
        """Lower and upper circuit limits of instrument ``k``."""
        close = float(self.close[k])
        tick = float(self.tick_size[k])
        if self.kind[k] >= KIND_CALL:
            u = int(self.und[k])
            width = max(close * 2.0, float(self.spot[u]) * 0.1)
            return tick, round(round((close + width) / tick) * tick, 4)
        lower = round(round(close * 0.8 / tick) * tick, 4)
        upper = round(round(close * 1.2 / tick) * tick, 4)
        return lower, upper

    def snapshot(self, token: int) -> Snapshot:
        """One instrument's state now (repriced if stale); KeyError if unknown."""
        k = self.token_index[int(token)]
        self.advance()
        self.refresh(np.array([k], dtype=np.int64))
        lower, upper = self.circuit(k)
        ltt = int(self.last_trade_time[k])
        return Snapshot(
            instrument_token=int(token),
            last_price=float(self.ltp[k]),
            close=float(self.close[k]),
            open=float(self.open[k]),
            high=float(self.high[k]),
            low=float(self.low[k]),
            last_quantity=int(self.last_qty[k]),
            average_price=float(self.vwap[k]),
            volume=int(self.volume[k]),
            buy_quantity=int(self.buy_qty[k]),
            sell_quantity=int(self.sell_qty[k]),
            oi=int(self.oi[k]),
            oi_day_high=int(self.oi_high[k]),
            oi_day_low=int(self.oi_low[k]),
            last_trade_time=datetime.fromtimestamp(ltt, IST) if ltt else None,
            timestamp=datetime.fromtimestamp(int(self.exchange_time[k]), IST),
            lower_circuit=lower,
            upper_circuit=upper,
            bids=[
                Level(float(p), int(q), int(o))
                for p, q, o in zip(self.bid_px[k], self.bid_qty[k], self.bid_n[k], strict=True)
            ],
            asks=[
                Level(float(p), int(q), int(o))
                for p, q, o in zip(self.ask_px[k], self.ask_qty[k], self.ask_n[k], strict=True)
            ],
        )

    def instruments_with_prices(self) -> list[Instrument]:
        """The universe with ``last_price`` set to the previous close (the dump's view)."""
        return [
            dataclasses.replace(inst, last_price=float(self.close[k]))
            for k, inst in enumerate(self.universe.instruments)
        ]

    def instruments_csv(self, exchange: str | None = None) -> str:
        """Kite's instruments CSV (all, or one exchange), written by ticker_core."""
        rows = self.instruments_with_prices()
        if exchange is not None:
            rows = [i for i in rows if i.exchange == exchange]
        return write_instruments_csv(rows)

    def describe(self) -> dict[str, Any]:
        """Underlying state, for the admin API."""
        return {
            "steps": self.steps_done,
            "underlyings": [
                {
                    "name": spec.name,
                    "spot": round(float(self.spot[u]), 4),
                    "atm_vol": round(float(self.vol[u]), 4),
                    "basis": round(float(self.basis[u]), 5),
                }
                for u, spec in enumerate(self.universe.underlyings)
            ],
        }

    def shock(self, name: str, pct: float) -> None:
        """Move an underlying's spot by ``pct`` percent at once (admin API, tests)."""
        for u, spec in enumerate(self.universe.underlyings):
            if spec.name == name:
                self.spot[u] *= 1.0 + pct / 100.0
                self.priced_step[self.und == u] = -1
                return
        raise KeyError(name)


def trading_date_on_or_after(day: date, is_trading_day: Any) -> date:
    """The first trading day on or after ``day``."""
    while not is_trading_day(day):
        day += timedelta(days=1)
    return day
