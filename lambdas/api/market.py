"""Market data over the API (logic): instruments, quotes, option chains with Greeks, candles.

Option math is :mod:`ticker_core.options`, the same Black-76, implied
volatility and Greeks the greeks function publishes; only the inputs are
chosen here:

* **Option chain** (one underlying, one expiry, at the answer's instant
  ``as_of``): each option's latest stored price; the forward is the
  same-expiry future's latest price, else put-call parity at the strikes
  nearest the money (:func:`ticker_core.options.choose_forward`), so every
  strike is valued on its own underlying's forward, never on another's spot;
  ``T`` from ``as_of`` to 15:30 IST on the expiry date.
* **Candles** of an option: at each candle's close, the forward is the
  same-expiry future's close in the same candle, else parity with the same
  strike's other option's close in that candle
  (:func:`ticker_core.options.parity_forwards`); ``T`` from the candle's last
  tick to expiry.

Candles come from the stored minute bars; the part of a range before the
first stored bar comes from Kite's historical API (``source`` says which, and
the two never overlap). When Kite cannot be asked (no account logged in,
Kite down or throttling, a range too long for the calls allowed) the stored
candles are still answered and ``missing`` says what is absent and why.

This module needs numpy and scipy (through ``ticker_core.options``): it is
served by the market-data function, not the trading API's (see
``lambdas.api.market_handler``).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lambdas.api.dal.market import StoredCandle
from lambdas.api.errors import (
    FieldProblem,
    InstrumentNotFoundError,
    KiteCallError,
    KiteFailureKind,
    ValidationFailedError,
)
from lambdas.api.instrument_refs import resolve_instrument
from lambdas.api.market_models import (
    CANDLE_FIELDS,
    GREEK_FIELDS,
    Candles,
    ChainOption,
    ChainStrike,
    Depth,
    DepthLevel,
    ForwardUsed,
    InstrumentInfo,
    InstrumentList,
    Interval,
    MissingRange,
    Ohlc,
    OptionChain,
    OptionGreeks,
    Quote,
    QuoteResult,
    Quotes,
)
from ticker_core.calendar import expiry_epoch_seconds, year_fraction, year_fractions
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType
from ticker_core.options import (
    OK,
    Reason,
    choose_forward,
    greeks,
    implied_vol,
    parity_forwards,
    reason_labels,
)
from ticker_core.tz import IST

FloatArray = npt.NDArray[np.float64]
NO_PRICE = "no_price"
"""An option with nothing stored: no price, so no IV or Greeks (beside ticker_core's reasons)."""
NOT_STORED = "not_stored"
"""A candle from Kite's history: this service has no prices to value it on."""
SESSION_ORIGIN = datetime(2000, 1, 3, 9, 15, tzinfo=IST)
"""Intraday candles start at the NSE open (09:15 IST), as Kite's do."""
DAY_ORIGIN = datetime(2000, 1, 3, tzinfo=IST)


@dataclass(frozen=True)
class IntervalSpec:
    """How an interval is built here and asked of Kite."""

    bucket: timedelta | None
    """None: the minute bars as they are."""
    kite: str
    kite_max_days: int
    """The longest range Kite answers in one call for this interval."""
    max_range: timedelta
    """The longest range this API answers."""
    origin: datetime


INTERVALS: dict[str, IntervalSpec] = {
    "1m": IntervalSpec(None, "minute", 60, timedelta(days=62), SESSION_ORIGIN),
    "5m": IntervalSpec(timedelta(minutes=5), "5minute", 100, timedelta(days=200), SESSION_ORIGIN),
    "15m": IntervalSpec(
        timedelta(minutes=15), "15minute", 200, timedelta(days=400), SESSION_ORIGIN
    ),
    "1h": IntervalSpec(timedelta(hours=1), "60minute", 400, timedelta(days=800), SESSION_ORIGIN),
    "1d": IntervalSpec(timedelta(days=1), "day", 2000, timedelta(days=3660), DAY_ORIGIN),
}


class MarketStore(Protocol):
    """Stored market data (``lambdas.api.dal.market.PostgresMarket``)."""

    def latest_ticks(self, tokens: Sequence[int], since: datetime) -> dict[int, Any]:
        """Each token's latest tick (mapping-like rows)."""
        ...

    def latest_prices(self, tokens: Sequence[int], since: datetime) -> dict[int, Any]:
        """Each token's latest price, OI, volume and instant."""
        ...

    def candles(
        self,
        tokens: Sequence[int],
        start: datetime,
        end: datetime,
        bucket: timedelta | None,
        origin: datetime,
    ) -> list[list[StoredCandle]]:
        """Per token, the stored candles of ``[start, end)``."""
        ...


class History(Protocol):
    """Kite's historical API (``lambdas.api.history_broker.KiteHistory``)."""

    def candles(
        self, instrument_token: int, start: datetime, end: datetime, interval: str
    ) -> list[dict[str, Any]]:
        """Kite's candles for ``[start, end]``."""
        ...


@dataclass(frozen=True)
class MarketSettings:
    """The market routes' knobs."""

    rate: float
    """Continuously compounded risk-free rate (as the greeks function's)."""
    quote_lookback: timedelta = timedelta(days=7)
    """How far back a latest quote is looked for (a long weekend and a holiday)."""
    max_history_calls: int = 3
    """Kite historical calls one request may make (Kite allows 3 a second per app)."""
    max_search_results: int = 500


# --------------------------------------------------------------------------- instruments


def instrument_info(i: Instrument) -> InstrumentInfo:
    """An instrument as the API shows it."""
    return InstrumentInfo(
        instrument_token=i.instrument_token,
        exchange_token=i.exchange_token,
        tradingsymbol=i.tradingsymbol,
        name=i.name,
        last_price=i.last_price,
        expiry=i.expiry,
        strike=i.strike,
        tick_size=i.tick_size,
        lot_size=i.lot_size,
        instrument_type=str(i.instrument_type),
        segment=i.segment,
        exchange=i.exchange,
        underlying=i.underlying,
    )


class InstrumentIndex:
    """Today's instruments sorted by tradingsymbol (prefix search) and grouped by underlying."""

    def __init__(self, registry: InstrumentRegistry) -> None:
        self.registry = registry
        self._ordered = sorted(registry.instruments, key=lambda i: (i.tradingsymbol, i.exchange))
        self._symbols = [i.tradingsymbol for i in self._ordered]
        self._by_underlying: dict[str, list[Instrument]] = {}
        for i in self._ordered:
            self._by_underlying.setdefault(i.underlying, []).append(i)

    def search(
        self,
        *,
        prefix: str | None,
        exchange: str | None,
        segment: str | None,
        underlying: str | None,
        expiry: date | None,
        instrument_type: str | None,
        limit: int,
    ) -> tuple[list[Instrument], bool]:
        """Matches in tradingsymbol order, at most ``limit``; whether more matched."""
        if underlying is not None:
            candidates: Sequence[Instrument] = self._by_underlying.get(underlying, [])
        else:
            candidates = self._ordered
        if prefix:
            symbols = [i.tradingsymbol for i in candidates] if underlying else self._symbols
            low = bisect.bisect_left(symbols, prefix)
            high = bisect.bisect_left(symbols, prefix + "\U0010ffff")
            candidates = candidates[low:high]
        found: list[Instrument] = []
        for i in candidates:
            if exchange is not None and i.exchange != exchange:
                continue
            if segment is not None and i.segment != segment:
                continue
            if expiry is not None and i.expiry != expiry:
                continue
            if instrument_type is not None and str(i.instrument_type) != instrument_type:
                continue
            found.append(i)
            if len(found) > limit:
                return found[:limit], True
        return found, False


# --------------------------------------------------------------------------- option math


@dataclass(frozen=True)
class GreekColumns:
    """IV and Greeks per option, NaN with a reason where there is no value."""

    iv: FloatArray
    delta: FloatArray
    gamma: FloatArray
    theta: FloatArray
    vega: FloatArray
    rho: FloatArray
    reason: list[str | None]


def option_greeks(
    price: FloatArray,
    forward: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    rate: float,
    is_call: npt.NDArray[np.bool_],
) -> GreekColumns:
    """:func:`ticker_core.options.implied_vol` then ``greeks`` on it, elementwise.

    A NaN price reads ``no_price``; a NaN forward ``no_forward``; otherwise
    the reason is ticker_core's (the implied volatility's first).
    """
    vols = implied_vol(price, forward, strike, t, rate, is_call)
    values = greeks(forward, strike, t, rate, vols.iv, is_call)
    codes = np.where(vols.reason != OK, vols.reason, values.reason)
    codes = np.where(np.isnan(forward), Reason.NO_FORWARD.code, codes)
    reasons = reason_labels(codes)
    for n in np.flatnonzero(np.isnan(price)).tolist():
        reasons[n] = NO_PRICE
    return GreekColumns(
        vols.iv, values.delta, values.gamma, values.theta, values.vega, values.rho, reasons
    )


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _greeks_at(columns: GreekColumns, n: int) -> OptionGreeks:
    return OptionGreeks(
        iv=_number(columns.iv[n]),
        delta=_number(columns.delta[n]),
        gamma=_number(columns.gamma[n]),
        theta=_number(columns.theta[n]),
        vega=_number(columns.vega[n]),
        rho=_number(columns.rho[n]),
        reason=columns.reason[n],
    )


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 3)


