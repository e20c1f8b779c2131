"""NSE calendar: sessions, holidays, next open/close and time to expiry."""

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest

from ticker_core.calendar import (
    SECONDS_PER_YEAR,
    CalendarDataError,
    NaiveDatetimeError,
    NseCalendar,
    Session,
    expiry_instant,
    parse_iso_date,
    require_aware,
    year_fraction,
)
from ticker_core.expiry_arrays import expiry_epoch_seconds, year_fractions
from ticker_core.tz import IST

# Dates used throughout, checked against the packaged holiday list.
FRIDAY = date(2026, 11, 27)
SATURDAY = date(2026, 11, 28)
NEXT_MONDAY = date(2026, 11, 30)
GURU_NANAK = date(2026, 11, 24)  # Tuesday holiday
BUDGET_SUNDAY = date(2026, 2, 1)  # special session


@pytest.fixture(scope="module")
def nse() -> NseCalendar:
    return NseCalendar.load()


def ist(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), IST)


# --------------------------------------------------------------------------- packaged data


def test_packaged_calendar_covers_2025_and_2026_with_weekday_holidays(nse: NseCalendar) -> None:
    # Given the committed holiday and special-session files
    # When they are loaded (the fixture)
    # Then both years are covered, with NSE's published counts
    assert nse.known_years == frozenset({2025, 2026})
    assert sum(d.year == 2025 for d in nse.holidays) == 14
    assert sum(d.year == 2026 for d in nse.holidays) == 16
    # And every holiday is a weekday and every special session a weekend day
    assert all(d.weekday() < 5 for d in nse.holidays)
    assert all(d.weekday() >= 5 for d in nse.special_sessions)
    assert nse.holidays[GURU_NANAK] == "Prakash Gurpurb Sri Guru Nanak Dev"
    assert list(nse.holidays) == sorted(nse.holidays)


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        (time(8, 59, 59), Session.CLOSED),
        (time(9, 0), Session.PRE_OPEN_ORDER_ENTRY),
        (time(9, 7, 59), Session.PRE_OPEN_ORDER_ENTRY),
        (time(9, 8), Session.PRE_OPEN_MATCHING),
        (time(9, 14, 59, 999999), Session.PRE_OPEN_MATCHING),
        (time(9, 15), Session.NORMAL),
        (time(15, 29, 59), Session.NORMAL),
        (time(15, 30), Session.CLOSED),
        (time(15, 39, 59), Session.CLOSED),
        (time(15, 40), Session.POST_CLOSE),
        (time(15, 59, 59), Session.POST_CLOSE),
        (time(16, 0), Session.CLOSED),
    ],
)
def test_session_boundaries_on_a_trading_day(
    nse: NseCalendar, clock: time, expected: Session
) -> None:
    # Given an instant on an ordinary Friday, When its session is asked
    session = nse.session_at(datetime.combine(FRIDAY, clock, IST))
    # Then it falls in the half-open window NSE publishes
    assert session is expected
    assert nse.is_open(datetime.combine(FRIDAY, clock, IST)) is (expected is Session.NORMAL)


def test_instants_in_other_timezones_are_judged_in_ist(nse: NseCalendar) -> None:
    # Given 03:45 UTC, which is 09:15 IST
    instant = datetime(2026, 11, 27, 3, 45, tzinfo=UTC)
    # When asked, Then the normal market has just opened
    assert nse.session_at(instant) is Session.NORMAL
    # And 18:40 UTC on Thursday is already Friday 00:10 IST: closed, not Thursday's post-close
    assert nse.session_at(datetime(2026, 11, 26, 18, 40, tzinfo=UTC)) is Session.CLOSED


@pytest.mark.parametrize("day", [SATURDAY, GURU_NANAK, date(2025, 10, 21)])
def test_weekends_and_holidays_have_no_session(nse: NseCalendar, day: date) -> None:
    # Given mid-morning on a weekend or holiday (incl. the muhurat day, not modelled)
    # When asked, Then the market is closed
    assert nse.session_at(ist(day, 10)) is Session.CLOSED
    assert not nse.is_open(ist(day, 10))
    assert not nse.is_trading_day(day)


