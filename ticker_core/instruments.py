"""Kite's instruments dump: parsing, validation, lookups and writing.

The dump is the CSV Kite serves at ``/instruments``, one row per tradable
instrument, with the twelve columns of :data:`KITE_COLUMNS` in that order.

Validation policy
-----------------
* **Whole-dump problems raise** :class:`InstrumentsFormatError`: an empty dump,
  a header that is not exactly Kite's twelve columns in Kite's order (missing,
  extra, renamed or reordered columns), or CSV the reader cannot split. Nothing
  in such a dump can be trusted, so nothing is returned.
* **Row problems skip the row and report it** as a :class:`RowProblem` (line,
  column, :class:`ProblemKind`) in the :class:`ParseResult`: wrong field count,
  bad numbers, bad dates, unknown instrument type or segment, a derivative
  without expiry, ``instrument_token != exchange_token << 8 | segment code``,
  and duplicates. For a duplicate token or ``(exchange, tradingsymbol)`` the
  first row wins and later ones are reported. One bad row among 100,000 should
  not stop the feed; ``parse_instruments(text, strict=True)`` raises
  :class:`InstrumentsRowError` at the first row problem instead.
* Blank lines are ignored. A short last row sets :attr:`ParseResult.truncated`,
  the usual sign of a cut-off download; :meth:`DumpSummary.shortfalls` turns
  that and shrunken segments into reasons to call a dump partial.

Underlying (the Kinesis partition key)
--------------------------------------
:attr:`Instrument.underlying` is, in order of precedence:

1. derivatives (FUT, CE, PE): the ``name`` column (NIFTY, BANKNIFTY, RELIANCE);
2. indices (segment INDICES): :data:`INDEX_UNDERLYINGS`, which maps an index's
   display name to its derivatives' name (``NIFTY 50`` -> ``NIFTY``);
3. NSE and BSE equities: the tradingsymbol;
4. anything else (an index not in the table, a derivative without a name): the
   tradingsymbol upper-cased with whitespace removed (``NIFTY IT`` ->
   ``NIFTYIT``), which is stable across dumps and already right for indices
   whose symbol is their derivatives' name (SENSEX, BANKEX).

So an option, its future and its index share one key, and one Kinesis shard
sees a whole chain in order.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from ticker_core.calendar import MARKET_CLOSE, parse_iso_date, require_aware
from ticker_core.kite import MAX_INSTRUMENT_TOKEN, SEGMENT_CODES
from ticker_core.tz import IST

__all__ = [
    "INDEX_UNDERLYINGS",
    "KITE_COLUMNS",
    "SEGMENT_CODES",
    "DumpSummary",
    "Instrument",
    "InstrumentRegistry",
    "InstrumentType",
    "InstrumentsError",
    "InstrumentsFormatError",
    "InstrumentsRowError",
    "OptionChain",
    "ParseResult",
    "ProblemKind",
    "RowProblem",
    "StrikeRow",
    "instrument_token",
    "parse_instruments",
    "write_instruments_csv",
]

KITE_COLUMNS: tuple[str, ...] = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)
"""The dump's header, in Kite's order."""

INDEX_UNDERLYINGS: Mapping[str, str] = MappingProxyType(
    {
        "NIFTY 50": "NIFTY",
        "NIFTY BANK": "BANKNIFTY",
        "NIFTY FIN SERVICE": "FINNIFTY",
        "NIFTY MID SELECT": "MIDCPNIFTY",
        "NIFTY NEXT 50": "NIFTYNXT50",
        "SENSEX": "SENSEX",
        "BANKEX": "BANKEX",
    }
)
"""Index tradingsymbol -> the ``name`` its derivatives carry, for indices whose
display name differs from it. Extend it when an index gains derivatives."""

_EXCHANGE_TOKEN_LIMIT = 1 << 24  # what fits above the 8-bit segment code


class InstrumentType(StrEnum):
    """Kite's ``instrument_type`` column."""

    EQ = "EQ"
    FUT = "FUT"
    CE = "CE"
    PE = "PE"


_DERIVATIVE_TYPES = frozenset({InstrumentType.FUT, InstrumentType.CE, InstrumentType.PE})