def same_expiry_future(
    registry: InstrumentRegistry, underlying: str, exchange: str, expiry: date
) -> Instrument | None:
    """The underlying's future expiring with the options, if listed (its price is the forward)."""
    return next(
        (f for f in registry.futures(underlying, exchange=exchange) if f.expiry == expiry), None
    )


# --------------------------------------------------------------------------- candles


@dataclass
class CandleRows:
    """Candles being assembled: rows, and what could not be given."""

    rows: list[list[Any]] = field(default_factory=list)
    missing: list[MissingRange] = field(default_factory=list)


MISSING_REASONS = {
    KiteFailureKind.LOGIN_REQUIRED: "kite_login_required",
    KiteFailureKind.RATE_LIMITED: "kite_rate_limited",
    KiteFailureKind.REFUSED: "kite_refused",
    KiteFailureKind.NOT_FOUND: "kite_refused",
}


def kite_time(text: str) -> datetime:
    """Kite's candle timestamp (``2024-06-03T09:15:00+0530``) as an aware instant."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")


def bucket_start(instant: datetime, spec: IntervalSpec) -> datetime:
    """The start of the candle ``instant`` falls in."""
    if spec.bucket is None:
        return instant.replace(second=0, microsecond=0)
    steps = (instant - spec.origin) // spec.bucket
    return spec.origin + steps * spec.bucket


def stored_boundary(first_minute: datetime | None, end: datetime, spec: IntervalSpec) -> datetime:
    """Where stored candles take over from Kite's: the first whole candle with stored bars.

    A candle whose first stored minute is not its own first minute may be
    missing the ticks before the feed started: it comes from Kite entirely.
    """
    if first_minute is None:
        return end
    start = bucket_start(first_minute, spec)
    if start == first_minute or spec.bucket is None:
        return first_minute
    return min(end, start + spec.bucket)


class MarketData:
    """The market routes' logic over the registry, the stored data and Kite's history."""

    def __init__(
        self,
        *,
        registry: Callable[[], InstrumentRegistry],
        store: MarketStore,
        history: History | None,
        settings: MarketSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._store = store
        self._history = history
        self._settings = settings
        self._clock = clock
        self._index: InstrumentIndex | None = None

    def _instruments(self) -> InstrumentIndex:
        registry = self._registry()
        if self._index is None or self._index.registry is not registry:
            self._index = InstrumentIndex(registry)
        return self._index

    def _instrument(self, ref: str) -> Instrument:
        instrument = resolve_instrument(self._instruments().registry, ref)
        if instrument is None:
            raise InstrumentNotFoundError(f"{ref} is not in today's instruments.")
        return instrument

    # -- instruments ------------------------------------------------------------------------

    def search(
        self,
        *,
        prefix: str | None = None,
        exchange: str | None = None,
        segment: str | None = None,
        underlying: str | None = None,
        expiry: date | None = None,
        instrument_type: str | None = None,
        limit: int = 50,
    ) -> InstrumentList:
        """Today's instruments matching every filter given."""
        found, truncated = self._instruments().search(
            prefix=prefix,
            exchange=exchange,
            segment=segment,
            underlying=underlying,
            expiry=expiry,
            instrument_type=instrument_type,
            limit=min(limit, self._settings.max_search_results),
        )
        return InstrumentList(instruments=[instrument_info(i) for i in found], truncated=truncated)

    def lookup(self, ref: str) -> InstrumentInfo:
        """One instrument by token or ``EXCHANGE:TRADINGSYMBOL`` (404 when not listed)."""
        return instrument_info(self._instrument(ref))

    # -- quotes -----------------------------------------------------------------------------

    def quotes(self, refs: Sequence[str]) -> Quotes:
        """The latest stored tick of each instrument (unknown instruments: 422, naming them)."""
        registry = self._instruments().registry
        instruments = [resolve_instrument(registry, r) for r in refs]
        problems = [
            FieldProblem(f"i[{n}]", "unknown_instrument", f"{ref} is not in today's instruments")
            for n, (ref, i) in enumerate(zip(refs, instruments, strict=True))
            if i is None
        ]
        if problems:
            raise ValidationFailedError(problems)
        now = self._clock()
        ticks = self._store.latest_ticks(
            sorted({i.instrument_token for i in instruments if i is not None}),
            now - self._settings.quote_lookback,
        )
        results = []
        for ref, instrument in zip(refs, instruments, strict=True):
            assert instrument is not None  # nosec B101 # refused above
            row = ticks.get(instrument.instrument_token)
            results.append(
                QuoteResult(
                    instrument=ref, quote=None if row is None else _quote(instrument, row, now)
                )
            )
        return Quotes(as_of=now, quotes=results)

    # -- option chain ---------------------------------------------------------------------

    def option_chain(
        self, underlying: str, expiry: date | None = None, exchange: str | None = None
    ) -> OptionChain:
        """Every strike's call and put with price, OI, IV and Greeks on one forward."""
        registry = self._instruments().registry
        now = self._clock()
        if expiry is None:
            live = [
                e
                for e in registry.expiries(underlying, exchange=exchange)
                if e >= now.astimezone(IST).date()
            ]
            if not live:
                raise InstrumentNotFoundError(f"{underlying} has no live option expiry.")
            expiry = live[0]
        chain = registry.option_chain(underlying, expiry, exchange=exchange)
        if chain is None:
            raise InstrumentNotFoundError(f"No {underlying} options expire on {expiry}.")
        future = same_expiry_future(registry, underlying, chain.exchange, expiry)
        options = [o for row in chain.rows for o in (row.ce, row.pe) if o is not None]
        tokens = [o.instrument_token for o in options]
        if future is not None:
            tokens.append(future.instrument_token)
        prices = self._store.latest_prices(tokens, now - self._settings.quote_lookback)
        t = year_fraction(now, expiry)
        rate = self._settings.rate

        def price_of(option: Instrument | None) -> float:
            row = prices.get(option.instrument_token) if option is not None else None
            return float(row["last_price"]) if row is not None else math.nan

        strikes = np.array(chain.strikes, dtype=np.float64)
        calls = np.array([price_of(r.ce) for r in chain.rows])
        puts = np.array([price_of(r.pe) for r in chain.rows])
        future_row = prices.get(future.instrument_token) if future is not None else None
        estimate = choose_forward(
            float(future_row["last_price"]) if future_row is not None else None,
            strikes, calls, puts, t, rate,
        )  # fmt: skip
        forward_age = None
        if estimate.source == "future" and future_row is not None:
            forward_age = _age(now, future_row["ts"])
        elif estimate.source == "parity":
            used = [r for r in chain.rows if r.strike in estimate.strikes]
            ages = [
                _age(now, prices[o.instrument_token]["ts"])
                for r in used
                for o in (r.ce, r.pe)
                if o is not None and o.instrument_token in prices
            ]
            forward_age = max((a for a in ages if a is not None), default=None)
        option_price = np.array([price_of(o) for o in options])
        columns = option_greeks(
            option_price,
            np.full(len(options), estimate.forward),
            np.array([o.strike for o in options], dtype=np.float64),
            np.full(len(options), t),
            rate,
            np.array([o.instrument_type is InstrumentType.CE for o in options]),
        )
        position = {o.instrument_token: n for n, o in enumerate(options)}

        def quote(option: Instrument | None) -> ChainOption | None:
            if option is None:
                return None
            row = prices.get(option.instrument_token)
            n = position[option.instrument_token]
            return ChainOption(
                instrument_token=option.instrument_token,
                tradingsymbol=option.tradingsymbol,
                last_price=None if row is None else float(row["last_price"]),
                oi=None if row is None else row["oi"],
                volume=None if row is None else row["volume_traded"],
                timestamp=None if row is None else row["ts"],
                age_seconds=None if row is None else _age(now, row["ts"]),
                greeks=_greeks_at(columns, n),
            )

        atm = None
        if math.isfinite(estimate.forward) and chain.strikes:
            atm = min(chain.strikes, key=lambda k: (abs(k - estimate.forward), k))
        return OptionChain(
            underlying=underlying,
            exchange=chain.exchange,
            expiry=expiry,
            as_of=now,
            t_years=t,
            rate=rate,
            forward=ForwardUsed(
                value=_number(estimate.forward),
                source=estimate.source,
                reason=None if estimate.reason is None else estimate.reason.value,
                future_token=future.instrument_token
                if estimate.source == "future" and future
                else None,
                parity_strikes=list(estimate.strikes),
                age_seconds=forward_age,
            ),
            atm_strike=atm,
            strikes=[
                ChainStrike(strike=r.strike, ce=quote(r.ce), pe=quote(r.pe)) for r in chain.rows
            ],
        )

    # -- candles ----------------------------------------------------------------------------

    def candles(self, ref: str, interval: Interval, start: datetime, end: datetime) -> Candles:
        """Candles of ``[start, end)``: stored where there are minute bars, Kite's before that."""
        spec = INTERVALS[interval]
        if end <= start:
            raise ValidationFailedError([FieldProblem("to", "range", "to must be after from")])
        if end - start > spec.max_range:
            raise ValidationFailedError(
                [
                    FieldProblem(
                        "from",
                        "range",
                        f"{interval} candles span at most {spec.max_range.days} days",
                    )
                ]
            )
        instrument = self._instrument(ref)
        registry = self._instruments().registry
        option = instrument.is_option and instrument.expiry is not None
        tokens = [instrument.instrument_token]
        future = counterpart = None
        if option:
            assert instrument.expiry is not None  # nosec B101 # checked above
            future = same_expiry_future(
                registry, instrument.underlying, instrument.exchange, instrument.expiry
            )
            chain = registry.option_chain(
                instrument.underlying, instrument.expiry, exchange=instrument.exchange
            )
            row = (
                next((r for r in chain.rows if r.strike == instrument.strike), None)
                if chain
                else None
            )
            if row is not None:
                counterpart = row.pe if instrument.instrument_type is InstrumentType.CE else row.ce
            tokens += [i.instrument_token for i in (future, counterpart) if i is not None]
        per_token = self._store.candles(tokens, start, end, spec.bucket, spec.origin)
        stored = per_token[0]
        boundary = stored_boundary(stored[0].bucket if stored else None, end, spec)
        stored = [c for c in stored if c.bucket >= boundary]
        out = CandleRows()
        if start < boundary:
            self._kite_rows(instrument, spec, start, boundary, option, out)
        fields = [*CANDLE_FIELDS, *GREEK_FIELDS, "reason"] if option else list(CANDLE_FIELDS)
        if option and stored:
            by_bucket = [{c.bucket: c for c in candles} for candles in per_token[1:]]
            future_candles = by_bucket[0] if future is not None else {}
            other_candles = by_bucket[-1] if counterpart is not None else {}
            columns = self._candle_greeks(instrument, stored, future_candles, other_candles)
            for n, c in enumerate(stored):
                out.rows.append(
                    [*_stored_row(c), *(_number(v[n]) for v in _values(columns)), columns.reason[n]]
                )
        else:
            out.rows.extend(_stored_row(c) for c in stored)
        return Candles(
            instrument_token=instrument.instrument_token,
            exchange=instrument.exchange,
            tradingsymbol=instrument.tradingsymbol,
            interval=interval,
            start=start,
            end=end,
            fields=fields,
            candles=out.rows,
            missing=out.missing,
        )

    def _candle_greeks(
        self,
        option: Instrument,
        candles: list[StoredCandle],
        future: dict[datetime, StoredCandle],
        other: dict[datetime, StoredCandle],
    ) -> GreekColumns:
        assert option.expiry is not None  # nosec B101 # options have one
        rate = self._settings.rate
        close = np.array([c.close for c in candles], dtype=np.float64)
        epoch = np.array([c.close_ts.timestamp() for c in candles], dtype=np.float64)
        expiry_epoch = expiry_epoch_seconds(np.array([option.expiry], dtype="datetime64[D]"))[0]
        t = year_fractions(epoch, expiry_epoch)
        future_close = np.array(
            [future[c.bucket].close if c.bucket in future else math.nan for c in candles]
        )
        other_close = np.array(
            [other[c.bucket].close if c.bucket in other else math.nan for c in candles]
        )
        is_call = option.instrument_type is InstrumentType.CE
        calls, puts = (close, other_close) if is_call else (other_close, close)
        parity = parity_forwards(option.strike, calls, puts, t, rate)
        usable_future = np.isfinite(future_close) & (future_close > 0)
        forward = np.where(usable_future, future_close, parity)
        return option_greeks(
            close, forward, np.full(len(candles), option.strike), t, rate,
            np.full(len(candles), is_call),
        )  # fmt: skip

    def _kite_rows(
        self,
        instrument: Instrument,
        spec: IntervalSpec,
        start: datetime,
        boundary: datetime,
        option: bool,
        out: CandleRows,
    ) -> None:
        if self._history is None:
            out.missing.append(
                MissingRange(start=start, end=boundary, reason="kite_not_configured")
            )
            return
        chunk = timedelta(days=spec.kite_max_days)
        pieces = []
        cursor = start
        while cursor < boundary:
            pieces.append((cursor, min(boundary, cursor + chunk)))
            cursor += chunk
        # Too long a range for the calls allowed: the part nearest the stored bars is asked for.
        allowed = pieces[-self._settings.max_history_calls :]
        if len(pieces) > len(allowed):
            out.missing.append(
                MissingRange(start=start, end=allowed[0][0], reason="range_too_long_for_kite")
            )
        extra = [*([None] * len(GREEK_FIELDS)), NOT_STORED] if option else []
        for piece_start, piece_end in allowed:
            try:
                candles = self._history.candles(
                    instrument.instrument_token,
                    piece_start.astimezone(IST),
                    (piece_end - timedelta(seconds=1)).astimezone(IST),
                    spec.kite,
                )
            except KiteCallError as exc:
                reason = MISSING_REASONS.get(exc.kind, "kite_unavailable")
                out.missing.append(MissingRange(start=piece_start, end=piece_end, reason=reason))
                continue
            for candle in candles:
                when = kite_time(str(candle["date"]))
                if piece_start <= when < piece_end:
                    row = [when.isoformat(), candle["open"], candle["high"], candle["low"]]
                    row += [candle["close"], candle.get("volume"), candle.get("oi"), "kite"]
                    out.rows.append([*row, *extra])
        out.rows.sort(key=lambda row: str(row[0]))


