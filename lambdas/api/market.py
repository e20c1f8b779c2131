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
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lambdas.api.candles import (
    CandleColumns,
    aligned,
    fold,
    ist_timestamps,
    stored_boundary,
    whole_numbers,
)
from lambdas.api.dal.market import MinuteSeries
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
    Depth,
    DepthLevel,
    InstrumentInfo,
    InstrumentList,
    Interval,
    MissingRange,
    Ohlc,
    Quote,
    QuoteResult,
    Quotes,
)
from ticker_core.calendar import year_fraction
from ticker_core.expiry_arrays import expiry_epoch_seconds, year_fractions
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
from ticker_core.tz import IST, ist_midnight_before

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

    def minute_bars(
        self, tokens: Sequence[int], start: datetime, end: datetime
    ) -> list[MinuteSeries]:
        """Per token, its minute bars of ``[start, end)`` as columns."""
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


GREEK_KEYS = ("iv", "delta", "gamma", "theta", "vega", "rho", "reason")
"""An option's greeks object (``OptionGreeks``), in the order of :func:`_values`."""


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


MISSING_REASONS = {
    KiteFailureKind.LOGIN_REQUIRED: "kite_login_required",
    KiteFailureKind.RATE_LIMITED: "kite_rate_limited",
    KiteFailureKind.REFUSED: "kite_refused",
    KiteFailureKind.NOT_FOUND: "kite_refused",
}


