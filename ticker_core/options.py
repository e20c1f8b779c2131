"""Option math for the Greeks Lambda: Black-76 on the forward, implied volatility, Greeks.

Model and conventions
---------------------
Every option is European and priced with Black-76 on the forward ``F`` of its
underlying for the option's expiry, discounted at the continuously compounded
rate ``r``::

    V = e^{-rT} * theta * [F N(theta d1) - K N(theta d2)],   theta = +1 call, -1 put
    d1,2 = ln(F/K) / (sigma sqrt T) +- sigma sqrt T / 2

``T`` is in years of 365 days of calendar seconds (the NSE calendar module
computes it from 15:30 IST on the expiry date); this module takes it as input.

Greeks are analytic (never finite differences):

==============  ===========================================================
``delta``       dV/dF, with respect to the **forward**: ``e^{-rT} theta N(theta d1)``
``gamma``       d2V/dF2: ``e^{-rT} phi(d1) / (F sigma sqrt T)``
``theta``       price change per calendar day: ``theta_raw / 365``
``vega``        price change per 1 percentage point of volatility: ``vega_raw / 100``
``rho``         price change per 1 percentage point of rate: ``rho_raw / 100``
``theta_raw``   -dV/dT per year: ``r V - e^{-rT} F phi(d1) sigma / (2 sqrt T)``
``vega_raw``    dV/dsigma per 1.00 of volatility: ``e^{-rT} F phi(d1) sqrt T``
``rho_raw``     dV/dr per 1.00 of rate **with F held fixed**: ``-T V``
==============  ===========================================================

Converting to spot Greeks: when the forward comes from a spot ``S`` as
``F = S e^{(r - q) T}`` (index or stock with dividend yield ``q``), then
``spot_delta = delta * F / S`` and ``spot_gamma = gamma * (F / S) ** 2``. When
the listed future is the hedge instrument, the forward delta is already the
number of futures (per unit of underlying) to hold, and no conversion applies.
Rho here holds the forward fixed (the market forward does not move with the
discount rate); a spot-model rho would add ``T * F * delta``.

Bad inputs never raise for a batch: the element gets NaN and a :class:`Reason`
(the string values are exactly the ``reason`` enum of ``greeks.v1.json``).
Reasons are returned as a compact ``uint8`` array of codes (0 = fine); map them
with :func:`reason_of` or :func:`reason_labels`.

Implied volatility method
-------------------------
:func:`implied_vol` works in the *normalized Black* coordinates of Jäckel
("By Implication", 2006; "Let's Be Rational", 2015/2017): ``x = ln(F/K)``,
``s = sigma sqrt T`` and the undiscounted price divided by ``sqrt(F K)``. By
put-call symmetry, an in-the-money option is replaced by its out-of-the-money
counterpart (price minus intrinsic), and a put at ``x`` is a call at ``-x``, so
the solver only ever inverts an out-of-the-money call with ``x <= 0``::

    b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2),   0 < b < e^{x/2}

* Initial guess (Jäckel's inflection-point idea): ``b`` is convex in ``s``
  below ``s_c = sqrt(2|x|)`` and concave above, with ``b'' = 0`` at ``s_c``, so
  the first-order Taylor step from ``s_c`` has a cubic error term. Where that
  step would be negative (deep out of the money), the guess comes from the
  exact identity ``ln b = -(x^2/s^2 + s^2/4)/2 - ln sqrt(2 pi) + ln D`` with
  the slowly varying ``D`` dropped, which is a quadratic in ``s^2``.
* Iteration: third-order Householder steps on Jäckel's transformed
  objectives: ``ln b(s) - ln beta`` below the inflection point (the log makes
  the exponentially small wing nearly linear) and
  ``ln(e^{x/2} - beta) - ln(e^{x/2} - b(s))`` above it. The needed ratios of
  derivatives of ``b`` are closed-form (``b''/b' = x^2/s^3 - s/4`` and
  ``b'''/b' = (b''/b')^2 - 3x^2/s^4 - 1/4``), so each step costs two ``ndtr``,
  one ``exp``, one ``log`` and a few dozen arithmetic operations.
  Three steps reach machine precision for nearly every input; the few that
  still moved by more than :data:`_SETTLED_STEP` in the last step get
  extra steps, and those that still have not settled are ``no_convergence``.
* Every term of the iteration is evaluated in a form without catastrophic
  cancellation: below the inflection point ``b`` is the difference of two
  ``ndtr`` tails (each computed from ``erfc``, so relatively accurate even
  deep in the tail), above it the complement ``e^{x/2} - b`` is a *sum* of two
  tails.
* Vectorised in chunks of :data:`CHUNK` elements so that the two dozen
  temporaries of a step stay in cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple, cast

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
CodeArray = npt.NDArray[np.uint8]
ArrayLike = npt.ArrayLike

DAYS_PER_YEAR = 365.0
"""Theta per calendar day = theta per year / 365 (T is in 365-day years)."""
PERCENT = 100.0
"""Vega and rho are quoted per 1 percentage point = 1/100 of one unit."""

CHUNK = 8192
"""Elements per vectorised block: ~25 live float64 temporaries x 64 KiB fit in L2."""

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_LN_SQRT_2PI = math.log(_SQRT_2PI)
_HOUSEHOLDER_STEPS = 3
"""Fixed third-order steps every element takes (quartic convergence from the guess)."""
_EXTRA_STEPS = 12
"""Further steps for the rare elements not yet settled after the fixed ones."""
_SETTLED_STEP = 1e-5
"""Relative step below which the next step is below round-off (quartic: (1e-5)^4 << eps)."""


class Reason(StrEnum):
    """Why an element has no value; the values are the ``reason`` enum of greeks.v1.json."""

    NAN_INPUT = "nan_input"
    NON_POSITIVE_PRICE = "non_positive_price"
    NON_POSITIVE_FORWARD = "non_positive_forward"
    NON_POSITIVE_STRIKE = "non_positive_strike"
    EXPIRED = "expired"
    BELOW_INTRINSIC = "below_intrinsic"
    ABOVE_UPPER_BOUND = "above_upper_bound"
    NO_CONVERGENCE = "no_convergence"
    NO_FORWARD = "no_forward"
    """No future and no usable parity pair (set by the Lambda / forward helpers)."""
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    """The token is not in the instruments dump (set by the Lambda)."""

    @property
    def code(self) -> int:
        """The ``uint8`` code of this reason in result arrays (0 means no reason)."""
        return _REASON_CODES[self]


_REASONS: tuple[Reason, ...] = tuple(Reason)
_REASON_CODES: dict[Reason, int] = {reason: i + 1 for i, reason in enumerate(_REASONS)}
OK = 0
"""Reason code of an element that has a value."""

_NAN_INPUT = _REASON_CODES[Reason.NAN_INPUT]
_NON_POSITIVE_PRICE = _REASON_CODES[Reason.NON_POSITIVE_PRICE]
_NON_POSITIVE_FORWARD = _REASON_CODES[Reason.NON_POSITIVE_FORWARD]
_NON_POSITIVE_STRIKE = _REASON_CODES[Reason.NON_POSITIVE_STRIKE]
_EXPIRED = _REASON_CODES[Reason.EXPIRED]
_BELOW_INTRINSIC = _REASON_CODES[Reason.BELOW_INTRINSIC]
_ABOVE_UPPER_BOUND = _REASON_CODES[Reason.ABOVE_UPPER_BOUND]
_NO_CONVERGENCE = _REASON_CODES[Reason.NO_CONVERGENCE]


def reason_of(code: int) -> Reason | None:
    """The :class:`Reason` for one ``uint8`` code (None for :data:`OK`)."""
    return None if code == OK else _REASONS[code - 1]


def reason_labels(codes: npt.ArrayLike) -> list[str | None]:
    """Schema strings (or None) for an array of reason codes, flattened, for JSON output."""
    return [None if c == OK else _REASONS[c - 1].value for c in np.ravel(codes).tolist()]


class ImpliedVol(NamedTuple):
    """Result of :func:`implied_vol`: volatility per year, and a reason code where NaN."""

    iv: FloatArray
    reason: CodeArray


@dataclass(frozen=True, slots=True)
class Greeks:
    """Black-76 Greeks of discounted option value, arrays of the broadcast input shape.

    See the module docstring for the formulas and units; ``reason`` holds a
    code wherever the values are NaN.
    """

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    theta: FloatArray
    vega: FloatArray
    rho: FloatArray
    theta_raw: FloatArray
    vega_raw: FloatArray
    rho_raw: FloatArray
    reason: CodeArray


def _ndtr(z: FloatArray) -> FloatArray:
    """Standard normal CDF; scipy's ``ndtr`` uses ``erfc`` in the tails (relative accuracy)."""
    return cast(FloatArray, special.ndtr(z))


