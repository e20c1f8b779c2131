"""Kite instruments dump: parsing, validation, registry lookups, ATM windows, writing."""

import json
import random
from dataclasses import replace
from datetime import UTC, date, datetime, time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker_core.calendar import NaiveDatetimeError
from ticker_core.instruments import (
    INDEX_UNDERLYINGS,
    KITE_COLUMNS,
    SEGMENT_CODES,
    DumpSummary,
    Instrument,
    InstrumentRegistry,
    InstrumentsFormatError,
    InstrumentsRowError,
    InstrumentType,
    ProblemKind,
    instrument_token,
    parse_instruments,
    write_instruments_csv,
)
from ticker_core.tz import IST
from ticker_core.underlying_codes import UNKNOWN_UNDERLYING, UnderlyingLookup

HEADER = ",".join(KITE_COLUMNS)

# A hand-written dump in Kite's shape: an index, an equity, a future and an option.
SAMPLE_DUMP = (
    HEADER + "\n"
    "256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE\n"
    "738561,2885,RELIANCE,RELIANCE INDUSTRIES,1296.4,,0,0.05,1,EQ,NSE,NSE\n"
    "13874690,54198,NIFTY26DECFUT,NIFTY,0,2026-12-29,0,0.1,75,FUT,NFO-FUT,NFO\n"
    "10566658,41276,NIFTY26D0126000CE,NIFTY,12.5,2026-12-01,26000,0.05,75,CE,NFO-OPT,NFO\n"
)

# Expiries of the generated universe around Tuesday 1 Dec 2026.
WEEK_1 = date(2026, 12, 1)
WEEK_2 = date(2026, 12, 8)
MONTH = date(2026, 12, 29)
NEXT_MONTH = date(2027, 1, 26)
NIFTY_STRIKES = (25800.0, 25900.0, 26000.0, 26100.0, 26200.0)


class Universe:
    """Builds instruments with consistent tokens, the way the simulator will."""

    def __init__(self) -> None:
        self.instruments: list[Instrument] = []
        self._next_exchange_token = 40000

    def add(
        self,
        symbol: str,
        *,
        segment: str,
        exchange: str,
        kind: str = "EQ",
        name: str = "",
        expiry: date | None = None,
        strike: float = 0.0,
        lot: int = 1,
        exchange_token: int | None = None,
    ) -> Instrument:
        if exchange_token is None:
            exchange_token = self._next_exchange_token
            self._next_exchange_token += 1
        instrument = Instrument(
            instrument_token=instrument_token(exchange_token, segment),
            exchange_token=exchange_token,
            tradingsymbol=symbol,
            name=name,
            last_price=0.0,
            expiry=expiry,
            strike=strike,
            tick_size=0.05,
            lot_size=lot,
            instrument_type=InstrumentType(kind),
            segment=segment,
            exchange=exchange,
        )
        self.instruments.append(instrument)
        return instrument

    def option(
        self,
        name: str,
        expiry: date,
        strike: float,
        kind: str,
        *,
        segment: str = "NFO-OPT",
        symbol: str | None = None,
        exchange_token: int | None = None,
    ) -> Instrument:
        return self.add(
            symbol or f"{name}{expiry:%y%m%d}{strike:g}{kind}",
            segment=segment,
            exchange=segment.partition("-")[0],
            kind=kind,
            name=name,
            expiry=expiry,
            strike=strike,
            lot=75,
            exchange_token=exchange_token,
        )

    def future(self, name: str, expiry: date, segment: str = "NFO-FUT") -> Instrument:
        exchange = segment.partition("-")[0]
        return self.add(
            f"{name}{expiry:%y%b}FUT".upper(),
            segment=segment,
            exchange=exchange,
            kind="FUT",
            name=name,
            expiry=expiry,
        )


def build_universe() -> list[Instrument]:
    u = Universe()
    u.add("NIFTY 50", segment="INDICES", exchange="NSE", name="NIFTY 50", exchange_token=1001)
    u.add("NIFTY BANK", segment="INDICES", exchange="NSE", name="NIFTY BANK", exchange_token=1016)
    u.add("INDIA VIX", segment="INDICES", exchange="NSE", name="INDIA VIX", exchange_token=1070)
    u.add("SENSEX", segment="INDICES", exchange="BSE", name="SENSEX", exchange_token=1)
    u.add("RELIANCE", segment="NSE", exchange="NSE", name="RELIANCE INDUSTRIES")
    u.add("RELIANCE", segment="BSE", exchange="BSE", name="RELIANCE INDUSTRIES")
    # Futures listed far expiry first, so sorting is the registry's doing.
    u.future("NIFTY", NEXT_MONTH)
    u.future("NIFTY", MONTH)
    u.future("BANKNIFTY", MONTH)
    u.future("RELIANCE", MONTH)
    u.future("USDINR", date(2027, 1, 27), "CDS-FUT")
    u.future("USDINR", MONTH, "CDS-FUT")
    u.future("USDINR", MONTH, "BCD-FUT")
    # Chains listed in shuffled order; the 8 Dec 26200 strike has no put.
    options = [
        (expiry, strike, kind)
        for expiry in (WEEK_1, WEEK_2, MONTH)
        for strike in NIFTY_STRIKES
        for kind in ("CE", "PE")
        if not (expiry == WEEK_2 and strike == 26200.0 and kind == "PE")
    ]
    random.Random(7).shuffle(options)
    for expiry, strike, kind in options:
        u.option("NIFTY", expiry, strike, kind)
    for strike in (85000.0, 85100.0):
        for kind in ("CE", "PE"):
            u.option("SENSEX", date(2026, 12, 3), strike, kind, segment="BFO-OPT")
    return u.instruments


