"""ticker_core.options: Black-76 prices, implied volatility, Greeks and forwards."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from importlib import resources

import mpmath
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from testkit.option_cases import OptionCases, nse_like_cases
from ticker_core import options
from ticker_core.options import (
    OK,
    Greeks,
    Reason,
    black76_price,
    choose_forward,
    forward_from_parity,
    greeks,
    implied_vol,
    reason_labels,
    reason_of,
)

IV_TOLERANCE = 1e-9
"""|IV error| bound wherever vega >= VEGA_FLOOR x forward."""
VEGA_FLOOR = 1e-6
MP_DIGITS = 40
N_REFERENCE = 4000


# --- extended-precision reference -------------------------------------------------


def mp_black76(f: float, k: float, t: float, r: float, sigma: float, call: bool) -> mpmath.mpf:
    """Discounted Black-76 price in mpmath (straight from the formula, no tricks)."""
    f_, k_, t_, r_, s_ = (mpmath.mpf(v) for v in (f, k, t, r, sigma))
    sd = s_ * mpmath.sqrt(t_)
    d1 = mpmath.log(f_ / k_) / sd + sd / 2
    d2 = d1 - sd
    theta = 1 if call else -1
    undiscounted = theta * (f_ * mpmath.ncdf(theta * d1) - k_ * mpmath.ncdf(theta * d2))
    return mpmath.exp(-r_ * t_) * undiscounted


def mp_greeks(f: float, k: float, t: float, r: float, sigma: float, call: bool) -> dict[str, float]:
    """Closed-form Black-76 Greeks in mpmath (raw units)."""
    f_, k_, t_, r_, s_ = (mpmath.mpf(v) for v in (f, k, t, r, sigma))
    sd = s_ * mpmath.sqrt(t_)
    d1 = mpmath.log(f_ / k_) / sd + sd / 2
    d2 = d1 - sd
    theta = 1 if call else -1
    df = mpmath.exp(-r_ * t_)
    price = df * theta * (f_ * mpmath.ncdf(theta * d1) - k_ * mpmath.ncdf(theta * d2))
    pdf = mpmath.npdf(d1)
    return {
        "price": float(price),
        "delta": float(df * theta * mpmath.ncdf(theta * d1)),
        "gamma": float(df * pdf / (f_ * sd)),
        "vega_raw": float(df * f_ * pdf * mpmath.sqrt(t_)),
        "theta_raw": float(r_ * price - df * f_ * pdf * s_ / (2 * mpmath.sqrt(t_))),
        "rho_raw": float(-t_ * price),
    }


def vega_is_meaningful(cases: OptionCases) -> npt.NDArray[np.bool_]:
    """Where vega >= 1e-6 x forward: the points whose price pins the vol to 1e-9."""
    g = greeks(cases.forward, cases.strike, cases.t, cases.r, cases.sigma, cases.is_call)
    return g.vega_raw >= VEGA_FLOOR * cases.forward


@pytest.fixture(scope="session")
def reference() -> tuple[OptionCases, npt.NDArray[np.float64]]:
    """The seeded NSE-like set with prices computed in extended precision, rounded once."""
    cases = nse_like_cases(N_REFERENCE, seed=20_240_601)
    with mpmath.workdps(MP_DIGITS):
        prices = np.array(
            [
                float(mp_black76(f, k, t, r, s, c))
                for f, k, t, r, s, c in zip(
                    cases.forward.tolist(),
                    cases.strike.tolist(),
                    cases.t.tolist(),
                    cases.r.tolist(),
                    cases.sigma.tolist(),
                    cases.is_call.tolist(),
                    strict=True,
                )
            ]
        )
    return cases, prices


# --- implied volatility accuracy -----------------------------------------------------


def test_implied_vol_is_within_1e_9_of_the_true_vol_wherever_vega_is_not_negligible(
    reference: tuple[OptionCases, npt.NDArray[np.float64]],
) -> None:
    # Given NSE-like options priced in 40-digit arithmetic and rounded to double
    cases, prices = reference
    # When their implied volatilities are computed
    iv, reason = implied_vol(prices, cases.forward, cases.strike, cases.t, cases.r, cases.is_call)
    # Then wherever vega >= 1e-6 x forward the error is at most 1e-9
    meaningful = vega_is_meaningful(cases)
    assert meaningful.mean() > 0.7  # the set is not dominated by untestable points
    assert np.all(reason[meaningful] == OK)
    assert np.max(np.abs(iv - cases.sigma)[meaningful]) <= IV_TOLERANCE
    # And elsewhere the solver still answers (or names why the price carries no vol)
    solved = reason == OK
    assert set(np.unique(reason[~solved]).tolist()) <= {Reason.BELOW_INTRINSIC.code}
    assert np.all(np.isfinite(iv[solved]))


def test_price_matches_extended_precision_to_a_few_ulps_of_the_otm_part(
    reference: tuple[OptionCases, npt.NDArray[np.float64]],
) -> None:
    # Given the same set priced in extended precision
    cases, exact = reference
    # When priced by black76_price in double
    price = black76_price(cases.forward, cases.strike, cases.t, cases.r, cases.sigma, cases.is_call)
    # Then the relative error is tiny, even for deep out-of-the-money options
    positive = exact > 1e-300
    rel = np.abs(price[positive] / exact[positive] - 1.0)
    assert np.max(rel) < 1e-9
    assert np.median(rel) < 1e-14


def test_deep_out_of_the_money_price_keeps_relative_accuracy() -> None:
    # Given a far out-of-the-money call whose price is ~1e-30 of the forward
    f, k, t, r, sigma = 24_000.0, 30_000.0, 7 / 365, 0.065, 0.15
    # When priced in double and in 50 digits
    price = float(black76_price(f, k, t, r, sigma, True))
    with mpmath.workdps(50):
        exact = float(mp_black76(f, k, t, r, sigma, True))
    # Then no catastrophic cancellation: full relative accuracy is kept
    assert exact < 1e-20
    assert price == pytest.approx(exact, rel=1e-11)


def test_implied_vol_round_trips_on_extreme_but_valid_inputs() -> None:
    # Given short, long, tiny- and huge-vol options, in and out of the money
    f = np.array([25_000.0, 25_000.0, 150.0, 150.0, 4_000.0, 4_000.0, 1.0, 1.0])
    k = np.array([25_000.0, 26_000.0, 120.0, 200.0, 4_000.0, 3_950.0, 1.0, 3.0])
    t = np.array([1 / 8760, 1 / 8760, 90 / 365, 2.0, 1e-6, 0.5, 5.0, 1.0])
    sigma = np.array([0.05, 0.5, 1.5, 3.0, 0.2, 0.01, 2.5, 0.4])
    call = np.array([True, True, True, False, True, True, False, True])
    price = black76_price(f, k, t, 0.065, sigma, call)
    # When inverted
    iv, reason = implied_vol(price, f, k, t, 0.065, call)
    # Then each volatility is recovered
    assert np.all(reason == OK)
    np.testing.assert_allclose(iv, sigma, rtol=1e-9)


# --- bad inputs ------------------------------------------------------------------------

BAD_CASES = [
    # (price, forward, strike, t, r, is_call, reason)
    (math.nan, 100.0, 100.0, 0.1, 0.06, True, Reason.NAN_INPUT),
    (5.0, math.nan, 100.0, 0.1, 0.06, True, Reason.NAN_INPUT),
    (5.0, 100.0, math.nan, 0.1, 0.06, True, Reason.NAN_INPUT),
    (5.0, 100.0, 100.0, math.nan, 0.06, True, Reason.NAN_INPUT),
    (5.0, 100.0, 100.0, 0.1, math.nan, True, Reason.NAN_INPUT),
    (5.0, math.inf, 100.0, 0.1, 0.06, True, Reason.NAN_INPUT),
    (5.0, 100.0, 100.0, math.inf, 0.06, True, Reason.NAN_INPUT),
    (math.inf, 100.0, 100.0, 0.1, 0.06, True, Reason.NAN_INPUT),
    (0.0, 100.0, 100.0, 0.1, 0.06, True, Reason.NON_POSITIVE_PRICE),
    (-1.0, 100.0, 100.0, 0.1, 0.06, False, Reason.NON_POSITIVE_PRICE),
    (5.0, 0.0, 100.0, 0.1, 0.06, True, Reason.NON_POSITIVE_FORWARD),
    (5.0, -3.0, 100.0, 0.1, 0.06, True, Reason.NON_POSITIVE_FORWARD),
    (5.0, 100.0, 0.0, 0.1, 0.06, True, Reason.NON_POSITIVE_STRIKE),
    (5.0, 100.0, 100.0, 0.0, 0.06, True, Reason.EXPIRED),
    (5.0, 100.0, 100.0, -0.01, 0.06, False, Reason.EXPIRED),
    # deep ITM call worth less than its discounted intrinsic value e^{-rT}(F - K) ~ 19.88
    (19.5, 120.0, 100.0, 0.1, 0.06, True, Reason.BELOW_INTRINSIC),
    # exactly intrinsic: only sigma = 0 gives it, no positive vol does
    (math.exp(-0.006) * 20.0, 100.0, 120.0, 0.1, 0.06, False, Reason.BELOW_INTRINSIC),
    # a call worth more than the discounted forward, a put worth more than the discounted strike
    (100.0, 100.0, 90.0, 0.1, 0.06, True, Reason.ABOVE_UPPER_BOUND),
    (90.0, 100.0, 90.0, 0.1, 0.06, False, Reason.ABOVE_UPPER_BOUND),
]


@pytest.mark.parametrize(("price", "f", "k", "t", "r", "call", "expected"), BAD_CASES)
def test_bad_input_gives_nan_and_its_reason(
    price: float, f: float, k: float, t: float, r: float, call: bool, expected: Reason
) -> None:
    # Given one bad element, When its implied vol is asked for
    iv, reason = implied_vol(price, f, k, t, r, call)
    # Then it is NaN with the reason the schema names
    assert math.isnan(float(iv))
    assert reason_of(int(reason)) is expected


def test_a_batch_mixing_good_and_bad_elements_never_raises_and_keeps_the_good_ones() -> None:
    # Given every bad case interleaved with good options, in a batch spanning several chunks
    bad = np.array([c[:6] for c in BAD_CASES], dtype=object)
    n_good = options.CHUNK + 123
    cases = nse_like_cases(n_good, seed=7)
    good_price = black76_price(
        cases.forward, cases.strike, cases.t, cases.r, cases.sigma, cases.is_call
    )
    columns = [
        np.concatenate([bad[:, i].astype(float), v])
        for i, v in enumerate([good_price, cases.forward, cases.strike, cases.t, cases.r])
    ]
    call = np.concatenate([bad[:, 5].astype(bool), cases.is_call])
    order = np.random.default_rng(3).permutation(call.size)
    # When the whole batch is inverted
    iv, reason = implied_vol(*(c[order] for c in columns), call[order])
    # Then each bad element has its own reason and the good ones their volatility
    back = np.argsort(order)
    iv, reason = iv[back], reason[back]
    assert [reason_of(int(c)) for c in reason[: len(BAD_CASES)]] == [c[6] for c in BAD_CASES]
    assert np.all(np.isnan(iv[: len(BAD_CASES)]))
    good_iv, good_reason = iv[len(BAD_CASES) :], reason[len(BAD_CASES) :]
    meaningful = vega_is_meaningful(cases)
    assert np.all(good_reason[meaningful] == OK)
    np.testing.assert_allclose(good_iv[meaningful], cases.sigma[meaningful], atol=IV_TOLERANCE)


def test_implied_vol_broadcasts_and_keeps_the_shape() -> None:
    # Given one forward and expiry against a 2 x 3 grid of prices and strikes
    strikes = np.array([[90.0, 100.0, 110.0], [95.0, 105.0, 115.0]])
    prices = black76_price(100.0, strikes, 0.25, 0.065, 0.3, np.array([False, True, True]))
    # When inverted with scalar forward, t, r
    iv, reason = implied_vol(prices, 100.0, strikes, 0.25, 0.065, np.array([False, True, True]))
    # Then the result has the grid's shape
    assert iv.shape == reason.shape == (2, 3)
    np.testing.assert_allclose(iv, 0.3, rtol=1e-12)


def test_unsettled_elements_are_reported_as_no_convergence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a solver allowed no steps at all beyond its initial guess
    monkeypatch.setattr(options, "_HOUSEHOLDER_STEPS", 1)
    monkeypatch.setattr(options, "_EXTRA_STEPS", 0)
    cases = nse_like_cases(200, seed=11)
    price = black76_price(cases.forward, cases.strike, cases.t, cases.r, cases.sigma, cases.is_call)
    # When it inverts prices it cannot reach in one step
    iv, reason = implied_vol(price, cases.forward, cases.strike, cases.t, cases.r, cases.is_call)
    # Then those elements are NaN with no_convergence, not a wrong number
    unsettled = reason == Reason.NO_CONVERGENCE.code
    assert unsettled.any()
    assert np.all(np.isnan(iv[unsettled]))


def test_stragglers_get_extra_steps_and_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a solver whose fixed steps are too few for some elements
    monkeypatch.setattr(options, "_HOUSEHOLDER_STEPS", 1)
    cases = nse_like_cases(500, seed=12)
    price = black76_price(cases.forward, cases.strike, cases.t, cases.r, cases.sigma, cases.is_call)
    # When inverting
    iv, reason = implied_vol(price, cases.forward, cases.strike, cases.t, cases.r, cases.is_call)
    # Then the extra steps finish them to full accuracy
    meaningful = vega_is_meaningful(cases)
    assert np.all(reason[meaningful] == OK)
    np.testing.assert_allclose(iv[meaningful], cases.sigma[meaningful], atol=IV_TOLERANCE)


# --- reason codes ------------------------------------------------------------------------


def test_reason_values_are_exactly_the_schema_enum() -> None:
    # Given the published greeks schema
    schema = json.loads(
        resources.files("ticker_core.schemas").joinpath("greeks.v1.json").read_text()
    )
    # Then the Reason enum is its non-null reason values, and codes round-trip
    assert [r.value for r in Reason] == [v for v in schema["properties"]["reason"]["enum"] if v]
    assert [reason_of(r.code) for r in Reason] == list(Reason)
    assert reason_of(OK) is None
    assert reason_labels(np.array([OK, Reason.EXPIRED.code])) == [None, "expired"]


# --- Greeks ------------------------------------------------------------------------------

GREEK_POINTS = [
    # (f, k, t, r, sigma, call)
    (24_000.0, 24_000.0, 7 / 365, 0.065, 0.14, True),
    (24_000.0, 25_500.0, 30 / 365, 0.065, 0.18, False),
    (48_000.0, 45_000.0, 2 / 365, 0.07, 0.25, True),
    (850.0, 700.0, 60 / 365, 0.06, 0.45, False),
    (3_100.0, 3_600.0, 90 / 365, 0.068, 0.9, True),
    (120.0, 125.0, 1 / 8760, 0.065, 1.2, False),
]
RAW_GREEKS = ("price", "delta", "gamma", "vega_raw", "theta_raw", "rho_raw")


@pytest.mark.parametrize("point", GREEK_POINTS)
def test_greeks_match_closed_forms_in_extended_precision(
    point: tuple[float, float, float, float, float, bool],
) -> None:
    # Given an option, When its Greeks are computed in double and in 40 digits
    got = greeks(*point)
    with mpmath.workdps(MP_DIGITS):
        want = mp_greeks(*point)
    # Then every raw Greek agrees to near machine precision
    for name in RAW_GREEKS:
        assert float(getattr(got, name)) == pytest.approx(want[name], rel=1e-11, abs=1e-13)
    assert int(got.reason) == OK


@pytest.mark.parametrize("point", GREEK_POINTS)
def test_greeks_agree_with_central_differences_of_the_pricer(
    point: tuple[float, float, float, float, float, bool],
) -> None:
    # Given an option and central differences of black76_price (a check only)
    f, k, t, r, sigma, call = point
    g = greeks(*point)

    def price(**bump: float) -> float:
        args = {"f": f, "t": t, "r": r, "sigma": sigma} | bump
        return float(black76_price(args["f"], k, args["t"], args["r"], args["sigma"], call))

    hf, hs, hr, ht = f * 1e-4, 1e-5, 1e-5, t * 1e-4
    # Then the analytic Greeks agree with the differences to a loose tolerance
    fd_delta = (price(f=f + hf) - price(f=f - hf)) / (2 * hf)
    fd_gamma = (price(f=f + hf) - 2 * price() + price(f=f - hf)) / hf**2
    fd_vega = (price(sigma=sigma + hs) - price(sigma=sigma - hs)) / (2 * hs)
    fd_rho = (price(r=r + hr) - price(r=r - hr)) / (2 * hr)
    fd_theta = -(price(t=t + ht) - price(t=t - ht)) / (2 * ht)
    assert float(g.delta) == pytest.approx(fd_delta, rel=1e-5, abs=1e-8)
    assert float(g.gamma) == pytest.approx(fd_gamma, rel=1e-3, abs=1e-8)
    assert float(g.vega_raw) == pytest.approx(fd_vega, rel=1e-5, abs=1e-6)
    assert float(g.rho_raw) == pytest.approx(fd_rho, rel=1e-5, abs=1e-6)
    assert float(g.theta_raw) == pytest.approx(fd_theta, rel=1e-4, abs=1e-5)


def test_call_and_put_greeks_obey_put_call_parity() -> None:
    # Given calls and puts on the same NSE-like inputs
    c = nse_like_cases(2000, seed=5)
    call = greeks(c.forward, c.strike, c.t, c.r, c.sigma, True)
    put = greeks(c.forward, c.strike, c.t, c.r, c.sigma, False)
    df = np.exp(-c.r * c.t)

    # Then C - P = e^{-rT}(F - K) and its derivatives hold Greek by Greek
    def close(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], tol: float) -> bool:
        return bool(np.all(np.abs(a - b) <= tol * c.forward))

    assert close(call.price - put.price, df * (c.forward - c.strike), 1e-12)
    np.testing.assert_allclose(call.delta - put.delta, df, rtol=1e-12)
    np.testing.assert_allclose(call.gamma, put.gamma, rtol=1e-12)
    np.testing.assert_allclose(call.vega_raw, put.vega_raw, rtol=1e-12)
    parity_theta = c.r * df * (c.forward - c.strike)  # -d/dT of e^{-rT}(F - K)
    assert close(call.theta_raw - put.theta_raw, parity_theta, 1e-12)
    parity_rho = -c.t * df * (c.forward - c.strike)
    assert close(call.rho_raw - put.rho_raw, parity_rho, 1e-12)


def test_quoted_units_are_the_raw_values_scaled() -> None:
    # Given Greeks of a batch
    c = nse_like_cases(100, seed=9)
    g = greeks(c.forward, c.strike, c.t, c.r, c.sigma, c.is_call)
    # Then theta is per calendar day, vega and rho per 1 percentage point
    np.testing.assert_array_equal(g.theta, g.theta_raw / 365.0)
    np.testing.assert_array_equal(g.vega, g.vega_raw / 100.0)
    np.testing.assert_array_equal(g.rho, g.rho_raw / 100.0)
    # And every field is an array of the input shape
    assert {f.name for f in fields(Greeks)} >= set(RAW_GREEKS) | {"theta", "vega", "rho"}
    assert all(getattr(g, f.name).shape == (100,) for f in fields(Greeks))


def test_greeks_of_bad_inputs_are_nan_with_reasons() -> None:
    # Given a good option next to a NaN vol, a zero vol, an expired and a zero-strike one
    g = greeks(
        np.array([100.0, 100.0, 100.0, 100.0, 100.0]),
        np.array([100.0, 100.0, 100.0, 100.0, 0.0]),
        np.array([0.1, 0.1, 0.1, 0.0, 0.1]),
        0.06,
        np.array([0.2, math.nan, 0.0, 0.2, 0.2]),
        True,
    )
    # Then only the good one has values, and the others say why
    assert [reason_of(int(c)) for c in g.reason] == [
        None,
        Reason.NAN_INPUT,
        Reason.NAN_INPUT,
        Reason.EXPIRED,
        Reason.NON_POSITIVE_STRIKE,
    ]
    assert np.isfinite(g.delta[0])
    assert np.all(np.isnan(g.delta[1:]))


def test_price_with_zero_vol_is_discounted_intrinsic_and_bad_inputs_are_nan() -> None:
    # Given zero volatility, and a negative one
    prices = black76_price(
        100.0, np.array([90.0, 110.0, 90.0]), 0.5, 0.06, np.array([0.0, 0.0, -0.1]), True
    )
    # Then the price is e^{-rT} max(F - K, 0), and a negative vol gives NaN
    np.testing.assert_allclose(prices[:2], [math.exp(-0.03) * 10.0, 0.0])
    assert math.isnan(prices[2])


# --- properties --------------------------------------------------------------------------

vols = st.floats(0.01, 2.0)
moneyness = st.floats(-0.5, 0.5)
expiries = st.floats(1 / 8760, 1.0)


@settings(max_examples=200, deadline=None)
@given(m=moneyness, t=expiries, s1=vols, s2=vols, call=st.booleans())
# Vols one ulp apart pricing a 1e-138 option: the two prices differ by rounding only.
@example(m=0.25, t=1.0, s1=0.010000000000000002, s2=0.01, call=True)
def test_price_is_monotone_in_volatility(
    m: float, t: float, s1: float, s2: float, call: bool
) -> None:
    # Given two volatilities, When the same option is priced at each
    lo, hi = sorted((s1, s2))
    p_lo, p_hi = black76_price(1000.0, 1000.0 * math.exp(m), t, 0.065, np.array([lo, hi]), call)
    # Then the higher volatility never gives the lower price (beyond rounding)
    assert p_hi >= p_lo or math.isclose(p_hi, p_lo, rel_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(m=moneyness, t=expiries, sigma=vols, call=st.booleans())
# A put 37 standard deviations out of the money an hour from expiry: its price
# (2.9e-312) is subnormal and carries no volatility information at all.
@example(m=-0.40234375, t=0.00011415525114155251, sigma=1.0, call=False)
def test_implied_vol_inverts_the_pricer(m: float, t: float, sigma: float, call: bool) -> None:
    # Given a price from a known volatility with a non-negligible vega
    f, k = 1000.0, 1000.0 * math.exp(m)
    g = greeks(f, k, t, 0.065, sigma, call)
    # When inverted
    iv, reason = implied_vol(g.price, f, k, t, 0.065, call)
    # Then the volatility comes back
    if g.vega_raw >= VEGA_FLOOR * f:
        assert int(reason) == OK
        assert float(iv) == pytest.approx(sigma, abs=IV_TOLERANCE)
    else:  # the price carries (almost) no volatility information; it is solved or named
        named = (
            OK,
            Reason.BELOW_INTRINSIC.code,
            Reason.NON_POSITIVE_PRICE.code,
            Reason.NO_CONVERGENCE.code,
        )
        assert int(reason) in named


# --- forwards ----------------------------------------------------------------------------


def synthetic_chain(
    forward: float, t: float, r: float, strikes: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Black-76 calls and puts with a volatility smile, on the given strikes."""
    sigma = 0.15 + 0.3 * np.log(strikes / forward) ** 2
    calls = black76_price(forward, strikes, t, r, sigma, True)
    puts = black76_price(forward, strikes, t, r, sigma, False)
    return calls, puts


