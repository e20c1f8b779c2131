"""Time to expiry for arrays of contracts (numpy): the vectorized side of
:func:`ticker_core.calendar.year_fraction`, kept apart so the calendar loads without numpy."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ticker_core.calendar import MARKET_CLOSE, SECONDS_PER_YEAR
from ticker_core.tz import IST

__all__ = ["expiry_epoch_seconds", "year_fractions"]

# Seconds from UTC midnight to 15:30 IST on the same date (10 h): the epoch
# timestamp of 15:30 IST on 1970-01-01. Derived, not typed, so it follows IST.
_EXPIRY_SECONDS_AFTER_UTC_MIDNIGHT = datetime.combine(
    date(1970, 1, 1), MARKET_CLOSE, IST
).timestamp()


def expiry_epoch_seconds(expiries: ArrayLike) -> NDArray[np.float64]:
    """Epoch seconds of 15:30 IST on each date of ``expiries`` (``datetime64[D]``-like).

    ``NaT`` gives NaN. Compute this once per expiry and feed :func:`year_fractions`.
    """
    days = np.asarray(expiries, dtype="datetime64[D]")
    seconds = (
        days.astype(np.int64).astype(np.float64) * 86400.0 + _EXPIRY_SECONDS_AFTER_UTC_MIDNIGHT
    )
    return np.where(np.isnat(days), np.nan, seconds)


def year_fractions(now_epoch_s: ArrayLike, expiry_epoch_s: ArrayLike) -> NDArray[np.float64]:
    """Vectorized :func:`year_fraction` over epoch seconds (UTC), broadcasting.

    Non-positive after expiry, NaN where an input is NaN; it never raises for
    values, only for shapes that do not broadcast.
    """
    now = np.asarray(now_epoch_s, dtype=np.float64)
    expiry = np.asarray(expiry_epoch_s, dtype=np.float64)
    result: NDArray[np.float64] = (expiry - now) / SECONDS_PER_YEAR
    return result
