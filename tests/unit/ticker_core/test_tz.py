"""IST is UTC+05:30 all year (India keeps no daylight saving)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from ticker_core.tz import IST, ist_date, ist_midnight, ist_midnight_before


def test_ist_is_a_fixed_five_thirty_offset() -> None:
    # Given instants in January and July
    for month in (1, 7):
        instant = datetime(2026, month, 1, tzinfo=UTC)
        # When expressed in IST, Then the offset is +05:30 with the IST name
        assert instant.astimezone(IST).utcoffset() == timedelta(hours=5, minutes=30)
        assert instant.astimezone(IST).tzname() == "IST"


def test_the_ist_date_turns_at_1830_utc() -> None:
    # Given instants either side of IST midnight, When their IST day is taken
    # Then the day turns at 18:30 UTC
    assert ist_date(datetime(2026, 11, 26, 18, 31, tzinfo=UTC)) == date(2026, 11, 27)
    assert ist_date(datetime(2026, 11, 26, 18, 29, tzinfo=UTC)) == date(2026, 11, 26)


def test_a_naive_instant_has_no_ist_date() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ist_date(datetime(2026, 11, 26, 12, 0))


def test_ist_midnight_is_the_previous_days_1830_utc() -> None:
    assert ist_midnight(date(2026, 11, 27)) == datetime(2026, 11, 26, 18, 30, tzinfo=UTC)
    assert ist_date(ist_midnight(date(2026, 11, 27))) == date(2026, 11, 27)


def test_the_ist_midnight_before_an_instant_is_in_its_zone() -> None:
    # Given instants just after and just before IST midnight (18:30 UTC)
    after = datetime(2026, 11, 26, 18, 31, tzinfo=UTC)
    before = datetime(2026, 11, 26, 18, 29, tzinfo=UTC)
    # When the IST midnight at or before each is taken
    # Then it is that IST day's 00:00, expressed in UTC
    assert ist_midnight_before(after) == datetime(2026, 11, 26, 18, 30, tzinfo=UTC)
    assert ist_midnight_before(after).tzinfo is UTC
    assert ist_midnight_before(before) == datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
    # And an instant exactly at midnight is its own midnight
    assert ist_midnight_before(ist_midnight(date(2026, 11, 27))) == ist_midnight(date(2026, 11, 27))