def test_budget_sunday_trades_normal_hours(nse: NseCalendar) -> None:
    # Given the Union Budget Sunday special session
    # When asked, Then it is a trading day with the usual sessions
    assert nse.is_trading_day(BUDGET_SUNDAY)
    assert nse.session_at(ist(BUDGET_SUNDAY, 9, 5)) is Session.PRE_OPEN_ORDER_ENTRY
    assert nse.is_open(ist(BUDGET_SUNDAY, 11))


def test_is_trading_day_weekday_weekend_and_unlisted_year(nse: NseCalendar) -> None:
    # Given dates of each kind, Then weekdays trade, weekends do not
    assert nse.is_trading_day(FRIDAY)
    assert not nse.is_trading_day(SATURDAY)
    assert not nse.is_trading_day(SATURDAY + timedelta(days=1))
    # And a weekday of a year without a loaded list counts as trading (known_years flags it)
    assert nse.is_trading_day(date(2027, 1, 26))
    assert 2027 not in nse.known_years


def test_is_trading_day_refuses_a_datetime(nse: NseCalendar) -> None:
    # Given a datetime, whose date depends on its timezone
    # When passed where a date belongs, Then it is refused rather than truncated
    with pytest.raises(TypeError, match="date"):
        nse.is_trading_day(ist(FRIDAY, 10))


# --------------------------------------------------------------------------- next open / close


@pytest.mark.parametrize(
    ("now", "expected_open"),
    [
        (ist(FRIDAY, 8), ist(FRIDAY, 9, 15)),  # before the open: today
        (ist(FRIDAY, 9, 15), ist(NEXT_MONDAY, 9, 15)),  # exactly at the open: strictly after
        (ist(FRIDAY, 12), ist(NEXT_MONDAY, 9, 15)),  # during the session: next trading day
        (ist(FRIDAY, 16), ist(NEXT_MONDAY, 9, 15)),  # across the weekend
        (ist(SATURDAY, 12), ist(NEXT_MONDAY, 9, 15)),
        (ist(date(2026, 11, 23), 15, 45), ist(date(2026, 11, 25), 9, 15)),  # across a holiday
        # Thursday before Good Friday: holiday then weekend
        (ist(date(2026, 4, 2), 16), ist(date(2026, 4, 6), 9, 15)),
        # Friday before the Budget Sunday: the special session comes first
        (ist(date(2026, 1, 30), 16), ist(BUDGET_SUNDAY, 9, 15)),
    ],
)
def test_next_open(nse: NseCalendar, now: datetime, expected_open: datetime) -> None:
    # Given an instant, When the next open is asked
    opened = nse.next_open(now)
    # Then it is the first normal-session start strictly after it, in IST
    assert opened == expected_open
    assert opened.utcoffset() == timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(
    ("now", "expected_close"),
    [
        (ist(FRIDAY, 8), ist(FRIDAY, 15, 30)),
        (ist(FRIDAY, 12), ist(FRIDAY, 15, 30)),
        (ist(FRIDAY, 15, 30), ist(NEXT_MONDAY, 15, 30)),
        (ist(SATURDAY, 12), ist(NEXT_MONDAY, 15, 30)),
    ],
)
def test_next_close(nse: NseCalendar, now: datetime, expected_close: datetime) -> None:
    # Given an instant, When the next close is asked, Then it is the next 15:30 of a trading day
    assert nse.next_close(now) == expected_close


def test_next_open_accepts_utc_instants(nse: NseCalendar) -> None:
    # Given Friday 10:30 UTC (16:00 IST), When the next open is asked
    opened = nse.next_open(datetime(2026, 11, 27, 10, 30, tzinfo=UTC))
    # Then it is Monday 09:15 IST, the same instant as 03:45 UTC
    assert opened == datetime(2026, 11, 30, 3, 45, tzinfo=UTC)