def instrument_token(exchange_token: int, segment: str) -> int:
    """Kite's instrument token: ``exchange_token << 8 | segment code``.

    ``segment`` is the dump's ``segment`` column (``NFO-OPT``, ``INDICES``...).
    Raises ``ValueError`` for an unknown segment family.
    """
    code = SEGMENT_CODES.get(segment.partition("-")[0])
    if code is None:
        raise ValueError(f"unknown segment {segment!r}")
    return exchange_token << 8 | code


def _underlying(
    tradingsymbol: str, name: str, instrument_type: InstrumentType, segment: str
) -> str:
    """The partition key of one instrument; the rule is in the module docstring."""
    if instrument_type in _DERIVATIVE_TYPES and name.strip():
        return name.strip()
    if segment == "INDICES":
        mapped = INDEX_UNDERLYINGS.get(tradingsymbol)
        if mapped is not None:
            return mapped
    elif instrument_type is InstrumentType.EQ and segment in ("NSE", "BSE"):
        return tradingsymbol
    return "".join(tradingsymbol.upper().split())


@dataclass(frozen=True, slots=True)
class Instrument:
    """One row of the dump, typed. ``underlying`` is derived, never passed."""

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: float
    expiry: date | None
    strike: float
    tick_size: float
    lot_size: int
    instrument_type: InstrumentType
    segment: str
    exchange: str
    underlying: str = field(init=False)

    def __post_init__(self) -> None:
        # Frozen: derived fields are set once, here, so equality and hashing
        # include them and no caller can pass a key that disagrees with the row.
        key = _underlying(self.tradingsymbol, self.name, self.instrument_type, self.segment)
        object.__setattr__(self, "underlying", key)

    @property
    def is_option(self) -> bool:
        """A call or a put."""
        return self.instrument_type in (InstrumentType.CE, InstrumentType.PE)

    @property
    def is_future(self) -> bool:
        """A future."""
        return self.instrument_type is InstrumentType.FUT


# --------------------------------------------------------------------------- validation


