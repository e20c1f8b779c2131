"""A seeded set of option inputs shaped like NSE index and stock options.

One generator serves the implied-vol accuracy tests and the throughput
benchmark, so the benchmark measures speed on exactly the kind of set whose
accuracy the tests pin down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

HOUR = 1.0 / (365.0 * 24.0)
"""One hour in years of 365 x 86400 calendar seconds."""
MAX_T = 90.0 / 365.0
MIN_VOL, MAX_VOL = 0.05, 1.50
INDEX_LEVELS = (20_000.0, 60_000.0)
STOCK_PRICES = (100.0, 5_000.0)
RATES = (0.06, 0.07)
MAX_STANDARD_DEVIATIONS = 6.0
"""Strikes reach this many standard deviations (sigma sqrt T) in or out of the money..."""
MAX_MONEYNESS = 2.0
"""...but stay within a factor of 2 of the forward, as listed NSE strikes do."""


@dataclass(frozen=True)
class OptionCases:
    """Inputs of ``n`` options (prices are computed by whoever needs them)."""

    forward: FloatArray
    strike: FloatArray
    t: FloatArray
    r: FloatArray
    sigma: FloatArray
    is_call: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.forward.size)


def nse_like_cases(n: int, seed: int) -> OptionCases:
    """Half index options (levels 20,000-60,000), half stock options (100-5,000).

    Expiries log-uniform from 1 hour to 90 days, volatilities log-uniform from
    5% to 150%, rates 6-7%, strikes uniform in standard deviations out to
    +-6 (deep in and out of the money) but within a factor 2 of the forward,
    calls and puts equally often.
    """
    rng = np.random.default_rng(seed)
    index = rng.random(n) < 0.5
    forward = np.where(
        index,
        rng.uniform(*INDEX_LEVELS, n),
        np.exp(rng.uniform(np.log(STOCK_PRICES[0]), np.log(STOCK_PRICES[1]), n)),
    )
    t = np.exp(rng.uniform(np.log(HOUR), np.log(MAX_T), n))
    sigma = np.exp(rng.uniform(np.log(MIN_VOL), np.log(MAX_VOL), n))
    deviations = rng.uniform(-MAX_STANDARD_DEVIATIONS, MAX_STANDARD_DEVIATIONS, n)
    log_moneyness = np.clip(
        deviations * sigma * np.sqrt(t), -np.log(MAX_MONEYNESS), np.log(MAX_MONEYNESS)
    )
    strike = forward * np.exp(log_moneyness)
    return OptionCases(
        forward=forward,
        strike=strike,
        t=t,
        r=rng.uniform(*RATES, n),
        sigma=sigma,
        is_call=rng.random(n) < 0.5,
    )