def kite_time(text: str) -> datetime:
    """Kite's candle timestamp (``2024-06-03T09:15:00+0530``) as an aware instant."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class CandleTable:
    """A candles answer: Kite's compact rows and what they mean (see ``Candles``)."""

    instrument: Instrument
    interval: str
    start: datetime
    end: datetime
    fields: list[str]
    rows: list[tuple[Any, ...]]
    missing: list[MissingRange]

    def data(self) -> dict[str, Any]:
        """The answer's ``data``, JSON-ready (what :class:`Candles` documents)."""
        return {
            "instrument_token": self.instrument.instrument_token,
            "exchange": self.instrument.exchange,
            "tradingsymbol": self.instrument.tradingsymbol,
            "interval": self.interval,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "fields": self.fields,
            "candles": self.rows,
            "missing": [m.model_dump(mode="json") for m in self.missing],
        }


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
    ) -> dict[str, Any]:
        """Every strike's call and put with price, OI, IV and Greeks on one forward.

        JSON-ready, as :class:`~lambdas.api.market_models.OptionChain` documents it (400
        options are written once by the route, not validated value by value).
        """
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
        values = list(zip(*(v.tolist() for v in _values(columns)), columns.reason, strict=True))
        position = {o.instrument_token: n for n, o in enumerate(options)}

        def quote(option: Instrument | None) -> dict[str, Any] | None:
            if option is None:
                return None
            row = prices.get(option.instrument_token)
            greeks_at = dict(
                zip(GREEK_KEYS, values[position[option.instrument_token]], strict=True)
            )
            return {
                "instrument_token": option.instrument_token,
                "tradingsymbol": option.tradingsymbol,
                "last_price": None if row is None else float(row["last_price"]),
                "oi": None if row is None else row["oi"],
                "volume": None if row is None else row["volume_traded"],
                "timestamp": None if row is None else row["ts"],
                "age_seconds": None if row is None else _age(now, row["ts"]),
                "greeks": greeks_at,
            }

        atm = None
        if math.isfinite(estimate.forward) and chain.strikes:
            atm = min(chain.strikes, key=lambda k: (abs(k - estimate.forward), k))
        used_future = estimate.source == "future" and future is not None
        return {
            "underlying": underlying,
            "exchange": chain.exchange,
            "expiry": expiry,
            "as_of": now,
            "t_years": t,
            "rate": rate,
            "forward": {
                "value": _number(estimate.forward),
                "source": estimate.source,
                "reason": None if estimate.reason is None else estimate.reason.value,
                "future_token": future.instrument_token if used_future and future else None,
                "parity_strikes": list(estimate.strikes),
                "age_seconds": forward_age,
            },
            "atm_strike": atm,
            "strikes": [
                {"strike": r.strike, "ce": quote(r.ce), "pe": quote(r.pe)} for r in chain.rows
            ],
        }

    # -- candles ----------------------------------------------------------------------------

    def candles(self, ref: str, interval: Interval, start: datetime, end: datetime) -> CandleTable:
        """Candles of ``[start, end)``: stored where there are minute bars, Kite's before that."""
        spec = INTERVALS[interval]
        if end <= start:
            raise ValidationFailedError([FieldProblem("to", "range", "to must be after from")])
        if end - start > spec.max_range:
            days = spec.max_range.days
            raise ValidationFailedError(
                [FieldProblem("from", "range", f"{interval} candles span at most {days} days")]
            )
        instrument = self._instrument(ref)
        registry = self._instruments().registry
        future = counterpart = None
        if instrument.is_option and instrument.expiry is not None:
            future = same_expiry_future(
                registry, instrument.underlying, instrument.exchange, instrument.expiry
            )
            chain = registry.option_chain(
                instrument.underlying, instrument.expiry, exchange=instrument.exchange
            )
            rows = chain.rows if chain is not None else ()
            row = next((r for r in rows if r.strike == instrument.strike), None)
            if row is not None:
                counterpart = row.pe if instrument.instrument_type is InstrumentType.CE else row.ce
        others = [i for i in (future, counterpart) if i is not None]
        series = self._store.minute_bars(
            [instrument.instrument_token, *(i.instrument_token for i in others)],
            ist_midnight_before(start),
            end,
        )
        bucket = spec.bucket.total_seconds() if spec.bucket is not None else None
        origin, first = spec.origin.timestamp(), start.timestamp()
        folded = [fold(bars, first, bucket, origin) for bars in series]
        in_range = series[0].minute[series[0].minute >= first]
        boundary = stored_boundary(
            float(in_range[0]) if len(in_range) else None, end.timestamp(), bucket, origin
        )
        stored = folded[0]
        keep = stored.start >= boundary
        stored = CandleColumns(*(getattr(stored, f.name)[keep] for f in fields(CandleColumns)))
        missing: list[MissingRange] = []
        kite = self._kite_columns(
            instrument, spec, start, datetime.fromtimestamp(boundary, UTC), missing
        )
        option = instrument.is_option and instrument.expiry is not None
        columns = [*CANDLE_FIELDS, *GREEK_FIELDS, "reason"] if option else list(CANDLE_FIELDS)
        both = [np.concatenate((a, b)) for a, b in zip(_ohlcv(kite), _ohlcv(stored), strict=True)]
        table: list[list[Any]] = [
            ist_timestamps(both[0]),
            *(values.tolist() for values in both[1:5]),
            whole_numbers(both[5]),
            whole_numbers(both[6]),
            ["kite"] * len(kite) + ["stored"] * len(stored),
        ]
        if option:
            future_close = aligned(stored.start, folded[1], folded[1].close) if future else None
            other = folded[-1] if counterpart is not None else None
            other_close = aligned(stored.start, other, other.close) if other else None
            greek = self._candle_greeks(instrument, stored, future_close, other_close)
            gap = np.full(len(kite), np.nan)
            table += [np.concatenate((gap, v)).tolist() for v in _values(greek)]
            table.append([NOT_STORED] * len(kite) + greek.reason)
        return CandleTable(
            instrument, interval, start, end, columns, list(zip(*table, strict=True)), missing
        )

    def _candle_greeks(
        self,
        option: Instrument,
        candles: CandleColumns,
        future_close: FloatArray | None,
        other_close: FloatArray | None,
    ) -> GreekColumns:
        assert option.expiry is not None  # nosec B101 # options have one
        rate = self._settings.rate
        n = len(candles)
        expiry_epoch = expiry_epoch_seconds(np.array([option.expiry], dtype="datetime64[D]"))[0]
        t = year_fractions(candles.close_ts, expiry_epoch)
        nothing = np.full(n, np.nan)
        is_call = option.instrument_type is InstrumentType.CE
        other = other_close if other_close is not None else nothing
        calls, puts = (candles.close, other) if is_call else (other, candles.close)
        parity = parity_forwards(option.strike, calls, puts, t, rate)
        future = future_close if future_close is not None else nothing
        forward = np.where(np.isfinite(future) & (future > 0), future, parity)
        return option_greeks(
            candles.close, forward, np.full(n, option.strike), t, rate, np.full(n, is_call)
        )

    def _kite_columns(
        self,
        instrument: Instrument,
        spec: IntervalSpec,
        start: datetime,
        boundary: datetime,
        missing: list[MissingRange],
    ) -> CandleColumns:
        """Kite's candles of ``[start, boundary)`` (what is not stored), as columns."""
        rows: list[tuple[float, ...]] = []
        if start >= boundary:
            return _columns(rows)
        if self._history is None:
            missing.append(MissingRange(start=start, end=boundary, reason="kite_not_configured"))
            return _columns(rows)
        chunk = timedelta(days=spec.kite_max_days)
        pieces = []
        cursor = start
        while cursor < boundary:
            pieces.append((cursor, min(boundary, cursor + chunk)))
            cursor += chunk
        # Too long a range for the calls allowed: the part nearest the stored bars is asked for.
        allowed = pieces[-self._settings.max_history_calls :]
        if len(pieces) > len(allowed):
            missing.append(
                MissingRange(start=start, end=allowed[0][0], reason="range_too_long_for_kite")
            )
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
                missing.append(MissingRange(start=piece_start, end=piece_end, reason=reason))
                continue
            low, high = piece_start.timestamp(), piece_end.timestamp()
            for candle in candles:
                when = kite_time(str(candle["date"])).timestamp()
                if low <= when < high:
                    rows.append(
                        (when, *(_float(candle.get(k)) for k in KITE_CANDLE_VALUES), math.nan)
                    )
        rows.sort()
        return _columns(rows)


KITE_CANDLE_VALUES = ("open", "high", "low", "close", "volume", "oi")


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _columns(rows: list[tuple[float, ...]]) -> CandleColumns:
    if not rows:
        return CandleColumns(*(np.empty(0) for _ in fields(CandleColumns)))
    return CandleColumns(*np.array(rows, dtype=np.float64).T)


def _ohlcv(c: CandleColumns) -> tuple[FloatArray, ...]:
    return (c.start, c.open, c.high, c.low, c.close, c.volume, c.oi)


def _values(columns: GreekColumns) -> tuple[FloatArray, ...]:
    return (columns.iv, columns.delta, columns.gamma, columns.theta, columns.vega, columns.rho)


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
