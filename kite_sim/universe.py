"""The simulated instrument universe, generated from a seed and a start date.

Three indices (NIFTY 50, NIFTY BANK, NIFTY FIN SERVICE) with their futures,
NIFTY weekly and monthly option chains, BANKNIFTY and FINNIFTY monthly
chains, fifty stocks with futures and monthly options, a USDINR currency pair
on CDS (futures and options, price divisor 1e7 on the wire) and USDINR
futures on BCD (divisor 1e4). Strike steps, lot sizes and tradingsymbol
formats follow NSE's; expiries are the last (monthly) or every (weekly)
Tuesday, moved back over holidays, counted from the market clock's start.

Instruments are :class:`ticker_core.instruments.Instrument` records; the
CSV Kite serves at ``/instruments`` is written by ticker_core's writer.
"""

from __future__ import annotations

import calendar as _calendar
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from ticker_core.calendar import NseCalendar
from ticker_core.instruments import Instrument, InstrumentType, instrument_token

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKLY_MONTH_CODES = "123456789OND"
EXPIRY_WEEKDAY = 1  # Tuesday: NSE's equity-derivatives expiry day since September 2025
CDS_EXPIRY_WEEKDAY = 2  # currency derivatives: a Wednesday near month end


@dataclass(frozen=True)
class UnderlyingSpec:
    """One underlying's price process parameters."""

    name: str  # the derivatives' ``name`` column: NIFTY, RELIANCE, USDINR
    spot: float
    vol: float  # annualised at-the-money volatility
    kind: str  # "index", "stock" or "currency"
    lot_size: int
    strike_step: float
    skew: float = -0.12  # d(vol)/d(log-moneyness): puts richer than calls
    smile: float = 0.35  # curvature of the smile in log-moneyness
    basis: float = 0.004  # futures carry over the risk-free rate (annualised)
    jump_rate: float = 2.0  # expected jumps per trading year
    jump_size: float = 0.02  # standard deviation of a jump's log return
    tick_size: float = 0.05


INDICES: tuple[tuple[str, str, int, float, float, int, float], ...] = (
    # (index tradingsymbol, derivatives name, exchange token, spot, vol, lot, strike step)
    ("NIFTY 50", "NIFTY", 1001, 24000.0, 0.13, 75, 50.0),
    ("NIFTY BANK", "BANKNIFTY", 1016, 52000.0, 0.15, 35, 100.0),
    ("NIFTY FIN SERVICE", "FINNIFTY", 1007, 23500.0, 0.14, 65, 50.0),
)

STOCKS: tuple[tuple[str, float, int], ...] = (
    # (symbol, indicative price, F&O lot size)
    ("RELIANCE", 2900.0, 250),
    ("TCS", 3900.0, 175),
    ("HDFCBANK", 1600.0, 550),
    ("INFY", 1500.0, 400),
    ("ICICIBANK", 1100.0, 700),
    ("HINDUNILVR", 2400.0, 300),
    ("ITC", 430.0, 1600),
    ("SBIN", 820.0, 750),
    ("BHARTIARTL", 1400.0, 475),
    ("KOTAKBANK", 1700.0, 400),
    ("LT", 3500.0, 150),
    ("AXISBANK", 1150.0, 625),
    ("ASIANPAINT", 2900.0, 200),
    ("MARUTI", 12500.0, 50),
    ("SUNPHARMA", 1500.0, 350),
    ("TITAN", 3400.0, 175),
    ("BAJFINANCE", 7000.0, 125),
    ("ULTRACEMCO", 10500.0, 100),
    ("WIPRO", 480.0, 1500),
    ("NESTLEIND", 2500.0, 200),
    ("HCLTECH", 1400.0, 350),
    ("TATAMOTORS", 950.0, 550),
    ("TATASTEEL", 160.0, 5500),
    ("POWERGRID", 310.0, 3600),
    ("NTPC", 360.0, 1500),
    ("ONGC", 270.0, 3850),
    ("COALINDIA", 450.0, 2100),
    ("M&M", 2500.0, 350),
    ("ADANIENT", 3000.0, 300),
    ("ADANIPORTS", 1300.0, 400),
    ("JSWSTEEL", 900.0, 675),
    ("GRASIM", 2400.0, 250),
    ("HINDALCO", 650.0, 1400),
    ("DRREDDY", 6000.0, 125),
    ("CIPLA", 1450.0, 650),
    ("BAJAJFINSV", 1600.0, 500),
    ("BAJAJ-AUTO", 9000.0, 75),
    ("HEROMOTOCO", 4800.0, 150),
    ("EICHERMOT", 4700.0, 175),
    ("BRITANNIA", 5200.0, 200),
    ("DIVISLAB", 4500.0, 200),
    ("APOLLOHOSP", 6200.0, 125),
    ("TECHM", 1300.0, 600),
    ("INDUSINDBK", 1450.0, 500),
    ("SBILIFE", 1450.0, 750),
    ("HDFCLIFE", 600.0, 1100),
    ("TATACONSUM", 1100.0, 550),
    ("UPL", 520.0, 1300),
    ("BPCL", 300.0, 1800),
    ("SHRIRAMFIN", 2700.0, 300),
)