class ProblemKind(StrEnum):
    """Why a row was rejected."""

    FIELD_COUNT = "field_count"
    BAD_NUMBER = "bad_number"
    BAD_DATE = "bad_date"
    BAD_VALUE = "bad_value"
    TOKEN_MISMATCH = "token_mismatch"  # noqa: S105 - a kind, not a secret  # nosec B105
    DUPLICATE_TOKEN = "duplicate_token"  # noqa: S105 - a kind, not a secret  # nosec B105
    DUPLICATE_SYMBOL = "duplicate_symbol"


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A rejected row: its 1-based line in the dump (the header is line 1), the
    column at fault (``None`` when the row has too many fields) and why."""

    line: int
    column: str | None
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"


class InstrumentsError(ValueError):
    """A dump that cannot be used as given; ``line`` and ``column`` say where."""

    def __init__(self, message: str, *, line: int, column: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


class InstrumentsFormatError(InstrumentsError):
    """The dump as a whole is malformed (empty, wrong header, unreadable CSV)."""


class InstrumentsRowError(InstrumentsError):
    """A row problem, raised only by ``parse_instruments(..., strict=True)``."""

    def __init__(self, problem: RowProblem) -> None:
        super().__init__(str(problem), line=problem.line, column=problem.column)
        self.problem = problem


class _RowError(Exception):
    """Internal: one row's first problem, before its line number is attached."""

    def __init__(self, column: str | None, kind: ProblemKind, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.kind = kind
        self.message = message


def _quoted(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _parse_count(text: str, column: str) -> int:
    # str.isdigit alone accepts non-ASCII digits, and int() accepts "1_000" and
    # signs; a dump with either has changed format and should be reported.
    if not (text.isascii() and text.isdigit()):
        raise _RowError(column, ProblemKind.BAD_NUMBER, f"not a whole number: {_quoted(text)}")
    return int(text)


def _parse_real(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _RowError(column, ProblemKind.BAD_NUMBER, f"not a number: {_quoted(text)}") from None
    return value


def _parse_expiry(text: str) -> date | None:
    if not text:
        return None
    try:
        return parse_iso_date(text)
    except ValueError:
        raise _RowError(
            "expiry", ProblemKind.BAD_DATE, f"not a YYYY-MM-DD date: {_quoted(text)}"
        ) from None


def _instrument_from_fields(fields: list[str]) -> Instrument:
    if len(fields) != len(KITE_COLUMNS):
        column = KITE_COLUMNS[len(fields)] if len(fields) < len(KITE_COLUMNS) else None
        raise _RowError(
            column,
            ProblemKind.FIELD_COUNT,
            f"expected {len(KITE_COLUMNS)} fields, got {len(fields)}",
        )
    (token, exchange_token, symbol, name, last_price, expiry, strike, tick, lot, kind) = fields[:10]
    try:
        instrument_type = InstrumentType(kind)
    except ValueError:
        raise _RowError(
            "instrument_type", ProblemKind.BAD_VALUE, f"unknown instrument type {_quoted(kind)}"
        ) from None
    instrument = Instrument(
        instrument_token=_parse_count(token, "instrument_token"),
        exchange_token=_parse_count(exchange_token, "exchange_token"),
        tradingsymbol=symbol,
        name=name,
        last_price=_parse_real(last_price, "last_price"),
        expiry=_parse_expiry(expiry),
        strike=_parse_real(strike, "strike"),
        tick_size=_parse_real(tick, "tick_size"),
        lot_size=_parse_count(lot, "lot_size"),
        instrument_type=instrument_type,
        segment=fields[10],
        exchange=fields[11],
    )
    fault = _fault_in(instrument)
    if fault is not None:
        raise fault
    return instrument


def _fault_in(instrument: Instrument) -> _RowError | None:
    """The first rule ``instrument`` breaks, or None. Shared by parser and writer,
    so the writer refuses exactly what the parser would reject."""
    i = instrument
    number = ProblemKind.BAD_NUMBER
    if not 0 < i.instrument_token <= MAX_INSTRUMENT_TOKEN:
        return _RowError("instrument_token", number, f"out of range: {i.instrument_token}")
    if not 0 <= i.exchange_token < _EXCHANGE_TOKEN_LIMIT:
        return _RowError("exchange_token", number, f"out of range: {i.exchange_token}")
    if not i.tradingsymbol:
        return _RowError("tradingsymbol", ProblemKind.BAD_VALUE, "empty tradingsymbol")
    for column, text in (
        ("tradingsymbol", i.tradingsymbol), ("name", i.name),
        ("segment", i.segment), ("exchange", i.exchange),
    ):  # fmt: skip
        if "\x00" in text:  # no database text holds it; the name becomes the partition key
            return _RowError(column, ProblemKind.BAD_VALUE, "holds a NUL character")
    for column, value, may_be_negative in (
        ("last_price", i.last_price, True),  # spreads and some commodities trade below zero
        ("strike", i.strike, False),
        ("tick_size", i.tick_size, False),
    ):
        if not math.isfinite(value) or (value < 0 and not may_be_negative):
            return _RowError(column, number, f"out of range: {value!r}")
    if i.lot_size < 0:
        return _RowError("lot_size", number, f"out of range: {i.lot_size}")
    if i.instrument_type in _DERIVATIVE_TYPES and i.expiry is None:
        return _RowError("expiry", ProblemKind.BAD_DATE, f"{i.instrument_type} without expiry")
    if not i.exchange:
        return _RowError("exchange", ProblemKind.BAD_VALUE, "empty exchange")
    try:
        expected = instrument_token(i.exchange_token, i.segment)
    except ValueError:
        return _RowError("segment", ProblemKind.BAD_VALUE, f"unknown segment {_quoted(i.segment)}")
    if i.instrument_token != expected:
        return _RowError(
            "instrument_token",
            ProblemKind.TOKEN_MISMATCH,
            f"{i.instrument_token} is not exchange_token {i.exchange_token} << 8 | "
            f"{i.segment} code {expected & 0xFF} (= {expected})",
        )
    return None


# --------------------------------------------------------------------------- parse and write


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What :func:`parse_instruments` read: the good rows and the rejected ones."""

    instruments: tuple[Instrument, ...]
    problems: tuple[RowProblem, ...]
    rows: int
    """Data rows read, blank lines excluded (``len(instruments) + len(problems)``)."""
    truncated: bool
    """The last row had fewer fields than the header: most likely a cut-off download."""

    def summary(self) -> DumpSummary:
        """Counts for judging the dump complete or partial."""
        return DumpSummary(
            rows=self.rows,
            instruments=len(self.instruments),
            rejected=len(self.problems),
            truncated=self.truncated,
            by_segment=dict(sorted(Counter(i.segment for i in self.instruments).items())),
            by_type=dict(sorted(Counter(str(i.instrument_type) for i in self.instruments).items())),
            expiries=tuple(sorted({i.expiry for i in self.instruments if i.expiry is not None})),
        )


def parse_instruments(text: str, *, strict: bool = False) -> ParseResult:
    """Parse a Kite instruments dump.

    Raises :class:`InstrumentsFormatError` when the dump as a whole is unusable;
    otherwise skips and reports bad rows (see the module docstring), or raises
    :class:`InstrumentsRowError` at the first one when ``strict``.
    """
    # A UTF-8 byte-order mark is invisible in editors; Excel adds one on save.
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = _read_header(reader)
    instruments: list[Instrument] = []
    problems: list[RowProblem] = []
    tokens_seen: dict[int, int] = {}
    symbols_seen: dict[tuple[str, str], int] = {}
    rows = 0
    truncated = False
    end_of_previous = reader.line_num
    for fields in _rows(reader):
        line = end_of_previous + 1  # a quoted newline makes a row span lines
        end_of_previous = reader.line_num
        if not fields:
            continue
        rows += 1
        truncated = len(fields) < len(header)
        try:
            instrument = _instrument_from_fields(fields)
            _claim(tokens_seen, instrument.instrument_token, line, _SAME_TOKEN)
            symbol = (instrument.exchange, instrument.tradingsymbol)
            _claim(symbols_seen, symbol, line, _SAME_SYMBOL)
        except _RowError as fault:
            problem = RowProblem(line, fault.column, fault.kind, fault.message)
            if strict:
                raise InstrumentsRowError(problem) from None
            problems.append(problem)
            continue
        instruments.append(instrument)
    return ParseResult(tuple(instruments), tuple(problems), rows, truncated)


def _read_header(reader: Iterator[list[str]]) -> list[str]:
    header = next(_rows(reader), None)
    if header is None:
        raise InstrumentsFormatError("empty dump: no header", line=1)
    if tuple(header) == KITE_COLUMNS:
        return header
    missing = [c for c in KITE_COLUMNS if c not in header]
    unexpected = [
        c for n, c in enumerate(header) if c not in KITE_COLUMNS or c in header[:n]
    ]  # unknown or repeated
    if missing:
        message, column = f"header is missing columns {missing}", missing[0]
    elif unexpected:
        message, column = f"header has unexpected columns {unexpected}", unexpected[0]
    else:  # the same twelve names, so some position differs
        column = next(h for h, k in zip(header, KITE_COLUMNS, strict=False) if h != k)
        message = f"header columns are out of order: {header}"
    raise InstrumentsFormatError(message, line=1, column=column)


def _rows(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    """``reader``'s rows, turning the csv module's own errors into a typed one."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = getattr(reader, "line_num", 0)
            raise InstrumentsFormatError(f"unreadable CSV: {exc}", line=line) from None
        yield row


# The column and kind a duplicate key is reported under.
_Duplicate = tuple[str, ProblemKind]
_SAME_TOKEN: _Duplicate = ("instrument_token", ProblemKind.DUPLICATE_TOKEN)
_SAME_SYMBOL: _Duplicate = ("tradingsymbol", ProblemKind.DUPLICATE_SYMBOL)


def _claim(first_line_of: dict[Any, int], key: object, line: int, duplicate: _Duplicate) -> None:
    """Record ``key`` as first seen on ``line``, or fail if an earlier line has it."""
    earlier = first_line_of.setdefault(key, line)
    if earlier != line:
        column, kind = duplicate
        raise _RowError(column, kind, f"duplicate of line {earlier}: {key!r}")


def _format_real(value: float) -> str:
    # Kite writes whole numbers without a fraction ("0", "24000") and others in
    # shortest form ("0.05"); repr round-trips every finite float exactly.
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def write_instruments_csv(instruments: Iterable[Instrument]) -> str:
    """Write a dump in Kite's format: Kite's header, ``\\n`` line ends, minimal quoting.

    ``parse_instruments(write_instruments_csv(xs)).instruments == tuple(xs)``.
    To keep that true the writer raises ``ValueError`` for any instrument the
    parser would reject (out-of-range numbers, a token inconsistent with its
    exchange token and segment, duplicates), naming the instrument.
    """
    lines = [",".join(KITE_COLUMNS)]
    tokens_seen: dict[int, int] = {}
    symbols_seen: dict[tuple[str, str], int] = {}
    for line, i in enumerate(instruments, start=2):
        fault = _fault_in(i)
        try:
            if fault is not None:
                raise fault
            _claim(tokens_seen, i.instrument_token, line, _SAME_TOKEN)
            _claim(symbols_seen, (i.exchange, i.tradingsymbol), line, _SAME_SYMBOL)
        except _RowError as bad:
            raise ValueError(
                f"cannot write instrument {i.instrument_token} {i.tradingsymbol!r}: "
                f"{bad.column}: {bad.message}"
            ) from None
        fields = (
            str(i.instrument_token),
            str(i.exchange_token),
            _csv_field(i.tradingsymbol),
            _csv_field(i.name),
            _format_real(i.last_price),
            i.expiry.isoformat() if i.expiry is not None else "",
            _format_real(i.strike),
            _format_real(i.tick_size),
            str(i.lot_size),
            i.instrument_type.value,
            _csv_field(i.segment),
            _csv_field(i.exchange),
        )
        lines.append(",".join(fields))
    lines.append("")  # the file ends with a newline
    return "\n".join(lines)


def _csv_field(text: str) -> str:
    # Quote only where CSV needs it, as Kite does. Not csv.writer: with "\n"
    # line ends it leaves a lone "\r" unquoted, which readers take as a line end.
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True, slots=True)
class DumpSummary:
    """Counts an instruments-download job keeps and compares day to day."""

    rows: int
    instruments: int
    rejected: int
    truncated: bool
    by_segment: Mapping[str, int]
    by_type: Mapping[str, int]
    expiries: tuple[date, ...]
    """Every distinct derivative expiry in the dump, ascending."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for logs and for tomorrow's :meth:`from_dict`."""
        return {
            "rows": self.rows,
            "instruments": self.instruments,
            "rejected": self.rejected,
            "truncated": self.truncated,
            "by_segment": dict(self.by_segment),
            "by_type": dict(self.by_type),
            "expiries": [d.isoformat() for d in self.expiries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DumpSummary:
        """Rebuild a summary from :meth:`as_dict` output (``KeyError``/``ValueError`` if not)."""
        return cls(
            rows=int(data["rows"]),
            instruments=int(data["instruments"]),
            rejected=int(data["rejected"]),
            truncated=bool(data["truncated"]),
            by_segment={str(k): int(v) for k, v in data["by_segment"].items()},
            by_type={str(k): int(v) for k, v in data["by_type"].items()},
            expiries=tuple(parse_iso_date(str(d)) for d in data["expiries"]),
        )

    def shortfalls(
        self, baseline: DumpSummary | None = None, *, max_drop: float = 0.2
    ) -> tuple[str, ...]:
        """Reasons to treat this dump as partial; empty when it looks complete.

        Without a baseline: no instruments, a truncated last row, or more than
        ``max_drop`` of the rows rejected. With one (say, yesterday's summary):
        also any segment that shrank by more than ``max_drop`` or vanished.
        Expiries roll daily and listings change, so small drops are normal.
        """
        reasons: list[str] = []
        if self.instruments == 0:
            reasons.append("no instruments")
        if self.truncated:
            reasons.append("last row is truncated")
        if self.rows and self.rejected > max_drop * self.rows:
            reasons.append(f"{self.rejected} of {self.rows} rows rejected")
        if baseline is not None:
            for segment, before in baseline.by_segment.items():
                now = self.by_segment.get(segment, 0)
                if now < (1.0 - max_drop) * before:
                    reasons.append(f"segment {segment}: {now} instruments, baseline {before}")
        return tuple(reasons)


# --------------------------------------------------------------------------- lookups


@dataclass(frozen=True, slots=True)
class StrikeRow:
    """One strike of a chain with its call and put (either may be unlisted)."""

    strike: float
    ce: Instrument | None
    pe: Instrument | None


@dataclass(frozen=True, slots=True)
class OptionChain:
    """The options of one underlying, exchange and expiry, by ascending strike."""

    underlying: str
    exchange: str
    expiry: date
    rows: tuple[StrikeRow, ...]
    strikes: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Kept beside rows so atm_window can bisect without rebuilding a list.
        object.__setattr__(self, "strikes", tuple(r.strike for r in self.rows))


class InstrumentRegistry:
    """Every lookup the service needs over one parsed dump. Immutable once built.

    When more than one exchange lists derivatives on an underlying (USDINR on
    CDS and BCD, a stock on NFO and BFO), chains, futures and expiries come from
    :meth:`derivatives_exchange` unless ``exchange`` is given, so strikes from
    two exchanges never mix in one chain.
    """

    __slots__ = (
        "_by_symbol",
        "_by_token",
        "_chains",
        "_expiries",
        "_futures",
        "_instruments",
        "_primary_exchange",
    )

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        """Index ``instruments`` (usually ``parse_instruments(text).instruments``).

        Raises ``ValueError`` on a duplicate token or ``(exchange, tradingsymbol)``.
        """
        self._instruments = tuple(instruments)
        self._by_token: dict[int, Instrument] = {}
        self._by_symbol: dict[tuple[str, str], Instrument] = {}
        for i in self._instruments:
            if self._by_token.setdefault(i.instrument_token, i) is not i:
                raise ValueError(f"duplicate instrument_token {i.instrument_token}")
            if self._by_symbol.setdefault((i.exchange, i.tradingsymbol), i) is not i:
                raise ValueError(f"duplicate symbol {i.exchange}:{i.tradingsymbol}")

        contracts: Counter[tuple[str, str]] = Counter()
        options: dict[tuple[str, str, date], list[Instrument]] = {}
        futures: dict[tuple[str, str], list[Instrument]] = {}
        for i in self._instruments:
            if i.expiry is None or i.instrument_type not in _DERIVATIVE_TYPES:
                continue
            contracts[i.underlying, i.exchange] += 1
            if i.is_future:
                futures.setdefault((i.underlying, i.exchange), []).append(i)
            else:
                options.setdefault((i.underlying, i.exchange, i.expiry), []).append(i)

        # Most contracts wins; ties go to the alphabetically first exchange.
        self._primary_exchange: dict[str, str] = {}
        ranked = sorted(contracts.items(), key=lambda item: (-item[1], item[0][1]))
        for (underlying, exchange), _ in ranked:
            self._primary_exchange.setdefault(underlying, exchange)

        self._futures = {
            key: tuple(sorted(group, key=lambda f: (f.expiry, f.instrument_token)))
            for key, group in futures.items()
        }
        self._chains = {key: _build_chain(*key, group) for key, group in options.items()}
        expiries: dict[tuple[str, str], list[date]] = {}
        for underlying, exchange, expiry in self._chains:
            expiries.setdefault((underlying, exchange), []).append(expiry)
        self._expiries = {key: tuple(sorted(dates)) for key, dates in expiries.items()}

    def __len__(self) -> int:
        return len(self._instruments)

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        """All instruments, in the order given."""
        return self._instruments

    def by_token(self, token: int) -> Instrument | None:
        """The instrument with this ``instrument_token``, if listed."""
        return self._by_token.get(token)

    def by_symbol(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        """The instrument Kite calls ``exchange:tradingsymbol``, if listed."""
        return self._by_symbol.get((exchange, tradingsymbol))

    def underlying_of(self, token: int) -> str | None:
        """The partition key of one token (a dict lookup; for a whole frame, see
        :class:`ticker_core.underlying_codes.UnderlyingLookup`)."""
        instrument = self._by_token.get(token)
        return instrument.underlying if instrument is not None else None

    def derivatives_exchange(self, underlying: str) -> str | None:
        """The exchange listing most derivatives on ``underlying`` (None if none)."""
        return self._primary_exchange.get(underlying)

    def futures(self, underlying: str, *, exchange: str | None = None) -> tuple[Instrument, ...]:
        """The underlying's futures, nearest expiry first."""
        venue = exchange or self._primary_exchange.get(underlying, "")
        return self._futures.get((underlying, venue), ())

    def expiries(self, underlying: str, *, exchange: str | None = None) -> tuple[date, ...]:
        """The expiry dates of the underlying's option chains, ascending.

        Futures' expiries are on :meth:`futures`; the two differ for MCX, whose
        options expire before their futures.
        """
        venue = exchange or self._primary_exchange.get(underlying, "")
        return self._expiries.get((underlying, venue), ())

    def option_chain(
        self, underlying: str, expiry: date, *, exchange: str | None = None
    ) -> OptionChain | None:
        """The underlying's chain for one expiry, or None if there is none."""
        venue = exchange or self._primary_exchange.get(underlying, "")
        return self._chains.get((underlying, venue, expiry))

    def atm_window(
        self,
        underlying: str,
        price: float,
        *,
        strikes_each_side: int,
        expiries: int,
        as_of: date | datetime,
        exchange: str | None = None,
    ) -> tuple[Instrument, ...]:
        """The calls and puts around the money for the nearest live expiries.

        For each of the ``expiries`` nearest expiries still live at ``as_of``
        (an expiry is live until 15:30 IST on its date; a plain date means the
        start of that day, so that day's expiry counts), take the strike nearest
        ``price`` (the lower one on an exact tie) and ``strikes_each_side``
        strikes either side, clipped at the chain's ends rather than shifted.
        Returns CE then PE per strike, strikes ascending, expiries ascending.
        Fewer live expiries than asked gives what there is; an unknown
        underlying gives an empty tuple. Re-centring as the price moves is the
        caller's: this is a pure function of its arguments, O(K log n).
        """
        if not math.isfinite(price):
            raise ValueError(f"price must be finite, got {price!r}")
        if strikes_each_side < 0 or expiries < 0:
            raise ValueError("strikes_each_side and expiries must be >= 0")
        venue = exchange or self._primary_exchange.get(underlying, "")
        dates = self._expiries.get((underlying, venue), ())
        first = bisect.bisect_left(dates, _first_live_expiry(as_of))
        window: list[Instrument] = []
        for expiry in dates[first : first + expiries]:
            chain = self._chains[underlying, venue, expiry]
            atm = _nearest_index(chain.strikes, price)
            low = max(0, atm - strikes_each_side)
            for row in chain.rows[low : atm + strikes_each_side + 1]:
                window.extend(i for i in (row.ce, row.pe) if i is not None)
        return tuple(window)


def _build_chain(
    underlying: str, exchange: str, expiry: date, options: list[Instrument]
) -> OptionChain:
    calls: dict[float, Instrument] = {}
    puts: dict[float, Instrument] = {}
    # Two contracts at one strike and right would be an exchange error; keep
    # the lowest token so the choice does not depend on row order.
    for option in sorted(options, key=lambda o: o.instrument_token):
        side = calls if option.instrument_type is InstrumentType.CE else puts
        side.setdefault(option.strike, option)
    rows = tuple(
        StrikeRow(strike, calls.get(strike), puts.get(strike))
        for strike in sorted(calls.keys() | puts.keys())
    )
    return OptionChain(underlying, exchange, expiry, rows)


def _first_live_expiry(as_of: date | datetime) -> date:
    """The earliest expiry date still live at ``as_of``."""
    if isinstance(as_of, datetime):
        local = require_aware(as_of, "as_of").astimezone(IST)
        if local.time() >= MARKET_CLOSE:
            return local.date() + timedelta(days=1)
        return local.date()
    return as_of


def _nearest_index(strikes: tuple[float, ...], price: float) -> int:
    """Index of the strike nearest ``price`` in ascending ``strikes``; ties go low."""
    right = bisect.bisect_left(strikes, price)
    if right == 0:
        return 0
    if right == len(strikes):
        return right - 1
    left = right - 1
    return left if price - strikes[left] <= strikes[right] - price else right