# --------------------------------------------------------------------------- naive datetimes


@pytest.mark.parametrize(
    "call",
    [
        lambda c, t: c.session_at(t),
        lambda c, t: c.is_open(t),
        lambda c, t: c.next_open(t),
        lambda c, t: c.next_close(t),
        lambda c, t: year_fraction(t, FRIDAY),
    ],
    ids=["session_at", "is_open", "next_open", "next_close", "year_fraction"],
)
def test_naive_datetimes_are_rejected(
    nse: NseCalendar, call: Callable[[NseCalendar, datetime], object]
) -> None:
    # Given a datetime without a timezone
    naive = datetime(2026, 11, 27, 10, 0)
    # When any calendar function gets it, Then a typed error says so instead of assuming local
    with pytest.raises(NaiveDatetimeError, match="no timezone"):
        call(nse, naive)


def test_require_aware_refuses_non_datetimes() -> None:
    # Given a date where an instant belongs, When checked, Then TypeError names the argument
    with pytest.raises(TypeError, match="as_of must be a datetime"):
        require_aware(FRIDAY, "as_of")  # type: ignore[arg-type]


# --------------------------------------------------------------------- expiry and year fraction


def test_expiry_instant_is_1530_ist() -> None:
    # Given an expiry date, When its instant is asked
    instant = expiry_instant(date(2026, 12, 29))
    # Then it is 15:30 IST, i.e. 10:00 UTC, that day
    assert instant == datetime(2026, 12, 29, 10, 0, tzinfo=UTC)
    assert instant.tzinfo is IST


def test_expiry_instant_refuses_a_datetime() -> None:
    with pytest.raises(TypeError, match="expiry must be a date"):
        expiry_instant(ist(FRIDAY, 9))


@pytest.mark.parametrize(
    ("before_expiry", "expected"),
    [
        (timedelta(days=365), 1.0),
        (timedelta(days=1), 1 / 365),
        (timedelta(seconds=1), 1 / SECONDS_PER_YEAR),
        (timedelta(0), 0.0),
        (timedelta(hours=-1), -1 / (365 * 24)),
    ],
)
def test_year_fraction_counts_calendar_seconds(before_expiry: timedelta, expected: float) -> None:
    # Given an instant a known interval before an expiry (negative: after it)
    expiry = date(2026, 12, 29)
    now = expiry_instant(expiry) - before_expiry
    # When the year fraction is taken, in any timezone
    fraction = year_fraction(now.astimezone(UTC), expiry)
    # Then it is calendar seconds over 365 x 86400, never raising after expiry
    assert fraction == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_year_fraction_spans_weekends_and_holidays_as_calendar_time() -> None:
    # Given Friday 15:30 and a Monday expiry, Then three whole days count, not one trading day
    assert year_fraction(ist(FRIDAY, 15, 30), NEXT_MONDAY) == pytest.approx(3 / 365)


def test_vectorized_year_fractions_match_the_scalar() -> None:
    # Given expiries as datetime64 and instants as epoch seconds
    expiries = np.array(["2026-11-27", "2026-12-29", "NaT"], dtype="datetime64[D]")
    now = ist(FRIDAY, 10)
    # When converted and divided in one call
    expiry_s = expiry_epoch_seconds(expiries)
    fractions = year_fractions(np.full(3, now.timestamp()), expiry_s)
    # Then each matches the scalar path, and NaT gives NaN instead of an error
    assert expiry_s[1] == expiry_instant(date(2026, 12, 29)).timestamp()
    assert fractions[0] == pytest.approx(year_fraction(now, FRIDAY), rel=1e-12)
    assert fractions[1] == pytest.approx(year_fraction(now, date(2026, 12, 29)), rel=1e-12)
    assert np.isnan(fractions[2])
    assert fractions.dtype == np.float64


