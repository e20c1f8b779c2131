"""The NSE trading calendar: named sessions, holidays and time to expiry, in IST.

Every instant this module accepts must be timezone-aware: a naive datetime
raises :class:`NaiveDatetimeError` instead of being read as local time, because
Lambdas run in UTC and developers' laptops do not, and the same naive value
would mean two different instants.

Holidays come from the committed ``ticker_core/data/nse_holidays.csv`` (its
header names the sources) and weekend sessions, such as Budget days, from
``nse_special_sessions.csv``. NSE publishes the next year's list each December;
:meth:`NseCalendar.load` takes extra files so a deployment can add it before a
release does. Weekdays of years the files do not cover count as trading days,
and :attr:`NseCalendar.known_years` lets a caller alarm on that.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from ticker_core.tz import IST

__all__ = [
    "MARKET_CLOSE",
    "MARKET_OPEN",
    "SECONDS_PER_YEAR",
    "SESSION_WINDOWS",
    "CalendarDataError",
    "NaiveDatetimeError",
    "NseCalendar",
    "Session",
    "SessionWindow",
    "expiry_instant",
    "parse_iso_date",
    "require_aware",
    "year_fraction",
]

SECONDS_PER_YEAR = 365 * 86400
"""The year of time to expiry: calendar seconds, 365-day years (DESIGN.md)."""

MARKET_OPEN = time(9, 15)
"""Start of the normal market session, IST."""

MARKET_CLOSE = time(15, 30)
"""End of the normal market session, IST; also the expiry time of NSE contracts."""


class Session(StrEnum):
    """The NSE equity session an instant falls in."""

    CLOSED = "closed"
    PRE_OPEN_ORDER_ENTRY = "pre_open_order_entry"
    """09:00-09:08: orders are entered, modified and cancelled; nothing trades."""
    PRE_OPEN_MATCHING = "pre_open_matching"
    """09:08-09:15: the call auction matches, then a buffer before the open."""
    NORMAL = "normal"
    """09:15-15:30: continuous trading. The only session :meth:`NseCalendar.is_open` counts."""
    POST_CLOSE = "post_close"
    """15:40-16:00: orders at the closing price only."""


@dataclass(frozen=True, slots=True)
class SessionWindow:
    """A session's span on a trading day, half-open: ``start <= t < end`` (IST)."""

    session: Session
    start: time
    end: time


SESSION_WINDOWS: tuple[SessionWindow, ...] = (
    SessionWindow(Session.PRE_OPEN_ORDER_ENTRY, time(9, 0), time(9, 8)),
    SessionWindow(Session.PRE_OPEN_MATCHING, time(9, 8), MARKET_OPEN),
    SessionWindow(Session.NORMAL, MARKET_OPEN, MARKET_CLOSE),
    # 15:30-15:40 computes the closing price; no orders, so it is CLOSED.
    SessionWindow(Session.POST_CLOSE, time(15, 40), time(16, 0)),
)
"""Every session of a trading day, in order. NSE closes pre-open order entry at
a random second of its last minute; the calendar uses the published 09:08."""


class NaiveDatetimeError(ValueError):
    """A datetime without a timezone was given where an instant is required."""


class CalendarDataError(ValueError):
    """A holiday or special-session file (or mapping) is malformed.

    ``source`` names the file and ``line`` its 1-based line, where known.
    """

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + message)
        self.source = source
        self.line = line


def require_aware(instant: datetime, what: str = "instant") -> datetime:
    """Return ``instant`` unchanged if it is timezone-aware.

    Raises :class:`NaiveDatetimeError` for a naive datetime and ``TypeError``
    for anything that is not a datetime, naming ``what`` in the message.
    """
    if not isinstance(instant, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(instant).__name__}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise NaiveDatetimeError(
            f"{what} {instant.isoformat()} has no timezone; pass an aware datetime "
            "(for example with tzinfo=ticker_core.tz.IST or datetime.UTC)"
        )
    return instant


def parse_iso_date(text: str) -> date:
    """Parse exactly ``YYYY-MM-DD``; ``ValueError`` otherwise.

    Stricter than :meth:`date.fromisoformat`, which since Python 3.11 also takes
    ``YYYYMMDD`` and week dates: a dump or holiday file in another format is a
    format change to report, not to guess at.
    """
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(f"not a YYYY-MM-DD date: {text!r}")
    return date.fromisoformat(text)


def expiry_instant(expiry: date) -> datetime:
    """The instant a contract expiring on ``expiry`` expires: 15:30 IST that day.

    The date is taken as the exchange gives it in the instruments dump (already
    moved off holidays), so no calendar is consulted. A datetime is refused with
    ``TypeError``: its time and timezone would be silently dropped.
    """
    if isinstance(expiry, datetime) or not isinstance(expiry, date):
        raise TypeError(f"expiry must be a date, not {type(expiry).__name__}")
    return datetime.combine(expiry, MARKET_CLOSE, IST)


def year_fraction(now: datetime, expiry: date) -> float:
    """Time from ``now`` to 15:30 IST on ``expiry`` in years of 365 x 86400 seconds.

    Zero at the expiry instant and negative after it: it never raises for an
    expired contract, so option math can turn T <= 0 into its own reason code.
    A naive ``now`` still raises :class:`NaiveDatetimeError`.
    """
    require_aware(now, "now")
    return (expiry_instant(expiry) - now).total_seconds() / SECONDS_PER_YEAR