def test_forward_from_parity_recovers_the_forward_of_a_synthetic_chain() -> None:
    # Given a NIFTY-like chain priced off a known forward
    strikes = np.arange(22_000.0, 26_050.0, 50.0)
    calls, puts = synthetic_chain(24_037.3, 12 / 365, 0.065, strikes)
    # When the forward is implied from parity
    est = forward_from_parity(strikes, calls, puts, 12 / 365, 0.065)
    # Then it is recovered, from the two strikes nearest the money
    assert est.source == "parity"
    assert est.reason is None
    assert est.forward == pytest.approx(24_037.3, rel=1e-12)
    assert set(est.strikes) == {24_000.0, 24_050.0}


def test_forward_from_parity_skips_invalid_pairs_and_names_missing_ones() -> None:
    # Given a stock chain whose at-the-money pair has a missing put
    strikes = np.array([900.0, 950.0, 1000.0, 1050.0, 1100.0])
    calls, puts = synthetic_chain(1003.0, 40 / 365, 0.07, strikes)
    puts[2] = math.nan
    # When the forward is implied, Then the next-nearest valid pairs are used
    est = forward_from_parity(strikes, calls, puts, 40 / 365, 0.07)
    assert est.forward == pytest.approx(1003.0, rel=1e-12)
    assert 1000.0 not in est.strikes
    # And with fewer valid pairs than needed there is no forward, with a reason
    puts[:4] = [math.nan, 0.0, math.nan, -1.0]
    missing = forward_from_parity(strikes, calls, puts, 40 / 365, 0.07)
    assert math.isnan(missing.forward)
    assert missing.source == "none"
    assert missing.reason is Reason.NO_FORWARD
    # And a single pair is enough when the caller says so
    single = forward_from_parity(strikes, calls, puts, 40 / 365, 0.07, pairs=1)
    assert single.forward == pytest.approx(1003.0, rel=1e-12)


