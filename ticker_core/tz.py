"""India Standard Time.

A fixed UTC+05:30 offset rather than ``zoneinfo("Asia/Kolkata")``: India has
no daylight saving, and a fixed offset needs no tz database in slim images or
Lambda runtimes.
"""

from datetime import timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")