class NseCalendar:
    """Trading days and sessions of NSE's equity and equity-derivatives segments.

    A trading day is a weekday that is not a holiday, or a special session day
    (a weekend day with a full session, such as a Budget Sunday). Every trading
    day has the sessions of :data:`SESSION_WINDOWS`. Immutable once built.
    """

    __slots__ = ("_holidays", "_special_sessions")

    def __init__(
        self,
        holidays: Mapping[date, str],
        special_sessions: Mapping[date, str] | None = None,
    ) -> None:
        """Build a calendar from holiday and special-session dates (with descriptions).

        Raises :class:`CalendarDataError` when a date is both.
        """
        special = dict(special_sessions or {})
        both = sorted(set(holidays) & set(special))
        if both:
            raise CalendarDataError(
                f"dates listed both as holiday and special session: {both[0].isoformat()}"
            )
        self._holidays = MappingProxyType(dict(sorted(holidays.items())))
        self._special_sessions = MappingProxyType(dict(sorted(special.items())))

    @classmethod
    def load(
        cls,
        holiday_files: Iterable[str | Path] = (),
        special_session_files: Iterable[str | Path] = (),
        *,
        include_packaged: bool = True,
    ) -> NseCalendar:
        """The packaged calendar, extended or replaced by files of the same format.

        Files are ``date,description`` CSV with ``#`` comment lines. With
        ``include_packaged`` (the default) the given files add to the committed
        lists, a later file's description winning for a repeated date; without
        it they replace them, which is how a moved holiday is corrected.
        Raises :class:`CalendarDataError` naming the file and line of a problem.
        """
        holidays: dict[date, str] = {}
        special: dict[date, str] = {}
        if include_packaged:
            data = resources.files("ticker_core").joinpath("data")
            for name, target in (
                ("nse_holidays.csv", holidays),
                ("nse_special_sessions.csv", special),
            ):
                resource = data.joinpath(name)
                target.update(_parse_dated_rows(resource.read_text("utf-8"), name))
        for path in holiday_files:
            holidays.update(_parse_dated_rows(Path(path).read_text("utf-8"), str(path)))
        for path in special_session_files:
            special.update(_parse_dated_rows(Path(path).read_text("utf-8"), str(path)))
        return cls(holidays, special)

    @property
    def holidays(self) -> Mapping[date, str]:
        """Holiday dates (ascending) and their descriptions."""
        return self._holidays

    @property
    def special_sessions(self) -> Mapping[date, str]:
        """Weekend dates with a full session (ascending) and their descriptions."""
        return self._special_sessions

    @property
    def known_years(self) -> frozenset[int]:
        """Years with at least one listed holiday: the years the data covers.

        NSE has holidays every year, so a year missing here means its list was
        never loaded and its weekdays are all being treated as trading days.
        """
        return frozenset(d.year for d in self._holidays)

    def is_trading_day(self, day: date) -> bool:
        """Whether ``day`` has trading sessions. A datetime is refused (``TypeError``):
        which day it is depends on its timezone; use :meth:`session_at` for instants."""
        if isinstance(day, datetime) or not isinstance(day, date):
            raise TypeError(f"day must be a date, not {type(day).__name__}")
        if day in self._special_sessions:
            return True
        return day.weekday() < 5 and day not in self._holidays

    def session_at(self, instant: datetime) -> Session:
        """The session ``instant`` (aware, any timezone) falls in, judged in IST."""
        local = require_aware(instant).astimezone(IST)
        if not self.is_trading_day(local.date()):
            return Session.CLOSED
        clock = local.time()
        for window in SESSION_WINDOWS:
            if window.start <= clock < window.end:
                return window.session
        return Session.CLOSED

    def is_open(self, instant: datetime) -> bool:
        """Whether the normal market (continuous trading, 09:15-15:30 IST) is on."""
        return self.session_at(instant) is Session.NORMAL

    def next_open(self, instant: datetime) -> datetime:
        """The first normal-session start strictly after ``instant``, in IST.

        During a session this is the next trading day's open, not the current one.
        """
        return self._next_daily(require_aware(instant), MARKET_OPEN)

    def next_close(self, instant: datetime) -> datetime:
        """The first normal-session end strictly after ``instant``, in IST.

        During a session this is today's 15:30; after it, the next trading day's.
        """
        return self._next_daily(require_aware(instant), MARKET_CLOSE)

    def _next_daily(self, instant: datetime, at: time) -> datetime:
        day = instant.astimezone(IST).date()
        while True:
            # Terminates: the holiday list is finite, so a later weekday is a trading day.
            candidate = datetime.combine(day, at, IST)
            if candidate > instant and self.is_trading_day(day):
                return candidate
            day += timedelta(days=1)


def _parse_dated_rows(text: str, source: str) -> dict[date, str]:
    """Parse ``date,description`` CSV text with ``#`` comments into a date mapping."""
    rows: dict[date, str] = {}
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = next(csv.reader([line]))
        if not header_seen:
            if [f.strip() for f in fields] != ["date", "description"]:
                raise CalendarDataError(
                    f"header must be 'date,description', got {line!r}", source=source, line=number
                )
            header_seen = True
            continue
        if len(fields) != 2:
            raise CalendarDataError(
                f"expected 2 fields (date,description), got {len(fields)}",
                source=source,
                line=number,
            )
        try:
            day = parse_iso_date(fields[0].strip())
        except ValueError:
            raise CalendarDataError(
                f"date must be YYYY-MM-DD, got {fields[0]!r}", source=source, line=number
            ) from None
        if day in rows:
            raise CalendarDataError(
                f"{day.isoformat()} is listed twice", source=source, line=number
            )
        rows[day] = fields[1].strip()
    if not header_seen:
        raise CalendarDataError("no 'date,description' header", source=source)
    return rows