def test_vectorized_year_fractions_broadcast_and_go_negative() -> None:
    # Given one expiry and instants before, at and after it
    expiry_s = expiry_epoch_seconds(np.datetime64("2026-12-29"))
    now = expiry_s + np.array([-86400.0, 0.0, 3600.0])
    # When computed, Then the scalar expiry broadcasts and expired entries are <= 0
    assert year_fractions(now, expiry_s).tolist() == pytest.approx([1 / 365, 0.0, -1 / 8760])


# --------------------------------------------------------------------------- loading extra files


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_extra_holiday_file_adds_a_future_year(tmp_path: Path) -> None:
    # Given next year's list in a file of the packaged format, with comments
    extra = write(
        tmp_path / "2027.csv",
        "# NSE list for 2027\n"
        "date,description\n"
        "2027-01-26,Republic Day\n"
        '2027-03-22,"Holi, day two"\n',
    )
    # When loaded on top of the packaged calendar
    nse = NseCalendar.load([extra])
    # Then 2027 is covered and the packaged years remain
    assert nse.known_years == frozenset({2025, 2026, 2027})
    assert not nse.is_trading_day(date(2027, 1, 26))
    assert nse.holidays[date(2027, 3, 22)] == "Holi, day two"
    assert not nse.is_trading_day(GURU_NANAK)


def test_files_can_replace_the_packaged_lists(tmp_path: Path) -> None:
    # Given a corrected list (a holiday moved) and a new special session
    holidays = write(tmp_path / "h.csv", "date,description\n2026-11-25,Moved holiday\n")
    special = write(tmp_path / "s.csv", "date,description\n2026-11-28,Special Saturday\n")
    # When loaded without the packaged data
    nse = NseCalendar.load([holidays], [special], include_packaged=False)
    # Then only the given dates apply
    assert nse.is_trading_day(GURU_NANAK)
    assert not nse.is_trading_day(date(2026, 11, 25))
    assert nse.is_open(ist(SATURDAY, 10))
    assert nse.special_sessions == {SATURDAY: "Special Saturday"}


def test_a_later_file_overrides_a_description(tmp_path: Path) -> None:
    renamed = write(tmp_path / "r.csv", "date,description\n2026-11-24,Guru Nanak Jayanti\n")
    nse = NseCalendar.load([renamed])
    assert nse.holidays[GURU_NANAK] == "Guru Nanak Jayanti"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("day,what\n2027-01-26,x\n", 1, "header"),
        ("# only a comment\n\n", None, "no 'date,description' header"),
        ("date,description\n2027-01-26\n", 2, "expected 2 fields"),
        ("date,description\n\n2027/01/26,Republic Day\n", 3, "YYYY-MM-DD"),
        ("date,description\n20270126,Republic Day\n", 2, "YYYY-MM-DD"),
        ("date,description\n2027-01-26,a\n2027-01-26,b\n", 3, "listed twice"),
    ],
)
def test_malformed_files_name_file_and_line(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    # Given a malformed holiday file
    bad = write(tmp_path / "bad.csv", text)
    # When loaded, Then the error names the file, the line and the problem
    with pytest.raises(CalendarDataError, match=message) as raised:
        NseCalendar.load([bad])
    assert raised.value.source == str(bad)
    assert raised.value.line == line
    assert str(bad) in str(raised.value)


def test_a_date_cannot_be_both_holiday_and_special_session() -> None:
    # Given the same date in both mappings, When a calendar is built, Then it is refused
    with pytest.raises(CalendarDataError, match="both as holiday and special session"):
        NseCalendar({SATURDAY: "h"}, {SATURDAY: "s"})


def test_parse_iso_date_is_strict() -> None:
    assert parse_iso_date("2026-02-01") == BUDGET_SUNDAY
    for text in ("2026-2-01", "20260201", "2026-W05-7", "2026-02-30"):
        with pytest.raises(ValueError, match=r"YYYY-MM-DD|day is out of range"):
            parse_iso_date(text)