def stock_strike_step(price: float) -> float:
    """NSE-like strike interval for a stock at ``price``."""
    for bound, step in ((100, 1.0), (250, 2.5), (500, 5.0), (1000, 10.0), (2500, 20.0)):
        if price < bound:
            return step
    return 50.0 if price < 5000 else 100.0


@dataclass
class Universe:
    """Every instrument, its underlying, and the underlyings' parameters."""

    instruments: list[Instrument]
    underlyings: list[UnderlyingSpec]
    underlying_of: list[int]  # instrument index -> underlying index
    spot_index: dict[int, int] = field(default_factory=dict)  # underlying -> spot instrument

    def __len__(self) -> int:
        return len(self.instruments)


@dataclass(frozen=True)
class UniverseConfig:
    """How big a universe to generate."""

    stocks: int = len(STOCKS)
    nifty_weeklies: int = 4
    monthlies: int = 3
    option_monthlies: int = 2  # monthly expiries that carry option chains (stocks)
    index_strikes: int = 30  # strikes on each side of the money, index chains
    stock_strikes: int = 10  # strikes on each side, stock chains
    currency: bool = True


def _adjust_back(day: date, cal: NseCalendar) -> date:
    while not cal.is_trading_day(day):
        day -= timedelta(days=1)
    return day


