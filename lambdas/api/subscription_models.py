"""Request and response models of the subscription routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from lambdas.api.instrument_refs import INSTRUMENT_REF_PATTERN
from lambdas.api.models import ApiModel, Strict
from ticker_core.kite import MAX_INSTRUMENT_TOKEN
from ticker_core.subscriptions import MAX_EXPIRIES, MAX_STRIKES_EACH_SIDE, UNDERLYING_PATTERN

Mode = Literal["ltp", "quote", "full"]
MAX_CHANGES = 100
"""Instruments subscribed (or withdrawn) in one request: 100 of the longest fit the API's
16 KB body cap; a larger change is several requests, or an ATM window."""
MAX_WINDOW_CHANGES = 20

InstrumentRef = Annotated[
    Annotated[int, Field(strict=True, ge=1, le=MAX_INSTRUMENT_TOKEN)]
    | Annotated[str, Field(pattern=INSTRUMENT_REF_PATTERN)],
    Field(
        description="An instrument_token, or EXCHANGE:TRADINGSYMBOL as Kite writes it "
        "(NSE:INFY, NFO:NIFTY26DEC24000CE)"
    ),
]
Underlying = Annotated[
    str, Field(pattern=UNDERLYING_PATTERN.pattern, description="NIFTY, BANKNIFTY, a stock symbol")
]


class InstrumentRequest(Strict):
    """Stream one instrument in a mode."""

    instrument: InstrumentRef
    mode: Mode = "quote"


class AtmWindowRequest(Strict):
    """Stream the options around the money of an underlying, re-centred as it moves."""

    underlying: Underlying
    strikes_each_side: Annotated[int, Field(ge=1, le=MAX_STRIKES_EACH_SIDE)]
    expiries: Annotated[int, Field(ge=1, le=MAX_EXPIRIES)] = 1
    mode: Mode = "quote"


class SubscriptionChangeRequest(Strict):
    """``POST /subscriptions``: the caller's additions and withdrawals, applied together.

    Subscribing an instrument the caller already has changes its mode; each
    ATM window replaces the caller's window on that underlying. Other users'
    entries are never touched.
    """

    subscribe: Annotated[list[InstrumentRequest], Field(max_length=MAX_CHANGES)] = Field(
        default_factory=list
    )
    unsubscribe: Annotated[list[InstrumentRef], Field(max_length=MAX_CHANGES)] = Field(
        default_factory=list
    )
    atm_windows: Annotated[list[AtmWindowRequest], Field(max_length=MAX_WINDOW_CHANGES)] = Field(
        default_factory=list
    )
    remove_atm_windows: Annotated[list[Underlying], Field(max_length=MAX_WINDOW_CHANGES)] = Field(
        default_factory=list
    )


class OwnerMode(ApiModel):
    """One user's request for an instrument."""

    owner: str
    mode: Mode


class SubscribedInstrument(ApiModel):
    """An instrument some user wants streamed."""

    instrument_token: int
    exchange: str | None
    tradingsymbol: str | None
    """None when today's instruments no longer list it (the feed skips it)."""
    mode: Mode
    """The widest mode anyone asked for: what the feed streams."""
    requests: list[OwnerMode]


class AtmWindow(ApiModel):
    """One user's ATM window rule."""

    underlying: str
    strikes_each_side: int
    expiries: int
    mode: Mode
    owner: str


class Capacity(ApiModel):
    """What the active accounts can stream, and what the desired set needs."""

    accounts: int
    connections_per_account: int
    instruments_per_connection: int
    capacity: int
    """accounts x connections_per_account x instruments_per_connection."""
    planned: int
    """Distinct instruments of the desired set, ATM windows resolved at today's reference price
    (the instruments dump's last price, which the feed also starts from)."""


class Subscriptions(ApiModel):
    """The desired set, every user's entries, and the capacity it is planned against."""

    generation: int
    instruments: list[SubscribedInstrument]
    atm_windows: list[AtmWindow]
    capacity: Capacity


class AccountStreamingStatus(ApiModel):
    """One account's connections."""

    account_id: str
    connections_open: int
    connections: int
    instruments: int
    streaming: int


class FeedReport(ApiModel):
    """The feed's latest status record."""

    instance: str
    reported_at: datetime
    age_seconds: float
    stale: bool
    """The feed has missed several of its own status intervals: do not trust the numbers."""
    generation: int | None
    """The desired-set generation the feed's plan reflects."""
    desired: int
    """Instruments the feed wants (ATM windows resolved on live prices)."""
    streaming: int
    """Instruments on an open connection."""
    not_fitted: int
    """Instruments no connection had room for."""
    not_fitted_sample: list[int]
    accounts: list[AccountStreamingStatus]
    accounts_waiting_for_login: list[str]


class SubscriptionStatus(ApiModel):
    """What the feed actually streams, against what is desired."""

    desired_generation: int
    """The desired set's current generation; the feed catches up within its poll interval."""
    feed: FeedReport | None
    """None when no feed has reported."""
    instances: int
    """Feed instances with a record (normally one)."""
