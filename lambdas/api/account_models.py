"""Request and response models of the accounts and Kite login routes.

An API secret goes in (``SecretStr``: it never appears in a repr, a log or an
answer) and never comes out; what comes out is what operations need at a
glance: state, session, streaming.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, SecretStr

from lambdas.api.models import ApiModel, Strict

API_KEY_PATTERN = r"^[A-Za-z0-9]{6,64}$"


class RegisterAccountRequest(Strict):
    """``PUT /admin/accounts/{account_id}``: the Kite Connect app the account logs in with."""

    api_key: Annotated[str, Field(pattern=API_KEY_PATTERN, description="The app's API key")]
    api_secret: Annotated[
        SecretStr,
        Field(
            min_length=8,
            max_length=128,
            description="The app's API secret: stored encrypted, never returned or logged",
        ),
    ]


class AccountSession(ApiModel):
    """The account's Kite session, as far as it is safe to show."""

    logged_in: bool
    """A session exists and has not expired."""
    expires_at: datetime | None = None
    last_login_at: datetime | None = None
    last_login_by: str | None = None
    """The Cognito user who completed the last login."""
    login_required: bool
    """The account is active and has no live session: someone must log in to Kite."""
    login_required_since: datetime | None = None
    """When the scheduled check first found the session missing or expired."""


class AccountStreaming(ApiModel):
    """The account's WebSocket connections, from the feed's status record."""

    connections_open: int
    connections: int
    instruments: int
    """Instruments the feed assigned to the account's connections."""
    streaming: int
    """Of those, the ones on a connection that is open."""
    reported_at: datetime
    stale: bool
    """The feed has not written its status for several of its intervals."""


class Account(ApiModel):
    """One registered account."""

    account_id: str
    api_key: str
    state: Literal["active", "retired"]
    registered_at: datetime
    registered_by: str
    retired_at: datetime | None = None
    retired_by: str | None = None
    session: AccountSession
    streaming: AccountStreaming | None = None
    """None when the feed holds no connection for the account (or reports nothing)."""


class Accounts(ApiModel):
    """Every registered account."""

    accounts: list[Account]


class LoginLink(ApiModel):
    """Where to send the browser to log the account in to Kite (also the ``Location``)."""

    account_id: str
    login_url: str
    expires_at: datetime
    """The link works once, until this instant."""