def _last_weekday(year: int, month: int, weekday: int) -> date:
    last = date(year, month, _calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def monthly_expiries(start: date, count: int, cal: NseCalendar, weekday: int) -> list[date]:
    """The next ``count`` monthly expiries on or after ``start``."""
    out: list[date] = []
    year, month = start.year, start.month
    while len(out) < count:
        expiry = _adjust_back(_last_weekday(year, month, weekday), cal)
        if expiry >= start:
            out.append(expiry)
        month += 1
        if month == 13:
            year, month = year + 1, 1
    return out


def weekly_expiries(start: date, count: int, cal: NseCalendar) -> list[date]:
    """The next ``count`` weekly (Tuesday) expiries on or after ``start``."""
    out: list[date] = []
    day = start + timedelta(days=(EXPIRY_WEEKDAY - start.weekday()) % 7)
    while len(out) < count:
        expiry = _adjust_back(day, cal)
        if expiry >= start and expiry not in out:
            out.append(expiry)
        day += timedelta(days=7)
    return out


def _strike_text(strike: float) -> str:
    return f"{strike:g}" if strike != int(strike) else str(int(strike))


def future_symbol(name: str, expiry: date) -> str:
    """``NIFTY24JUNFUT``."""
    return f"{name}{expiry:%y}{MONTHS[expiry.month - 1]}FUT"


def option_symbol(name: str, expiry: date, strike: float, right: str, *, weekly: bool) -> str:
    """``NIFTY24JUN24000CE`` (monthly) or ``NIFTY2461124000CE`` (weekly)."""
    if weekly:
        code = WEEKLY_MONTH_CODES[expiry.month - 1]
        return f"{name}{expiry:%y}{code}{expiry.day:02d}{_strike_text(strike)}{right}"
    return f"{name}{expiry:%y}{MONTHS[expiry.month - 1]}{_strike_text(strike)}{right}"


class _Builder:
    def __init__(self) -> None:
        self.instruments: list[Instrument] = []
        self.underlying_of: list[int] = []
        self.next_token = {"NSE": 2885, "NFO": 35000, "CDS": 1000, "BCD": 2000}

    def add(
        self,
        *,
        underlying: int,
        exchange: str,
        segment: str,
        tradingsymbol: str,
        name: str,
        instrument_type: InstrumentType,
        tick_size: float,
        lot_size: int,
        expiry: date | None = None,
        strike: float = 0.0,
        exchange_token: int | None = None,
    ) -> int:
        if exchange_token is None:
            family = segment.partition("-")[0]
            exchange_token = self.next_token[family]
            self.next_token[family] += 1
        inst = Instrument(
            instrument_token=instrument_token(exchange_token, segment),
            exchange_token=exchange_token,
            tradingsymbol=tradingsymbol,
            name=name,
            last_price=0.0,
            expiry=expiry,
            strike=strike,
            tick_size=tick_size,
            lot_size=lot_size,
            instrument_type=instrument_type,
            segment=segment,
            exchange=exchange,
        )
        self.instruments.append(inst)
        self.underlying_of.append(underlying)
        return len(self.instruments) - 1

    def chain(
        self,
        u: int,
        spec: UnderlyingSpec,
        exchange: str,
        expiry: date,
        strikes_each_side: int,
        *,
        weekly: bool,
        lot_size: int,
        tick_size: float,
    ) -> None:
        atm = round(spec.spot / spec.strike_step) * spec.strike_step
        segment = f"{exchange}-OPT"
        for k in range(-strikes_each_side, strikes_each_side + 1):
            strike = round(atm + k * spec.strike_step, 4)
            if strike <= 0:
                continue
            for right in ("CE", "PE"):
                self.add(
                    underlying=u,
                    exchange=exchange,
                    segment=segment,
                    tradingsymbol=option_symbol(spec.name, expiry, strike, right, weekly=weekly),
                    name=spec.name,
                    instrument_type=InstrumentType(right),
                    tick_size=tick_size,
                    lot_size=lot_size,
                    expiry=expiry,
                    strike=strike,
                )


def build_universe(
    seed: int, start: date, cal: NseCalendar, config: UniverseConfig | None = None
) -> Universe:
    """The universe for ``seed`` as of trading date ``start``."""
    cfg = config or UniverseConfig()
    rng = np.random.default_rng([seed, 7])
    b = _Builder()
    specs: list[UnderlyingSpec] = []
    spot_index: dict[int, int] = {}
    monthly = monthly_expiries(start, cfg.monthlies, cal, EXPIRY_WEEKDAY)
    weekly = [d for d in weekly_expiries(start, cfg.nifty_weeklies, cal) if d not in monthly]

    for symbol, name, token, spot, vol, lot, step in INDICES:
        spec = UnderlyingSpec(
            name=name,
            spot=round(spot * float(np.exp(rng.normal(0, 0.03))), 2),
            vol=vol * float(np.exp(rng.normal(0, 0.1))),
            kind="index",
            lot_size=lot,
            strike_step=step,
            skew=-0.15,
            smile=0.6,
            basis=0.003,
            jump_rate=1.5,
            jump_size=0.015,
        )
        u = len(specs)
        specs.append(spec)
        spot_index[u] = b.add(
            underlying=u,
            exchange="NSE",
            segment="INDICES",
            tradingsymbol=symbol,
            name=symbol,
            instrument_type=InstrumentType.EQ,
            tick_size=0.0,
            lot_size=0,
            exchange_token=token,
        )
        for expiry in monthly:
            b.add(
                underlying=u,
                exchange="NFO",
                segment="NFO-FUT",
                tradingsymbol=future_symbol(name, expiry),
                name=name,
                instrument_type=InstrumentType.FUT,
                tick_size=0.1,
                lot_size=lot,
                expiry=expiry,
            )
        expiries = [(d, True) for d in weekly] if name == "NIFTY" else []
        expiries += [(d, False) for d in monthly]
        for expiry, is_weekly in sorted(expiries):
            b.chain(
                u,
                spec,
                "NFO",
                expiry,
                cfg.index_strikes,
                weekly=is_weekly,
                lot_size=lot,
                tick_size=0.05,
            )

    for symbol, price, lot in STOCKS[: cfg.stocks]:
        spot = round(price * float(np.exp(rng.normal(0, 0.05))) / 0.05) * 0.05
        spec = UnderlyingSpec(
            name=symbol,
            spot=round(spot, 2),
            vol=float(rng.uniform(0.18, 0.38)),
            kind="stock",
            lot_size=lot,
            strike_step=stock_strike_step(spot),
            skew=float(rng.uniform(-0.12, -0.04)),
            smile=float(rng.uniform(0.2, 0.6)),
            basis=float(rng.uniform(0.0, 0.008)),
            jump_rate=4.0,
            jump_size=0.03,
        )
        u = len(specs)
        specs.append(spec)
        spot_index[u] = b.add(
            underlying=u,
            exchange="NSE",
            segment="NSE",
            tradingsymbol=symbol,
            name=symbol,
            instrument_type=InstrumentType.EQ,
            tick_size=0.05,
            lot_size=1,
        )
        for expiry in monthly:
            b.add(
                underlying=u,
                exchange="NFO",
                segment="NFO-FUT",
                tradingsymbol=future_symbol(symbol, expiry),
                name=symbol,
                instrument_type=InstrumentType.FUT,
                tick_size=0.05,
                lot_size=lot,
                expiry=expiry,
            )
        for expiry in monthly[: cfg.option_monthlies]:
            b.chain(
                u,
                spec,
                "NFO",
                expiry,
                cfg.stock_strikes,
                weekly=False,
                lot_size=lot,
                tick_size=0.05,
            )

    if cfg.currency:
        _add_currency(b, specs, start, cal, rng)
    return Universe(b.instruments, specs, b.underlying_of, spot_index)


def _add_currency(
    b: _Builder,
    specs: list[UnderlyingSpec],
    start: date,
    cal: NseCalendar,
    rng: np.random.Generator,
) -> None:
    spec = UnderlyingSpec(
        name="USDINR",
        spot=round(83.5 * float(np.exp(rng.normal(0, 0.01))), 4),
        vol=0.045,
        kind="currency",
        lot_size=1,
        strike_step=0.25,
        skew=0.05,
        smile=0.3,
        basis=0.01,
        jump_rate=0.5,
        jump_size=0.004,
        tick_size=0.0025,
    )
    u = len(specs)
    specs.append(spec)
    expiries = monthly_expiries(start, 3, cal, CDS_EXPIRY_WEEKDAY)
    for exchange in ("CDS", "BCD"):
        for expiry in expiries:
            b.add(
                underlying=u,
                exchange=exchange,
                segment=f"{exchange}-FUT",
                tradingsymbol=future_symbol("USDINR", expiry),
                name="USDINR",
                instrument_type=InstrumentType.FUT,
                tick_size=0.0025,
                lot_size=1,
                expiry=expiry,
            )
    b.chain(u, spec, "CDS", expiries[0], 5, weekly=False, lot_size=1, tick_size=0.0025)


def resolve_rates(universe: Universe, default: float, overrides: dict[str, float]) -> np.ndarray:
    """Ticks per second per instrument: token > tradingsymbol > name > segment > default."""
    rates = np.full(len(universe.instruments), float(default))
    for k, inst in enumerate(universe.instruments):
        for key in (
            str(inst.instrument_token),
            inst.tradingsymbol,
            f"{inst.exchange}:{inst.tradingsymbol}",
            inst.name,
            inst.segment,
        ):
            if key in overrides:
                rates[k] = float(overrides[key])
                break
    return rates