def _as_float(value: ArrayLike) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


def _validate(
    forward: FloatArray, strike: FloatArray, t: FloatArray, r: FloatArray, *extra: FloatArray
) -> CodeArray:
    """Reason codes for the shared inputs (first failing check wins, NaN first)."""
    codes = np.zeros(forward.shape, dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        # Later assignments must not overwrite earlier ones: apply in reverse priority.
        codes[~(t > 0.0)] = _EXPIRED
        codes[~(strike > 0.0)] = _NON_POSITIVE_STRIKE
        codes[~(forward > 0.0)] = _NON_POSITIVE_FORWARD
        nan = np.isnan(forward) | np.isnan(strike) | np.isnan(t) | ~np.isfinite(r)
        nan |= np.isinf(forward) | np.isinf(strike) | np.isinf(t)
        for value in extra:
            nan |= ~np.isfinite(value)
    codes[nan] = _NAN_INPUT
    return codes


# ---------------------------------------------------------------------------
# Pricing
# ---------------------------------------------------------------------------


def _normalized_otm_call(x: FloatArray, s: FloatArray) -> FloatArray:
    """``b(x, s)`` for ``x <= 0``: the out-of-the-money normalized Black call.

    The difference of two ``ndtr`` tails; each tail is relatively accurate
    (erfc-based), and the only cancellation left is between them, bounded by a
    factor ``|x| / s^2`` (harmless wherever the price is representable).
    """
    h = x / s
    half_s = 0.5 * s
    return np.exp(0.5 * x) * _ndtr(h + half_s) - np.exp(-0.5 * x) * _ndtr(h - half_s)


def black76_price(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    r: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
) -> FloatArray:
    """Discounted Black-76 price ``e^{-rT}[F N(d1) - K N(d2)]`` (put by symmetry).

    All arguments broadcast. The out-of-the-money part is computed in normalized
    form (never as a difference of two large in-the-money terms) and the
    intrinsic value is added back, so deep in- and out-of-the-money prices keep
    their relative accuracy. ``sigma == 0`` gives the discounted intrinsic
    value. Invalid elements (NaN, non-positive forward/strike, ``t <= 0``,
    negative sigma) give NaN; use :func:`greeks` for the reason codes.
    """
    f, k, tt, rr, sig, call = np.broadcast_arrays(
        _as_float(forward),
        _as_float(strike),
        _as_float(t),
        _as_float(r),
        _as_float(sigma),
        np.asarray(is_call, dtype=bool),
    )
    with np.errstate(all="ignore"):
        x = np.log(f / k)
        s = sig * np.sqrt(tt)
        sign = np.where(call, 1.0, -1.0)
        intrinsic = np.maximum(sign * (f - k), 0.0)
        otm = np.sqrt(f * k) * _normalized_otm_call(-np.abs(x), s)
        otm = np.where(s > 0.0, otm, 0.0)  # sigma == 0: b(x, 0) = 0 for x < 0
        price = np.exp(-rr * tt) * (intrinsic + otm)
    bad = (_validate(f, k, tt, rr, sig) != OK) | ~(sig >= 0.0)
    return cast(FloatArray, np.where(bad, np.nan, price))


# ---------------------------------------------------------------------------
# Greeks
# ---------------------------------------------------------------------------


def greeks(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    r: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
) -> Greeks:
    """Analytic Black-76 Greeks (and price) in the units of the module docstring.

    All arguments broadcast. Elements with invalid inputs are NaN with a reason
    code: the input checks of :func:`implied_vol` plus a volatility that is
    not a positive finite number, which is reported as ``nan_input`` (the
    schema has no separate code; in the Lambda ``sigma`` comes from
    :func:`implied_vol`, whose reason is the one to publish).
    """
    f, k, tt, rr, sig, call = np.broadcast_arrays(
        _as_float(forward),
        _as_float(strike),
        _as_float(t),
        _as_float(r),
        _as_float(sigma),
        np.asarray(is_call, dtype=bool),
    )
    codes = _validate(f, k, tt, rr, sig)
    with np.errstate(invalid="ignore"):
        codes[(codes == OK) & ~(sig > 0.0)] = _NAN_INPUT
    with np.errstate(all="ignore"):
        sign = np.where(call, 1.0, -1.0)
        sqrt_t = np.sqrt(tt)
        s = sig * sqrt_t
        d1 = np.log(f / k) / s + 0.5 * s
        df = np.exp(-rr * tt)
        pdf_d1 = np.exp(-0.5 * d1 * d1) / _SQRT_2PI
        price = black76_price(f, k, tt, rr, sig, call)
        delta = df * sign * _ndtr(sign * d1)
        gamma = df * pdf_d1 / (f * s)
        vega_raw = df * f * pdf_d1 * sqrt_t
        theta_raw = rr * price - df * f * pdf_d1 * sig / (2.0 * sqrt_t)
        rho_raw = -tt * price
    bad = codes != OK

    def masked(values: FloatArray) -> FloatArray:
        return cast(FloatArray, np.where(bad, np.nan, values))

    return Greeks(
        price=masked(price),
        delta=masked(delta),
        gamma=masked(gamma),
        theta=masked(theta_raw / DAYS_PER_YEAR),
        vega=masked(vega_raw / PERCENT),
        rho=masked(rho_raw / PERCENT),
        theta_raw=masked(theta_raw),
        vega_raw=masked(vega_raw),
        rho_raw=masked(rho_raw),
        reason=codes,
    )


# ---------------------------------------------------------------------------
# Implied volatility
# ---------------------------------------------------------------------------


def implied_vol(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    r: ArrayLike,
    is_call: ArrayLike,
) -> ImpliedVol:
    """Black-76 implied volatility of discounted option prices, with a reason where NaN.

    All arguments broadcast; the result has the broadcast shape. ``price`` is
    the discounted premium (``e^{-rT}`` times the Black-76 forward price).
    An element is NaN with a reason code when an input is NaN or infinite
    (``nan_input``), the price, forward or strike is not positive, ``t <= 0``
    (``expired``), the price is at or below the discounted intrinsic value
    (no positive volatility reproduces it: ``below_intrinsic``), at or above
    the discounted upper bound F (call) or K (put) (``above_upper_bound``),
    or the solver did not settle (``no_convergence``). See the module
    docstring for the method.
    """
    p, f, k, tt, rr, call = np.broadcast_arrays(
        _as_float(price),
        _as_float(forward),
        _as_float(strike),
        _as_float(t),
        _as_float(r),
        np.asarray(is_call, dtype=bool),
    )
    shape = p.shape
    # ravel() copies only non-contiguous (e.g. broadcast) inputs.
    p_flat, f_flat, k_flat, t_flat, r_flat = (a.ravel() for a in (p, f, k, tt, rr))
    call_flat = call.ravel()
    n = p_flat.size
    iv = np.empty(n, dtype=np.float64)
    codes = np.empty(n, dtype=np.uint8)
    with np.errstate(all="ignore"):
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            _implied_vol_chunk(
                p_flat[start:stop], f_flat[start:stop], k_flat[start:stop],
                t_flat[start:stop], r_flat[start:stop], call_flat[start:stop],
                iv[start:stop], codes[start:stop],
            )  # fmt: skip
    return ImpliedVol(iv.reshape(shape), codes.reshape(shape))


def _implied_vol_chunk(
    price: FloatArray,
    forward: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    r: FloatArray,
    is_call: BoolArray,
    iv_out: FloatArray,
    code_out: CodeArray,
) -> None:
    """Fill ``iv_out`` and ``code_out`` for one chunk (floating-point errors are ignored)."""
    # Normalise: undiscounted price over sqrt(F K), out-of-the-money by symmetry.
    x = np.log(forward / strike)
    undiscounted = price * np.exp(r * t)
    sign = np.where(is_call, 1.0, -1.0)
    intrinsic = np.maximum(sign * (forward - strike), 0.0)
    beta = (undiscounted - intrinsic) / np.sqrt(forward * strike)
    x_otm = -np.abs(x)
    upper = np.exp(0.5 * x_otm)  # b(x, inf): the normalized upper bound of an OTM call

    # Fast check: every element valid and strictly inside the no-arbitrage bounds.
    valid = (price > 0.0) & (t > 0.0) & (beta > 0.0) & (beta < upper) & np.isfinite(r)
    valid &= (x == x) & (np.abs(x) < np.inf)  # finite positive F and K
    if valid.all():
        code_out.fill(OK)
    else:
        code_out[:] = _invalid_codes(price, forward, strike, t, r, beta, upper)
        beta = np.where(valid, beta, 0.5 * upper)  # any in-range value, overwritten below
        x_otm = np.where(valid, x_otm, 0.0)
        upper = np.where(valid, upper, 1.0)

    s, settled = _solve_normalized(x_otm, beta, upper)
    iv_out[:] = s / np.sqrt(t)
    unsettled = valid & ~settled
    code_out[unsettled] = _NO_CONVERGENCE
    iv_out[code_out != OK] = np.nan


def _invalid_codes(
    price: FloatArray,
    forward: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    r: FloatArray,
    beta: FloatArray,
    upper: FloatArray,
) -> CodeArray:
    """Slow path: the reason code of every element of a chunk that has a bad one."""
    codes = np.zeros(price.shape, dtype=np.uint8)
    codes[~(beta < upper)] = _ABOVE_UPPER_BOUND
    codes[~(beta > 0.0)] = _BELOW_INTRINSIC
    codes[~(price > 0.0)] = _NON_POSITIVE_PRICE
    shared = _validate(forward, strike, t, r, price)
    return cast(CodeArray, np.where(shared != OK, shared, codes))


def _solve_normalized(
    x: FloatArray, beta: FloatArray, upper: FloatArray
) -> tuple[FloatArray, BoolArray]:
    """Solve ``b(x, s) = beta`` for ``s`` (``x <= 0``, ``0 < beta < e^{x/2} = upper``).

    Returns ``s`` and whether each element settled (see the module docstring).
    """
    e_half = upper  # e^{x/2}
    e_minus_half = 1.0 / upper  # e^{-x/2}
    x2 = x * x
    s_c = np.sqrt(-2.0 * x)
    # At the inflection point h = -s/2, so b_c = e^{x/2}/2 - e^{-x/2} N(-s_c)
    # and b'_c = e^{x/2}/sqrt(2 pi).
    b_c = 0.5 * e_half - e_minus_half * _ndtr(-s_c)
    lower = beta < b_c
    guess = s_c + (beta - b_c) * (_SQRT_2PI / e_half)
    # Deep out of the money the Taylor step goes negative; use the quadratic in s^2 from
    # ln b = -(x^2/s^2 + s^2/4)/2 - ln sqrt(2 pi) + ln D with ln D dropped (smaller root,
    # written without cancellation).
    ln_term = -np.log(beta) - _LN_SQRT_2PI
    wing = np.sqrt(x2 / (ln_term + np.sqrt(np.maximum(ln_term * ln_term - 0.25 * x2, 0.0))))
    s = np.where(guess > 0.0, guess, wing)

    # Per-branch constants of the unified Householder step (see _householder_step).
    branch = np.where(lower, -1.0, 1.0)
    target = np.where(lower, beta, upper - beta)
    consts = _StepConstants(
        x=x,
        x2=x2,
        branch=branch,
        neg_branch=-branch,
        e_half=e_half,
        e_minus_half_signed=branch * e_minus_half,
        inv_target=1.0 / target,
    )
    step = np.zeros_like(s)
    for _ in range(_HOUSEHOLDER_STEPS):
        s, step = _householder_step(s, consts)
    settled = np.abs(step) <= _SETTLED_STEP * s
    if not settled.all():
        s, settled = _finish_stragglers(s, settled, consts)
    return s, settled


@dataclass(frozen=True, slots=True)
class _StepConstants:
    """Per-element values that do not change between Householder steps."""

    x: FloatArray
    x2: FloatArray
    branch: FloatArray  # -1 below the inflection point (objective ln b), +1 above
    neg_branch: FloatArray
    e_half: FloatArray
    e_minus_half_signed: FloatArray
    inv_target: FloatArray  # 1 / beta below, 1 / (e^{x/2} - beta) above

    def take(self, index: npt.NDArray[np.intp]) -> _StepConstants:
        return _StepConstants(
            x=self.x[index],
            x2=self.x2[index],
            branch=self.branch[index],
            neg_branch=self.neg_branch[index],
            e_half=self.e_half[index],
            e_minus_half_signed=self.e_minus_half_signed[index],
            inv_target=self.inv_target[index],
        )


def _householder_step(s: FloatArray, c: _StepConstants) -> tuple[FloatArray, FloatArray]:
    """One third-order Householder step on the branch's transformed objective.

    Below the inflection point (branch -1) the objective is ``ln b(s) - ln beta``
    and the working value is ``D = b``; above it (branch +1) it is
    ``ln(e^{x/2} - beta) - ln(e^{x/2} - b(s))`` and ``D = e^{x/2} - b``, which
    is the *sum* of two normal tails, so it never cancels. With
    ``lambda = b'/D`` and ``mu = branch * lambda`` both objectives share
    ``f'/f' = 1``, ``f''/f' = g2 + mu`` and ``f'''/f' = g3 + 3 mu g2 + 2 mu^2``,
    where ``g2 = b''/b'`` and ``g3 = b'''/b'`` are closed-form.
    Returns the new ``s`` and the step taken.
    """
    inv_s = 1.0 / s
    h = c.x * inv_s
    half_s = 0.5 * s
    # D = e^{x/2} N(-branch (h + s/2)) + branch e^{-x/2} N(h - s/2)
    d = _ndtr(c.neg_branch * (h + half_s))
    d *= c.e_half
    d += c.e_minus_half_signed * _ndtr(h - half_s)
    # b' = exp(-(h^2 + s^2/4) / 2) / sqrt(2 pi)
    vega = np.exp(-0.5 * (h * h + half_s * half_s)) * (1.0 / _SQRT_2PI)
    x2_s2 = c.x2 * inv_s * inv_s
    g2 = x2_s2 * inv_s - 0.25 * s
    g3 = g2 * g2 - 3.0 * x2_s2 * inv_s * inv_s - 0.25
    lam = vega / d
    mu = c.branch * lam
    # Newton step of the objective: nu = -f / f' = branch ln(D / target) / lambda
    nu = c.branch * np.log(d * c.inv_target) / lam
    gamma = g2 + mu
    delta = g3 + mu * (3.0 * g2 + 2.0 * mu)
    step = nu * (1.0 + 0.5 * gamma * nu) / (1.0 + nu * (gamma + delta * nu * (1.0 / 6.0)))
    new = s + step
    # A wild step from a poor guess must not leave the domain s > 0.
    new = np.where(new > 0.0, new, 0.5 * s)
    return new, step


def _finish_stragglers(
    s: FloatArray, settled: BoolArray, consts: _StepConstants
) -> tuple[FloatArray, BoolArray]:
    """Extra steps on the (few) elements that had not settled, compacted for speed."""
    s = s.copy()
    settled = settled.copy()
    index = np.flatnonzero(~settled)
    sub = consts.take(index)
    s_sub = s[index]
    s_sub = np.where(np.isfinite(s_sub) & (s_sub > 0.0), s_sub, np.sqrt(-2.0 * sub.x) + 1.0)
    done = np.zeros(index.size, dtype=bool)
    for _ in range(_EXTRA_STEPS):
        s_sub, step = _householder_step(s_sub, sub)
        done = np.abs(step) <= _SETTLED_STEP * s_sub
        if done.all():
            break
    s[index] = s_sub
    settled[index] = done & np.isfinite(s_sub)
    return s, settled


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------

ForwardSource = Literal["future", "parity", "none"]


class ForwardEstimate(NamedTuple):
    """A forward for one underlying and expiry, where it came from, and why not if NaN."""

    forward: float
    source: ForwardSource
    reason: Reason | None
    strikes: tuple[float, ...] = ()
    """The strikes whose put-call pairs gave a parity forward."""


MIN_PARITY_PAIRS = 2
"""Pairs averaged by :func:`forward_from_parity`: two guard against one stale quote."""


def _parity_estimate(
    strike: FloatArray, call: FloatArray, put: FloatArray, growth: float | FloatArray
) -> FloatArray:
    """``F = K + e^{rT}(C - P)`` (``growth`` is ``e^{rT}``): parity solved for the forward."""
    estimate: FloatArray = strike + growth * (call - put)
    return estimate


def parity_forwards(
    strikes: ArrayLike, call_prices: ArrayLike, put_prices: ArrayLike, t: ArrayLike, r: ArrayLike
) -> FloatArray:
    """Elementwise put-call parity forwards ``K + e^{rT}(C - P)``, NaN where a pair is unusable.

    A pair is usable with finite positive call and put prices, a positive
    strike, finite ``t > 0`` and ``r``, and a positive result. All arguments
    broadcast: one pair per instant of a time series (candles), or every
    strike of a chain at one instant (what :func:`forward_from_parity` averages).
    """
    k, c, p, tt, rr = np.broadcast_arrays(
        _as_float(strikes),
        _as_float(call_prices),
        _as_float(put_prices),
        _as_float(t),
        _as_float(r),
    )
    with np.errstate(all="ignore"):
        forward = _parity_estimate(k, c, p, np.exp(rr * tt))
        usable = (
            (k > 0.0) & (c > 0.0) & (p > 0.0) & (tt > 0.0) & (forward > 0.0)
            & np.isfinite(k) & np.isfinite(c) & np.isfinite(p) & np.isfinite(tt) & np.isfinite(rr)
        )  # fmt: skip
    return cast(FloatArray, np.where(usable, forward, np.nan))


def forward_from_parity(
    strikes: ArrayLike,
    call_prices: ArrayLike,
    put_prices: ArrayLike,
    t: float,
    r: float,
    *,
    pairs: int = MIN_PARITY_PAIRS,
) -> ForwardEstimate:
    """Forward from put-call parity ``C - P = e^{-rT}(F - K)`` nearest the money.

    Each valid pair (finite positive call and put prices, positive strike)
    gives ``F_i = K_i + e^{rT}(C_i - P_i)``. The pairs with the smallest
    ``|C - P|`` are nearest the money, where both options are liquid and the
    quotes least stale; the forward is the mean of the ``pairs`` nearest ones
    (ties broken by strike). Fewer valid pairs than ``pairs`` gives NaN with
    ``no_forward``; so do a non-positive result, ``t <= 0`` (``expired``) or a
    non-finite ``t``/``r`` (``nan_input``).
    """
    k = np.asarray(strikes, dtype=np.float64).ravel()
    c = np.asarray(call_prices, dtype=np.float64).ravel()
    p = np.asarray(put_prices, dtype=np.float64).ravel()
    if not (k.size == c.size == p.size):
        raise ValueError("strikes, call_prices and put_prices must have the same length")
    if pairs < 1:
        raise ValueError("pairs must be at least 1")
    if not (math.isfinite(t) and math.isfinite(r)):
        return ForwardEstimate(math.nan, "none", Reason.NAN_INPUT)
    if t <= 0.0:
        return ForwardEstimate(math.nan, "none", Reason.EXPIRED)
    with np.errstate(invalid="ignore"):
        ok = (k > 0.0) & (c > 0.0) & (p > 0.0) & np.isfinite(k) & np.isfinite(c) & np.isfinite(p)
    idx = np.flatnonzero(ok)
    if idx.size < pairs:
        return ForwardEstimate(math.nan, "none", Reason.NO_FORWARD)
    diff = c[idx] - p[idx]
    # lexsort: primary key last -> nearest the money first, ties by strike.
    nearest = idx[np.lexsort((k[idx], np.abs(diff)))[:pairs]]
    estimates = _parity_estimate(k[nearest], c[nearest], p[nearest], math.exp(r * t))
    forward = float(np.mean(estimates))
    if not forward > 0.0:
        return ForwardEstimate(math.nan, "none", Reason.NO_FORWARD)
    return ForwardEstimate(forward, "parity", None, tuple(float(v) for v in k[nearest]))


def choose_forward(
    future_price: float | None,
    strikes: ArrayLike,
    call_prices: ArrayLike,
    put_prices: ArrayLike,
    t: float,
    r: float,
    *,
    pairs: int = MIN_PARITY_PAIRS,
) -> ForwardEstimate:
    """The listed future's price when it is a usable number, else the parity forward.

    A future of the same expiry *is* the forward Black-76 needs (its price is
    the market forward). ``source`` says which was used: ``"future"``,
    ``"parity"``, or ``"none"`` (then ``forward`` is NaN and ``reason`` says why).
    """
    if future_price is not None and math.isfinite(future_price) and future_price > 0.0:
        return ForwardEstimate(float(future_price), "future", None)
    return forward_from_parity(strikes, call_prices, put_prices, t, r, pairs=pairs)
