"""What clients want streamed: subscription requests, their rules and the merged desired set.

Two kinds of request, each owned by a client (``owner``) so that one client's
unsubscribe does not cut another's stream:

- an instrument subscription: token + mode;
- an ATM window rule (:class:`AtmWindowRule`): for an underlying, N strikes
  either side of the money for the K nearest expiries, in a mode (the feed
  resolves it against the day's instruments and the underlying's live price).

Several owners asking for one instrument get it once, in the widest mode any
of them asked for (:func:`merge_instruments`). Pure: the store that keeps the
requests (DynamoDB) is :mod:`ticker_adapters.subscription_store`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ticker_core.kite import MAX_INSTRUMENT_TOKEN, MODE_RANK, MODES, wider_mode

__all__ = [
    "MAX_EXPIRIES",
    "MAX_STRIKES_EACH_SIDE",
    "AtmWindowRule",
    "DesiredSubscriptions",
    "SubscriptionError",
    "merge_instruments",
    "validate_mode",
    "validate_owner",
    "validate_token",
]

OWNER_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
UNDERLYING_PATTERN: Final = re.compile(r"^[A-Z0-9&_-]{1,32}$")
MAX_STRIKES_EACH_SIDE: Final = 50
MAX_EXPIRIES: Final = 6


class SubscriptionError(ValueError):
    """A subscription request is invalid; the message names the field."""


def validate_mode(mode: str) -> None:
    """Raise :class:`SubscriptionError` unless ``mode`` is one of Kite's modes."""
    if mode not in MODE_RANK:
        raise SubscriptionError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def validate_owner(owner: str) -> None:
    """Raise :class:`SubscriptionError` unless ``owner`` is a valid owner name."""
    if not OWNER_PATTERN.match(owner):
        raise SubscriptionError(f"owner {owner!r} is invalid: 1-128 of A-Z a-z 0-9 _ . : @ -")


def validate_token(token: int) -> None:
    """Raise :class:`SubscriptionError` unless ``token`` is a possible instrument token."""
    if (
        isinstance(token, bool)
        or not isinstance(token, int)
        or not 0 < token <= MAX_INSTRUMENT_TOKEN
    ):
        raise SubscriptionError(f"instrument_token must be an integer in 1..{MAX_INSTRUMENT_TOKEN}")


@dataclass(frozen=True)
class AtmWindowRule:
    """Subscribe N strikes either side of the money for the K nearest expiries."""

    underlying: str
    strikes_each_side: int
    expiries: int
    mode: str
    owner: str

    def validate(self) -> None:
        """Raise :class:`SubscriptionError` naming the first field out of bounds."""
        if not UNDERLYING_PATTERN.match(self.underlying):
            raise SubscriptionError(f"underlying {self.underlying!r} is invalid")
        if not 1 <= self.strikes_each_side <= MAX_STRIKES_EACH_SIDE:
            raise SubscriptionError(f"strikes_each_side must be in 1..{MAX_STRIKES_EACH_SIDE}")
        if not 1 <= self.expiries <= MAX_EXPIRIES:
            raise SubscriptionError(f"expiries must be in 1..{MAX_EXPIRIES}")
        validate_mode(self.mode)
        validate_owner(self.owner)


@dataclass(frozen=True)
class DesiredSubscriptions:
    """Everything clients want, merged: one mode per instrument, plus ATM rules."""

    generation: int
    instruments: Mapping[int, str] = field(default_factory=dict)
    atm_windows: tuple[AtmWindowRule, ...] = ()


def merge_instruments(requests: Iterable[tuple[int, str]]) -> dict[int, str]:
    """One mode per token from every owner's ``(token, mode)``: the widest asked for."""
    merged: dict[int, str] = {}
    for token, mode in requests:
        merged[token] = wider_mode(mode, merged.get(token, mode))
    return merged