@pytest.mark.parametrize(
    ("t", "r", "reason"),
    [
        (0.0, 0.06, Reason.EXPIRED),
        (math.nan, 0.06, Reason.NAN_INPUT),
        (0.1, math.inf, Reason.NAN_INPUT),
    ],
)
def test_forward_from_parity_rejects_bad_time_and_rate(t: float, r: float, reason: Reason) -> None:
    strikes = np.array([95.0, 100.0, 105.0])
    est = forward_from_parity(strikes, np.ones(3), np.ones(3), t, r)
    assert math.isnan(est.forward)
    assert est.reason is reason


def test_forward_from_parity_rejects_a_non_positive_result_and_bad_arguments() -> None:
    # Given puts so much dearer than calls that parity implies a negative forward
    est = forward_from_parity(
        np.array([10.0, 11.0]), np.array([0.1, 0.1]), np.array([50.0, 50.0]), 0.1, 0.06
    )
    assert math.isnan(est.forward)
    assert est.reason is Reason.NO_FORWARD
    # And mismatched lengths or a pair count below one are programming errors
    with pytest.raises(ValueError, match="same length"):
        forward_from_parity(np.ones(2), np.ones(3), np.ones(3), 0.1, 0.06)
    with pytest.raises(ValueError, match="at least 1"):
        forward_from_parity(np.ones(2), np.ones(2), np.ones(2), 0.1, 0.06, pairs=0)


def test_choose_forward_prefers_the_listed_future_then_parity_then_none() -> None:
    strikes = np.arange(23_000.0, 25_050.0, 50.0)
    calls, puts = synthetic_chain(24_010.0, 5 / 365, 0.065, strikes)
    # Given a listed future of the same expiry, Then its price is the forward
    assert choose_forward(24_012.5, strikes, calls, puts, 5 / 365, 0.065)[:2] == (
        24_012.5,
        "future",
    )
    # Given no usable future price, Then parity gives it
    for future in (None, math.nan, 0.0):
        est = choose_forward(future, strikes, calls, puts, 5 / 365, 0.065)
        assert est.source == "parity"
        assert est.forward == pytest.approx(24_010.0, rel=1e-12)
    # Given neither, Then there is no forward and the reason says so
    none = choose_forward(None, strikes[:1], calls[:1], puts[:1], 5 / 365, 0.065)
    assert none.source == "none"
    assert none.reason is Reason.NO_FORWARD
