"""IST is UTC+05:30 all year (India keeps no daylight saving)."""

from datetime import UTC, datetime, timedelta

from ticker_core.tz import IST


def test_ist_is_a_fixed_five_thirty_offset() -> None:
    # Given instants in January and July
    for month in (1, 7):
        instant = datetime(2026, month, 1, tzinfo=UTC)
        # When expressed in IST, Then the offset is +05:30 with the IST name
        assert instant.astimezone(IST).utcoffset() == timedelta(hours=5, minutes=30)
        assert instant.astimezone(IST).tzname() == "IST"