def _values(columns: GreekColumns) -> tuple[FloatArray, ...]:
    return (columns.iv, columns.delta, columns.gamma, columns.theta, columns.vega, columns.rho)


def _stored_row(c: StoredCandle) -> list[Any]:
    return [c.bucket.isoformat(), c.open, c.high, c.low, c.close, c.volume, c.oi, "stored"]


def _depth(raw: Any) -> Depth | None:
    if not raw:
        return None
    data = json.loads(raw) if isinstance(raw, str) else raw
    return Depth(
        buy=[DepthLevel(price=p, quantity=q, orders=o) for p, q, o in data.get("buy", [])],
        sell=[DepthLevel(price=p, quantity=q, orders=o) for p, q, o in data.get("sell", [])],
    )


def _quote(instrument: Instrument, row: Any, now: datetime) -> Quote:
    return Quote(
        instrument_token=instrument.instrument_token,
        exchange=instrument.exchange,
        tradingsymbol=instrument.tradingsymbol,
        timestamp=row["ts"],
        age_seconds=_age(now, row["ts"]) or 0.0,
        mode=row["mode"],
        last_price=row["last_price"],
        last_traded_quantity=row["last_traded_quantity"],
        average_traded_price=row["average_traded_price"],
        volume=row["volume_traded"],
        buy_quantity=row["total_buy_quantity"],
        sell_quantity=row["total_sell_quantity"],
        ohlc=Ohlc(open=row["open"], high=row["high"], low=row["low"], close=row["close"]),
        net_change=row["change"],
        oi=row["oi"],
        oi_day_high=row["oi_day_high"],
        oi_day_low=row["oi_day_low"],
        last_trade_time=row["last_trade_time"],
        depth=_depth(row["depth"]),
    )
