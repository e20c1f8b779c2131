"""India Standard Time, and the IST calendar day of an instant.

A fixed UTC+05:30 offset rather than ``zoneinfo("Asia/Kolkata")``: India has
no daylight saving, and a fixed offset needs no tz database in slim images or
Lambda runtimes.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Final

IST_OFFSET: Final = timedelta(hours=5, minutes=30)
"""India Standard Time's offset from UTC, all year."""
IST: Final = timezone(IST_OFFSET, "IST")


def ist_date(instant: datetime) -> date:
    """The IST calendar day of an aware instant (trading days, partitions and snapshots)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(IST).date()


def ist_midnight(day: date) -> datetime:
    """00:00 IST at the start of ``day``, as an aware instant."""
    return datetime.combine(day, time(0), tzinfo=IST)


def ist_midnight_before(instant: datetime) -> datetime:
    """The IST midnight at or before an aware ``instant``, in ``instant``'s own zone."""
    return ist_midnight(ist_date(instant)).astimezone(instant.tzinfo)