@pytest.fixture(scope="module")
def universe() -> list[Instrument]:
    return build_universe()


@pytest.fixture(scope="module")
def registry(universe: list[Instrument]) -> InstrumentRegistry:
    return InstrumentRegistry(parse_instruments(write_instruments_csv(universe)).instruments)


def symbols(instruments: tuple[Instrument, ...]) -> list[str]:
    return [i.tradingsymbol for i in instruments]


# --------------------------------------------------------------------------- parsing


def test_parses_kite_rows_into_typed_instruments() -> None:
    # Given a dump in Kite's format
    # When parsed
    result = parse_instruments(SAMPLE_DUMP)
    # Then every row becomes a typed record and nothing is rejected
    assert result.problems == ()
    assert result.rows == 4
    assert not result.truncated
    index, equity, future, call = result.instruments
    assert index.instrument_token == 256265
    assert index.instrument_type is InstrumentType.EQ
    assert equity.last_price == 1296.4
    assert future.expiry == date(2026, 12, 29)
    assert future.is_future
    assert not future.is_option
    assert call.strike == 26000.0
    assert call.lot_size == 75
    assert call.is_option
    assert not call.is_future
    # And option, future and index share the partition key
    assert {i.underlying for i in (index, future, call)} == {"NIFTY"}
    assert equity.underlying == "RELIANCE"


def test_records_are_frozen_and_slotted() -> None:
    instrument = parse_instruments(SAMPLE_DUMP).instruments[0]
    with pytest.raises(AttributeError):
        instrument.strike = 1.0  # type: ignore[misc]
    assert not hasattr(instrument, "__dict__")


def test_instrument_token_is_exchange_token_and_segment_code() -> None:
    # Given Kite's published examples, Then the token packs exchange token and segment code
    assert instrument_token(1001, "INDICES") == 256265
    assert instrument_token(2885, "NSE") == 738561
    assert instrument_token(54198, "NFO-FUT") == 54198 << 8 | 2
    assert {SEGMENT_CODES[s] for s in ("CDS", "BCD", "NCO", "MCXSX")} == {3, 6, 12, 8}
    with pytest.raises(ValueError, match="unknown segment"):
        instrument_token(1, "NYSE")


def test_bom_blank_lines_crlf_and_quoted_fields_are_read() -> None:
    # Given a dump saved by a spreadsheet: BOM, CRLF, a blank line, a quoted name
    text = (
        "\ufeff" + HEADER + "\r\n"
        '738561,2885,RELIANCE,"RELIANCE, INDUSTRIES",0,,0,0.05,1,EQ,NSE,NSE\r\n'
        "\r\n"
        "256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE\r\n"
    )
    # When parsed, Then both rows are read and the blank line is not a row
    result = parse_instruments(text)
    assert result.problems == ()
    assert result.rows == 2
    assert result.instruments[0].name == "RELIANCE, INDUSTRIES"


def test_a_quoted_newline_keeps_later_line_numbers_right() -> None:
    # Given a row whose name spans two lines, followed by a bad row on line 4
    text = (
        HEADER + "\n"
        '738561,2885,RELIANCE,"RELIANCE\nINDUSTRIES",0,,0,0.05,1,EQ,NSE,NSE\n'
        "256265,1001,NIFTY 50,NIFTY 50,zero,,0,0,0,EQ,INDICES,NSE\n"
    )
    # When parsed, Then the problem names the line the bad row starts on
    (problem,) = parse_instruments(text).problems
    assert problem.line == 4
    assert problem.column == "last_price"


# --------------------------------------------------------------------------- underlying


@pytest.mark.parametrize(
    ("symbol", "name", "kind", "segment", "expected"),
    [
        ("NIFTY 50", "NIFTY 50", "EQ", "INDICES", "NIFTY"),
        ("NIFTY BANK", "NIFTY BANK", "EQ", "INDICES", "BANKNIFTY"),
        ("NIFTY FIN SERVICE", "NIFTY FIN SERVICE", "EQ", "INDICES", "FINNIFTY"),
        ("NIFTY MID SELECT", "NIFTY MID SELECT", "EQ", "INDICES", "MIDCPNIFTY"),
        ("NIFTY NEXT 50", "NIFTY NEXT 50", "EQ", "INDICES", "NIFTYNXT50"),
        ("SENSEX", "SENSEX", "EQ", "INDICES", "SENSEX"),
        ("INDIA VIX", "INDIA VIX", "EQ", "INDICES", "INDIAVIX"),  # not in the table
        ("Nifty It", "", "EQ", "INDICES", "NIFTYIT"),  # fallback upper-cases
        ("M&M", "MAHINDRA & MAHINDRA", "EQ", "NSE", "M&M"),
        ("RELIANCE", "RELIANCE INDUSTRIES", "EQ", "BSE", "RELIANCE"),
        ("BANKNIFTY26DECFUT", "BANKNIFTY", "FUT", "NFO-FUT", "BANKNIFTY"),
        ("CRUDEOIL26DEC5000CE", "CRUDEOIL", "CE", "MCX-OPT", "CRUDEOIL"),
        ("XYZ26DECFUT", "  ", "FUT", "NFO-FUT", "XYZ26DECFUT"),  # no name: fallback
        ("GOLDGUINEA", "", "EQ", "MCX", "GOLDGUINEA"),
    ],
)
def test_underlying_rule(symbol: str, name: str, kind: str, segment: str, expected: str) -> None:
    # Given one row's identifying columns
    instrument = Instrument(
        instrument_token(1, segment),
        1,
        symbol,
        name,
        0.0,
        date(2026, 12, 29) if kind != "EQ" else None,
        0.0,
        0.05,
        1,
        InstrumentType(kind),
        segment,
        segment.partition("-")[0],
    )
    # When its underlying is derived, Then it follows the documented precedence
    assert instrument.underlying == expected


def test_index_table_maps_onto_derivative_names() -> None:
    # Every mapped value is a plain derivatives name: upper-case, no spaces
    assert all(v == v.upper() and " " not in v for v in INDEX_UNDERLYINGS.values())


def test_option_future_and_index_share_the_underlying(registry: InstrumentRegistry) -> None:
    # Given the index, a future and an option of NIFTY, and BANKNIFTY's index and future
    index = registry.by_symbol("NSE", "NIFTY 50")
    future = registry.futures("NIFTY")[0]
    option = registry.atm_window("NIFTY", 26000, strikes_each_side=0, expiries=1, as_of=WEEK_1)[0]
    bank_index = registry.by_symbol("NSE", "NIFTY BANK")
    assert index is not None
    assert bank_index is not None
    # When their tokens are looked up, Then each family shares one key
    assert {registry.underlying_of(i.instrument_token) for i in (index, future, option)} == {
        "NIFTY"
    }
    assert registry.underlying_of(bank_index.instrument_token) == "BANKNIFTY"
    assert registry.futures("BANKNIFTY")[0].underlying == "BANKNIFTY"


# --------------------------------------------------------------------------- lookups


def test_lookup_by_token_and_symbol(registry: InstrumentRegistry) -> None:
    # Given the registry, When looked up by token and by exchange:symbol
    nifty = registry.by_token(256265)
    # Then both find the same record, and unknown keys give None
    assert nifty is not None
    assert registry.by_symbol("NSE", "NIFTY 50") is nifty
    assert registry.by_symbol("BSE", "RELIANCE") is not registry.by_symbol("NSE", "RELIANCE")
    assert registry.by_token(1) is None
    assert registry.by_symbol("NSE", "NOPE") is None
    assert registry.underlying_of(1) is None
    assert len(registry) == len(build_universe())
    assert registry.instruments[0] is nifty


def test_vectorized_lookup_agrees_with_the_dict(registry: InstrumentRegistry) -> None:
    # Given every known token, shuffled, plus unknown ones, as the wire decodes them (uint32)
    known = [i.instrument_token for i in registry.instruments]
    random.Random(1).shuffle(known)
    tokens = np.array([*known, 1, 2**32 - 1, 0], dtype=np.uint32)
    lookup = UnderlyingLookup.of(registry)
    # When coded in one call
    codes = lookup.codes(tokens)
    # Then each known token's code names its underlying, and unknown ones get the sentinel
    assert codes.dtype == np.int32
    assert [lookup.names[c] for c in codes[: len(known)]] == [
        registry.underlying_of(t) for t in known
    ]
    assert codes[len(known) :].tolist() == [UNKNOWN_UNDERLYING] * 3


def test_vectorized_lookup_keeps_shape_and_takes_any_integer_dtype(
    registry: InstrumentRegistry,
) -> None:
    lookup = UnderlyingLookup.of(registry)
    reliance = registry.by_symbol("NSE", "RELIANCE")
    assert reliance is not None
    # Given a 2-D signed array with a negative and an over-range value
    tokens = np.array([[256265, -5], [2**40, reliance.instrument_token]], dtype=np.int64)
    # When coded, Then the shape is kept and out-of-range values are simply unknown
    codes = lookup.codes(tokens)
    assert codes.shape == (2, 2)
    assert lookup.names[codes[0, 0]] == "NIFTY"
    assert lookup.names[codes[1, 1]] == "RELIANCE"
    assert codes[0, 1] == codes[1, 0] == UNKNOWN_UNDERLYING


def test_vectorized_lookup_codes_are_deterministic_and_reject_floats(
    registry: InstrumentRegistry,
) -> None:
    # Given a second lookup built from the same tokens in another order
    mapping = {i.instrument_token: i.underlying for i in reversed(registry.instruments)}
    again = UnderlyingLookup(mapping)
    # Then names (hence codes) are identical, sorted
    assert (
        again.names == UnderlyingLookup.of(registry).names == tuple(sorted(set(mapping.values())))
    )
    # And float tokens are a caller bug, refused
    with pytest.raises(TypeError, match="integers"):
        again.codes(np.array([256265.0]))


def test_empty_lookup_knows_nothing() -> None:
    codes = UnderlyingLookup({}).codes(np.array([256265], dtype=np.uint32))
    assert codes.tolist() == [UNKNOWN_UNDERLYING]


def test_registry_refuses_duplicates(universe: list[Instrument]) -> None:
    # Given a list with a repeated token, or a repeated exchange:symbol
    first = universe[0]
    renamed = replace(first, tradingsymbol="OTHER")
    moved = replace(first, exchange_token=1002, instrument_token=instrument_token(1002, "INDICES"))
    # When a registry is built, Then it refuses rather than silently keeping one
    with pytest.raises(ValueError, match="duplicate instrument_token"):
        InstrumentRegistry([first, renamed])
    with pytest.raises(ValueError, match="duplicate symbol"):
        InstrumentRegistry([first, moved])


# --------------------------------------------------------------------------- chains and futures


def test_chain_has_sorted_strikes_with_call_and_put(registry: InstrumentRegistry) -> None:
    # Given a chain listed in shuffled order
    chain = registry.option_chain("NIFTY", WEEK_1)
    # When fetched, Then strikes ascend and each row pairs the strike's CE and PE
    assert chain is not None
    assert chain.strikes == NIFTY_STRIKES
    assert (chain.underlying, chain.exchange, chain.expiry) == ("NIFTY", "NFO", WEEK_1)
    for row in chain.rows:
        assert row.ce is not None
        assert row.pe is not None
        assert (row.ce.strike, row.ce.instrument_type) == (row.strike, InstrumentType.CE)
        assert (row.pe.strike, row.pe.instrument_type) == (row.strike, InstrumentType.PE)


def test_chain_row_without_a_put(registry: InstrumentRegistry) -> None:
    chain = registry.option_chain("NIFTY", WEEK_2)
    assert chain is not None
    assert chain.rows[-1].strike == 26200.0
    assert chain.rows[-1].ce is not None
    assert chain.rows[-1].pe is None


def test_missing_chain_is_none(registry: InstrumentRegistry) -> None:
    assert registry.option_chain("NIFTY", date(2026, 12, 2)) is None
    assert registry.option_chain("NOPE", WEEK_1) is None


def test_expiries_are_the_chains_dates_ascending(registry: InstrumentRegistry) -> None:
    assert registry.expiries("NIFTY") == (WEEK_1, WEEK_2, MONTH)
    assert registry.expiries("SENSEX") == (date(2026, 12, 3),)
    assert registry.expiries("RELIANCE") == ()  # futures only


def test_futures_sorted_by_expiry(registry: InstrumentRegistry) -> None:
    # Given NIFTY futures listed far month first, Then they come back nearest first
    assert [f.expiry for f in registry.futures("NIFTY")] == [MONTH, NEXT_MONTH]
    assert registry.futures("NOPE") == ()


def test_derivatives_from_two_exchanges_do_not_mix(registry: InstrumentRegistry) -> None:
    # Given USDINR futures on CDS (two) and BCD (one)
    # When asked without an exchange, Then the exchange with most contracts answers
    assert registry.derivatives_exchange("USDINR") == "CDS"
    assert {f.exchange for f in registry.futures("USDINR")} == {"CDS"}
    assert len(registry.futures("USDINR")) == 2
    # And the other exchange is reachable by name
    assert [f.segment for f in registry.futures("USDINR", exchange="BCD")] == ["BCD-FUT"]
    assert registry.derivatives_exchange("INDIAVIX") is None


def test_primary_exchange_tie_goes_alphabetically_first() -> None:
    u = Universe()
    u.future("USDINR", MONTH, "CDS-FUT")
    u.future("USDINR", MONTH, "BCD-FUT")
    assert InstrumentRegistry(u.instruments).derivatives_exchange("USDINR") == "BCD"


def test_duplicate_contract_at_one_strike_keeps_the_lowest_token() -> None:
    # Given two calls at the same strike and expiry (an exchange error), higher token first
    u = Universe()
    u.option("NIFTY", MONTH, 26000.0, "CE", symbol="NIFTYX", exchange_token=500)
    u.option("NIFTY", MONTH, 26000.0, "CE", symbol="NIFTYY", exchange_token=400)
    # When the chain is built, Then the choice does not depend on row order
    chain = InstrumentRegistry(u.instruments).option_chain("NIFTY", MONTH)
    assert chain is not None
    assert chain.rows[0].ce is not None
    assert chain.rows[0].ce.tradingsymbol == "NIFTYY"


# --------------------------------------------------------------------------- ATM windows


def window_strikes(
    registry: InstrumentRegistry, price: float, n: int, k: int = 1, as_of: date = WEEK_1
) -> list[tuple[date | None, float, str]]:
    found = registry.atm_window("NIFTY", price, strikes_each_side=n, expiries=k, as_of=as_of)
    return [(i.expiry, i.strike, i.instrument_type.value) for i in found]


def test_price_between_strikes_centres_on_the_nearest(registry: InstrumentRegistry) -> None:
    # Given a price nearer 26000 than 26100, When a one-each-side window is taken
    window = window_strikes(registry, 26040.0, 1)
    # Then it is 25900..26100, CE before PE, strikes ascending
    assert window == [
        (WEEK_1, 25900.0, "CE"),
        (WEEK_1, 25900.0, "PE"),
        (WEEK_1, 26000.0, "CE"),
        (WEEK_1, 26000.0, "PE"),
        (WEEK_1, 26100.0, "CE"),
        (WEEK_1, 26100.0, "PE"),
    ]
    # And just past the midpoint it moves up one strike
    assert {s for _, s, _ in window_strikes(registry, 26050.01, 1)} == {26000.0, 26100.0, 26200.0}


def test_price_at_a_strike_and_exact_tie(registry: InstrumentRegistry) -> None:
    # Given a price exactly on a strike, Then that strike is the centre
    assert {s for _, s, _ in window_strikes(registry, 26100.0, 0)} == {26100.0}
    # Given a price exactly between two strikes, Then the lower one is (documented tie rule)
    assert {s for _, s, _ in window_strikes(registry, 26050.0, 0)} == {26000.0}


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (10.0, {25800.0, 25900.0, 26000.0}),  # below the chain: clipped, not shifted
        (25850.0, {25800.0, 25900.0, 26000.0}),  # tie at the lower edge goes to 25800
        (99999.0, {26000.0, 26100.0, 26200.0}),
    ],
)
def test_window_at_the_edge_of_the_chain_is_clipped(
    registry: InstrumentRegistry, price: float, expected: set[float]
) -> None:
    # Given a price at or beyond the chain's end, When two strikes each side are asked
    # Then only the strikes that exist on that side are returned
    assert {s for _, s, _ in window_strikes(registry, price, 2)} == expected


def test_several_expiries_nearest_first_and_missing_put_skipped(
    registry: InstrumentRegistry,
) -> None:
    # Given two expiries, the second of which has no 26200 put
    window = window_strikes(registry, 26200.0, 0, k=2)
    # Then each expiry contributes its own ATM contracts, nearest expiry first
    assert window == [
        (WEEK_1, 26200.0, "CE"),
        (WEEK_1, 26200.0, "PE"),
        (WEEK_2, 26200.0, "CE"),
    ]


def test_expired_expiry_is_excluded_after_1530_ist_on_expiry_day(
    registry: InstrumentRegistry,
) -> None:
    # Given instants on the first expiry's day, one second either side of 15:30 IST
    before = datetime.combine(WEEK_1, time(15, 29, 59), IST)
    at_close = datetime.combine(WEEK_1, time(15, 30), IST)

    def expiries_at(as_of: date | datetime) -> list[date | None]:
        found = registry.atm_window("NIFTY", 26000.0, strikes_each_side=0, expiries=1, as_of=as_of)
        return sorted({i.expiry for i in found})  # type: ignore[type-var]

    # When windows are taken, Then the expiry is live until 15:30 and gone from 15:30
    assert expiries_at(before) == [WEEK_1]
    assert expiries_at(at_close) == [WEEK_2]
    # And the same instant in UTC gives the same answer (10:00 UTC is 15:30 IST)
    assert expiries_at(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == [WEEK_2]
    # And a plain date means that day's start, so its expiry still counts
    assert expiries_at(WEEK_1) == [WEEK_1]
    assert expiries_at(date(2026, 12, 2)) == [WEEK_2]


def test_more_expiries_than_available_gives_what_there_is(registry: InstrumentRegistry) -> None:
    window = window_strikes(registry, 26000.0, 0, k=10, as_of=WEEK_2)
    assert sorted({e for e, _, _ in window}) == [WEEK_2, MONTH]  # type: ignore[type-var]
    assert window_strikes(registry, 26000.0, 0, k=10, as_of=date(2027, 1, 1)) == []


def test_zero_expiries_and_unknown_underlying_give_nothing(registry: InstrumentRegistry) -> None:
    assert window_strikes(registry, 26000.0, 3, k=0) == []
    assert registry.atm_window("NOPE", 1.0, strikes_each_side=1, expiries=1, as_of=WEEK_1) == ()


def test_window_on_a_named_exchange(registry: InstrumentRegistry) -> None:
    found = registry.atm_window(
        "SENSEX", 85040.0, strikes_each_side=0, expiries=1, as_of=WEEK_1, exchange="BFO"
    )
    assert [(i.strike, i.instrument_type.value) for i in found] == [
        (85000.0, "CE"),
        (85000.0, "PE"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"price": float("nan")}, ValueError, "finite"),
        ({"strikes_each_side": -1}, ValueError, ">= 0"),
        ({"expiries": -1}, ValueError, ">= 0"),
        ({"as_of": datetime(2026, 12, 1, 10, 0)}, NaiveDatetimeError, "no timezone"),
    ],
)
def test_window_rejects_bad_arguments(
    registry: InstrumentRegistry, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    arguments: dict[str, object] = {
        "price": 26000.0,
        "strikes_each_side": 1,
        "expiries": 1,
        "as_of": WEEK_1,
    } | kwargs
    with pytest.raises(error, match=match):
        registry.atm_window("NIFTY", **arguments)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- validation

GOOD_ROW = "10566658,41276,NIFTY26D0126000CE,NIFTY,0,2026-12-01,26000,0.05,75,CE,NFO-OPT,NFO"
GOOD_FIELDS = GOOD_ROW.split(",")


def with_field(column: str, value: str) -> str:
    fields = list(GOOD_FIELDS)
    fields[KITE_COLUMNS.index(column)] = value
    return ",".join(fields)


@pytest.mark.parametrize(
    ("row", "column", "kind"),
    [
        (",".join(GOOD_FIELDS[:9]), "instrument_type", ProblemKind.FIELD_COUNT),
        (GOOD_ROW + ",extra", None, ProblemKind.FIELD_COUNT),
        (with_field("instrument_token", "12a"), "instrument_token", ProblemKind.BAD_NUMBER),
        (with_field("instrument_token", "+10566658"), "instrument_token", ProblemKind.BAD_NUMBER),
        (with_field("instrument_token", "0"), "instrument_token", ProblemKind.BAD_NUMBER),
        (with_field("instrument_token", str(2**32)), "instrument_token", ProblemKind.BAD_NUMBER),
        (with_field("exchange_token", "-1"), "exchange_token", ProblemKind.BAD_NUMBER),
        (with_field("exchange_token", str(2**24)), "exchange_token", ProblemKind.BAD_NUMBER),
        (with_field("tradingsymbol", ""), "tradingsymbol", ProblemKind.BAD_VALUE),
        (with_field("last_price", "abc"), "last_price", ProblemKind.BAD_NUMBER),
        (with_field("last_price", "inf"), "last_price", ProblemKind.BAD_NUMBER),
        (with_field("strike", "nan"), "strike", ProblemKind.BAD_NUMBER),
        (with_field("strike", "-100"), "strike", ProblemKind.BAD_NUMBER),
        (with_field("tick_size", "-0.05"), "tick_size", ProblemKind.BAD_NUMBER),
        (with_field("lot_size", "1.5"), "lot_size", ProblemKind.BAD_NUMBER),
        (with_field("lot_size", "٧٥"), "lot_size", ProblemKind.BAD_NUMBER),  # Arabic-Indic digits
        (with_field("expiry", "2026-13-01"), "expiry", ProblemKind.BAD_DATE),
        (with_field("expiry", "01-12-2026"), "expiry", ProblemKind.BAD_DATE),
        (with_field("expiry", ""), "expiry", ProblemKind.BAD_DATE),  # an option needs one
        (with_field("instrument_type", "XX"), "instrument_type", ProblemKind.BAD_VALUE),
        (with_field("segment", "NYSE-OPT"), "segment", ProblemKind.BAD_VALUE),
        (with_field("exchange", ""), "exchange", ProblemKind.BAD_VALUE),
        (with_field("name", "NIF\x00TY"), "name", ProblemKind.BAD_VALUE),
        (with_field("tradingsymbol", "NIFTY\x0026DEC"), "tradingsymbol", ProblemKind.BAD_VALUE),
        (with_field("segment", "BFO-OPT"), "instrument_token", ProblemKind.TOKEN_MISMATCH),
        (with_field("exchange_token", "41277"), "instrument_token", ProblemKind.TOKEN_MISMATCH),
    ],
)
def test_each_row_problem_is_skipped_and_reported(
    row: str, column: str | None, kind: ProblemKind
) -> None:
    # Given a dump whose second data row (line 3) breaks one rule
    text = f"{HEADER}\n256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE\n{row}\n"
    # When parsed leniently
    result = parse_instruments(text)
    # Then the good row is kept and the bad one reported by line, column and kind
    assert symbols(result.instruments) == ["NIFTY 50"]
    (problem,) = result.problems
    assert (problem.line, problem.column, problem.kind) == (3, column, kind)
    assert str(problem).startswith(f"line 3, column {column}:" if column else "line 3:")
    # And strictly, the same problem is raised as a typed error naming line and column
    with pytest.raises(InstrumentsRowError) as raised:
        parse_instruments(text, strict=True)
    assert (raised.value.line, raised.value.column) == (3, column)
    assert raised.value.problem == problem


def test_duplicates_keep_the_first_row() -> None:
    # Given a row repeated with the same token, then one reusing the symbol with a new token
    other_token = with_field("exchange_token", "41277").replace("10566658", str(41277 << 8 | 2))
    text = f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n{other_token}\n"
    # When parsed
    result = parse_instruments(text)
    # Then the first row stands and each later one is reported against it
    assert len(result.instruments) == 1
    assert [(p.line, p.column, p.kind) for p in result.problems] == [
        (3, "instrument_token", ProblemKind.DUPLICATE_TOKEN),
        (4, "tradingsymbol", ProblemKind.DUPLICATE_SYMBOL),
    ]
    assert "duplicate of line 2" in result.problems[0].message


@pytest.mark.parametrize(
    ("text", "column", "match"),
    [
        ("", None, "empty dump"),
        (HEADER.removesuffix(",exchange") + "\n", "exchange", "missing columns"),
        (HEADER + ",oi\n", "oi", "unexpected columns"),
        (HEADER + ",name\n", "name", "unexpected columns"),
        (HEADER.replace("tradingsymbol", "symbol") + "\n", "tradingsymbol", "missing columns"),
        (
            HEADER.replace("strike,tick_size", "tick_size,strike") + "\n",
            "tick_size",
            "out of order",
        ),
    ],
)
def test_a_bad_header_rejects_the_whole_dump(text: str, column: str | None, match: str) -> None:
    # Given a dump whose header is not Kite's, When parsed (even leniently)
    # Then nothing is returned: a typed error names line 1 and the column
    with pytest.raises(InstrumentsFormatError, match=match) as raised:
        parse_instruments(text + GOOD_ROW + "\n" if text else text)
    assert (raised.value.line, raised.value.column) == (1, column)


def test_unreadable_csv_is_a_format_error() -> None:
    # Given a field longer than the csv module will read
    text = f"{HEADER}\n{GOOD_ROW}\n{with_field('name', 'N' * 200_000)}\n"
    # When parsed, Then a typed error names the line instead of a bare csv.Error escaping
    with pytest.raises(InstrumentsFormatError, match="unreadable CSV") as raised:
        parse_instruments(text)
    assert raised.value.line == 3


def test_a_cut_off_last_row_marks_the_dump_truncated() -> None:
    # Given a download cut in the middle of its last row
    text = f"{HEADER}\n256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE\n{GOOD_ROW[:40]}"
    # When parsed
    result = parse_instruments(text)
    # Then the short row is reported and the dump flagged, which the summary turns into a reason
    assert result.truncated
    assert result.problems[0].kind is ProblemKind.FIELD_COUNT
    assert "last row is truncated" in result.summary().shortfalls()


def test_a_short_row_in_the_middle_is_not_truncation() -> None:
    text = f"{HEADER}\n{GOOD_ROW[:40]}\n256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE\n"
    result = parse_instruments(text)
    assert not result.truncated
    assert len(result.problems) == 1


# --------------------------------------------------------------------------- summary


def test_summary_counts_segments_types_and_expiries(universe: list[Instrument]) -> None:
    # Given the generated universe written and parsed back
    summary = parse_instruments(write_instruments_csv(universe)).summary()
    # Then it counts what a download job compares day to day
    assert summary.instruments == summary.rows == len(universe)
    assert summary.rejected == 0
    assert summary.by_segment["NFO-OPT"] == 29
    assert summary.by_segment["INDICES"] == 4
    assert summary.by_type == {"CE": 17, "EQ": 6, "FUT": 7, "PE": 16}
    assert summary.expiries == (
        WEEK_1,
        date(2026, 12, 3),
        WEEK_2,
        MONTH,
        NEXT_MONTH,
        date(2027, 1, 27),
    )
    assert summary.shortfalls(summary) == ()


def test_summary_survives_json(universe: list[Instrument]) -> None:
    # Given a summary stored as JSON (yesterday's, in the download job's store)
    summary = parse_instruments(write_instruments_csv(universe)).summary()
    stored = json.dumps(summary.as_dict())
    # When read back, Then it is the same summary
    assert DumpSummary.from_dict(json.loads(stored)) == summary


def test_shortfalls_against_a_baseline(universe: list[Instrument]) -> None:
    # Given yesterday's full dump and today's without most NIFTY options and no CDS
    baseline = parse_instruments(write_instruments_csv(universe)).summary()
    today = [
        i
        for i in universe
        if i.segment != "CDS-FUT" and not (i.segment == "NFO-OPT" and i.expiry != WEEK_1)
    ]
    summary = parse_instruments(write_instruments_csv(today)).summary()
    # When compared, Then each shrunken or vanished segment is a reason
    assert summary.shortfalls(baseline) == (
        "segment CDS-FUT: 0 instruments, baseline 2",
        "segment NFO-OPT: 10 instruments, baseline 29",
    )
    # And a looser tolerance accepts the smaller drop only
    assert summary.shortfalls(baseline, max_drop=0.7) == (
        "segment CDS-FUT: 0 instruments, baseline 2",
    )


def test_shortfalls_without_a_baseline() -> None:
    # Given a header-only dump, and one where most rows are rejected
    empty = parse_instruments(HEADER + "\n").summary()
    mostly_bad = parse_instruments(
        f"{HEADER}\n{GOOD_ROW}\n{with_field('strike', 'x')}\n{with_field('lot_size', 'x')}\n"
    ).summary()
    # Then each is flagged for its own reason
    assert empty.shortfalls() == ("no instruments",)
    assert mostly_bad.shortfalls() == ("2 of 3 rows rejected",)


# --------------------------------------------------------------------------- writing


def test_writer_produces_kites_format_exactly() -> None:
    # Given the sample dump parsed, When written back, Then the text is byte-identical
    assert write_instruments_csv(parse_instruments(SAMPLE_DUMP).instruments) == SAMPLE_DUMP


def test_writer_quotes_only_where_csv_needs_it() -> None:
    # Given a name with a comma and a quote
    (equity,) = parse_instruments(
        f"{HEADER}\n738561,2885,RELIANCE,RELIANCE INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE\n"
    ).instruments
    text = write_instruments_csv([replace(equity, name='RELIANCE "RIL", MUMBAI')])
    # Then only that field is quoted, with the quote doubled
    assert (
        text.splitlines()[1]
        == '738561,2885,RELIANCE,"RELIANCE ""RIL"", MUMBAI",0,,0,0.05,1,EQ,NSE,NSE'
    )


def test_writer_refuses_what_the_parser_would_reject(universe: list[Instrument]) -> None:
    option = next(i for i in universe if i.is_option)
    for bad, match in [
        ([replace(option, instrument_token=option.instrument_token + 1)], "instrument_token"),
        ([replace(option, strike=float("inf"))], "strike"),
        ([replace(option, expiry=None)], "expiry"),
        ([replace(option, lot_size=-1)], "lot_size"),
        ([option, option], "duplicate"),
    ]:
        with pytest.raises(ValueError, match=match):
            write_instruments_csv(bad)


# Every segment family, in the shapes Kite's segment column takes.
SEGMENTS = [*SEGMENT_CODES, "NFO-FUT", "NFO-OPT", "BFO-OPT", "CDS-OPT", "MCX-FUT", "NCO-OPT"]
# Any text a database column can hold: no lone surrogates, no NUL (a row with one is refused).
STORABLE = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
ANY_TEXT = st.text(STORABLE, max_size=12)


@st.composite
def instruments(draw: st.DrawFn) -> Instrument:
    segment = draw(st.sampled_from(SEGMENTS))
    kind = draw(st.sampled_from(list(InstrumentType)))
    exchange_token = draw(st.integers(0, 2**24 - 1))
    any_expiry = st.dates(date(2000, 1, 1), date(2100, 12, 31))
    expiry = draw(any_expiry if kind is not InstrumentType.EQ else st.none() | any_expiry)
    non_negative = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
    return Instrument(
        instrument_token=instrument_token(exchange_token, segment),
        exchange_token=exchange_token,
        tradingsymbol=draw(st.text(STORABLE, min_size=1)),
        name=draw(ANY_TEXT),
        last_price=draw(st.floats(allow_nan=False, allow_infinity=False)),
        expiry=expiry,
        strike=draw(non_negative),
        tick_size=draw(non_negative),
        lot_size=draw(st.integers(0, 10**9)),
        instrument_type=kind,
        segment=segment,
        exchange=draw(st.text(STORABLE, min_size=1, max_size=6)),
    )


@given(
    st.lists(
        instruments(),
        max_size=20,
        unique_by=(lambda i: i.instrument_token, lambda i: (i.exchange, i.tradingsymbol)),
    )
)
def test_round_trip_parse_of_write_is_identity(items: list[Instrument]) -> None:
    # Given any valid instruments (any text in names, any finite numbers)
    # When written in Kite's format and parsed back
    result = parse_instruments(write_instruments_csv(items))
    # Then the same records come back, in order, with nothing rejected
    assert result.instruments == tuple(items)
    assert result.problems == ()
    assert result.rows == len(items)
