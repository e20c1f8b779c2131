"""Accounts and their daily Kite login (logic; the stores and Kite are passed in).

Registering puts the app's API key and secret in the credential vault and
the account, active, in the registry. Retiring marks it retired and deletes
its secrets from the vault: the feed, which finds its accounts in the vault,
drops the account's connections and plans its instruments onto the others.

The daily login is Kite's redirect flow:

1. :meth:`Accounts.login_link` (an administrator, or a user who trades the
   account) answers Kite's login URL with a signed, expiring, single-use
   state in ``redirect_params`` (:mod:`lambdas.api.login_state`);
2. Kite sends the browser to the callback with the state and a
   ``request_token``; :meth:`Accounts.complete_login` verifies the state,
   claims its nonce (a replay is refused), checks the account is still the
   one the state names, exchanges the token with the account's API secret
   (Kite checks ``sha256(api_key + request_token + api_secret)`` and refuses
   a token issued to another app), checks Kite logged in the account's own
   user, and only then stores the session, encrypted, in the vault (the feed
   and the trading routes read it from there) and mirrors its public facts in
   the registry. Any refusal stores nothing.

:func:`logins_required` is the scheduled check at token expiry: each
active account without a live session is returned (the handler counts it as
a metric and publishes it as an event) and noted in the registry, so the
accounts list says so too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlencode

from lambdas.api.account_models import Account, AccountSession, AccountStreaming, LoginLink
from lambdas.api.auth import GrantReader, Principal, require_role
from lambdas.api.dal.accounts import AccountRecord
from lambdas.api.errors import (
    AccountChangedError,
    AccountNotFoundError,
    AccountRetiredError,
    ApiError,
    ForbiddenError,
    KiteCallError,
    KiteFailureKind,
    KiteLoginCancelledError,
    KiteLoginRejectedError,
    KiteUnavailableError,
    KiteUserMismatchError,
    LoginStateExpiredError,
    LoginStateInvalidError,
    LoginStateReplayedError,
)
from lambdas.api.login_state import LoginStateError, StateProblem, issue, verify
from ticker_adapters.credentials import (
    ApiCredentials,
    CredentialError,
    CredentialNotFoundError,
    KiteSession,
)
from ticker_adapters.feed_status import FeedStatus
from ticker_core.kite import next_token_expiry

KITE_LOGIN_VERSION = "3"
STATE_PARAMETER = "state"
# Kite's answers that mean "this request token will not be exchanged" (nothing happened).
REJECTED_KINDS = frozenset(
    {KiteFailureKind.LOGIN_REQUIRED, KiteFailureKind.REFUSED, KiteFailureKind.NOT_FOUND}
)


class Registry(Protocol):
    """The account registry (``lambdas.api.dal.accounts.DynamoAccountRegistry``)."""

    def get(self, account_id: str) -> AccountRecord | None:
        """The account, or None."""
        ...

    def all(self) -> list[AccountRecord]:
        """Every account."""
        ...

    def register(self, account_id: str, api_key: str, by: str, at: datetime) -> AccountRecord:
        """Register (or re-register) as active."""
        ...

    def retire(self, account_id: str, by: str, at: datetime) -> AccountRecord | None:
        """Mark retired; None if unknown."""
        ...

    def record_login(
        self, account_id: str, by: str, at: datetime, expires_at: datetime
    ) -> AccountRecord | None:
        """Mirror a new session; None if the account is not active."""
        ...

    def mark_login_required(self, account_id: str, since: datetime) -> None:
        """Note a login is required."""
        ...

    def claim_state(self, nonce: str, expires_at: datetime) -> bool:
        """Mark a state used; False on a replay."""
        ...


class Vault(Protocol):
    """The credential vault (``ticker_adapters.credentials.CredentialVault``)."""

    def put_api_credentials(self, account_id: str, credentials: ApiCredentials) -> None:
        """Store the app's key and secret."""
        ...

    def api_credentials(self, account_id: str, *, force_refresh: bool = False) -> ApiCredentials:
        """The app's key and secret."""
        ...

    def put_session(self, account_id: str, session: KiteSession) -> None:
        """Store the day's session."""
        ...

    def session(self, account_id: str, *, force_refresh: bool = False) -> KiteSession:
        """The stored session (possibly expired)."""
        ...

    def delete_account(self, account_id: str) -> None:
        """Delete the account's secrets."""
        ...


@dataclass(frozen=True)
class ExchangedSession:
    """What Kite's ``POST /session/token`` answered, as far as it is kept."""

    access_token: str
    user_id: str

    def __repr__(self) -> str:  # never the token
        return f"ExchangedSession(user_id={self.user_id!r})"


class SessionExchange(Protocol):
    """Kite's request-token exchange (``lambdas.api.login_broker``)."""

    def exchange(self, api_key: str, api_secret: str, request_token: str) -> ExchangedSession:
        """The session; :class:`~lambdas.api.errors.KiteCallError` when Kite refuses or fails."""
        ...


@dataclass(frozen=True)
class LoginSettings:
    """How login links are made."""

    kite_login_url: str
    state_ttl: timedelta


@dataclass(frozen=True)
class LoginCompleted:
    """A stored login."""

    account_id: str
    user_id: str
    """The Cognito user who asked for the login."""
    expires_at: datetime


@dataclass(frozen=True)
class LoginRequired:
    """An active account without a live session, found by the scheduled check."""

    account_id: str
    api_key: str
    session_expired_at: datetime | None
    """When its last session expired (None: none is stored)."""


def utc_now() -> datetime:
    """The current instant."""
    return datetime.now(UTC)


def session_view(record: AccountRecord, now: datetime) -> AccountSession:
    """The account's session facts from the registry's mirror."""
    expires = record.session_expires_at
    logged_in = record.active and expires is not None and expires > now
    return AccountSession(
        logged_in=logged_in,
        expires_at=expires,
        last_login_at=record.last_login_at,
        last_login_by=record.last_login_by,
        login_required=record.active and not logged_in,
        login_required_since=record.login_required_since if record.active else None,
    )


def streaming_view(
    status: FeedStatus | None, account_id: str, now: datetime
) -> AccountStreaming | None:
    """The account's connections from the feed's record (None: the feed holds none)."""
    if status is None:
        return None
    held = status.account(account_id)
    if held is None:
        return None
    return AccountStreaming(
        connections_open=held.connections_open,
        connections=len(held.connections),
        instruments=held.instruments,
        streaming=held.streaming,
        reported_at=status.written_at,
        stale=status.is_stale(now),
    )


def account_view(record: AccountRecord, status: FeedStatus | None, now: datetime) -> Account:
    """What the API shows of an account."""
    return Account(
        account_id=record.account_id,
        api_key=record.api_key,
        state="active" if record.active else "retired",
        registered_at=record.registered_at,
        registered_by=record.registered_by,
        retired_at=record.retired_at,
        retired_by=record.retired_by,
        session=session_view(record, now),
        streaming=streaming_view(status, record.account_id, now),
    )


def kite_login_url(base: str, api_key: str, state: str) -> str:
    """Kite's login URL for an app, carrying ``state`` back through ``redirect_params``."""
    redirect_params = urlencode({STATE_PARAMETER: state})
    separator = "&" if "?" in base else "?"
    query = urlencode(
        {"v": KITE_LOGIN_VERSION, "api_key": api_key, "redirect_params": redirect_params}
    )
    return f"{base}{separator}{query}"


STATE_ERRORS = {
    StateProblem.MALFORMED: LoginStateInvalidError,
    StateProblem.TAMPERED: LoginStateInvalidError,
    StateProblem.EXPIRED: LoginStateExpiredError,
}


class Accounts:
    """Register, list, retire; log in to Kite; find the accounts that need a login."""

    def __init__(
        self,
        *,
        registry: Registry,
        vault: Vault,
        grants: GrantReader,
        state_key: Callable[[], bytes],
        exchange: SessionExchange,
        feed_status: Callable[[], FeedStatus | None],
        settings: LoginSettings,
        clock: Callable[[], datetime] = utc_now,
        audit: Callable[[str, dict[str, str]], None] = lambda event, fields: None,
    ) -> None:
        self._registry = registry
        self._vault = vault
        self._grants = grants
        self._state_key = state_key
        self._exchange = exchange
        self._feed_status = feed_status
        self._settings = settings
        self._clock = clock
        self._audit = audit

    # -- administration -----------------------------------------------------------------

    def register(
        self, caller: Principal, account_id: str, api_key: str, api_secret: str
    ) -> Account:
        """Store the app's credentials in the vault, then the account (active) in the registry."""
        self._vault.put_api_credentials(account_id, ApiCredentials(api_key, api_secret))
        record = self._registry.register(account_id, api_key, caller.user_id, self._clock())
        self._audit("account registered", {"account_id": account_id, "by": caller.user_id})
        return account_view(record, self._feed_status(), self._clock())

    def accounts(self) -> list[Account]:
        """Every account with its session and streaming state, by id."""
        now = self._clock()
        status = self._feed_status()
        records = sorted(self._registry.all(), key=lambda r: r.account_id)
        return [account_view(r, status, now) for r in records]

    def get(self, account_id: str) -> Account:
        """One account (404 when never registered)."""
        record = self._registry.get(account_id)
        if record is None:
            raise AccountNotFoundError()
        return account_view(record, self._feed_status(), self._clock())

    def retire(self, caller: Principal, account_id: str) -> Account:
        """Retire the account: registry first (no new login starts), then its secrets go."""
        record = self._registry.retire(account_id, caller.user_id, self._clock())
        if record is None:
            raise AccountNotFoundError()
        self._vault.delete_account(account_id)
        self._audit("account retired", {"account_id": account_id, "by": caller.user_id})
        return account_view(record, self._feed_status(), self._clock())

    def active_count(self) -> int:
        """Accounts in use (what streaming capacity is planned on)."""
        return sum(1 for r in self._registry.all() if r.active)

    # -- the Kite login -------------------------------------------------------------------

    def login_link(self, caller: Principal, account_id: str) -> LoginLink:
        """Kite's login URL with a fresh state (administrators, or the account's traders)."""
        if not caller.is_admin:
            require_role(caller, account_id, "trade", self._grants)
        record = self._registry.get(account_id)
        if record is None:
            # The same answer as for any account the caller may not touch.
            if not caller.is_admin:
                raise ForbiddenError()
            raise AccountNotFoundError()
        if not record.active:
            raise AccountRetiredError()
        token, state = issue(
            self._state_key(),
            account_id=account_id,
            api_key=record.api_key,
            user_id=caller.user_id,
            now=self._clock(),
            ttl=self._settings.state_ttl,
        )
        self._audit("kite login started", {"account_id": account_id, "by": caller.user_id})
        return LoginLink(
            account_id=account_id,
            login_url=kite_login_url(self._settings.kite_login_url, record.api_key, token),
            expires_at=state.expires_at,
        )

    def complete_login(
        self, *, state: str | None, status: str | None, request_token: str | None
    ) -> LoginCompleted:
        """Kite's callback: verify everything, exchange the token, store the session.

        Raises a :class:`~lambdas.api.errors.LoginRefusedError` subclass (nothing
        stored) or :class:`~lambdas.api.errors.KiteUnavailableError`. Every outcome
        is audited by its code (never the state or the token).
        """
        try:
            done = self._complete(state, status, request_token)
        except ApiError as exc:
            self._audit("kite login refused", {"code": exc.code})
            raise
        self._audit(
            "kite login completed",
            {
                "account_id": done.account_id,
                "by": done.user_id,
                "expires_at": done.expires_at.isoformat(),
            },
        )
        return done

    def _complete(
        self, state: str | None, status: str | None, request_token: str | None
    ) -> LoginCompleted:
        now = self._clock()
        try:
            verified = verify(self._state_key(), state, now)
        except LoginStateError as exc:
            raise STATE_ERRORS[exc.problem]() from exc
        if status != "success" or not request_token:
            raise KiteLoginCancelledError()
        if not self._registry.claim_state(verified.nonce, verified.expires_at):
            raise LoginStateReplayedError()
        record = self._registry.get(verified.account_id)
        if record is None or not record.active or record.api_key != verified.api_key:
            raise AccountChangedError()
        try:
            credentials = self._vault.api_credentials(verified.account_id, force_refresh=True)
        except CredentialNotFoundError as exc:
            raise AccountChangedError() from exc
        if credentials.api_key != verified.api_key:
            raise AccountChangedError()
        try:
            session = self._exchange.exchange(
                credentials.api_key, credentials.api_secret, request_token
            )
        except KiteCallError as exc:
            if exc.kind in REJECTED_KINDS:
                raise KiteLoginRejectedError() from exc
            raise KiteUnavailableError(
                "Kite could not be reached to complete the login. Start the login again."
            ) from exc
        if session.user_id != verified.account_id:
            raise KiteUserMismatchError()
        issued = self._clock()
        expires = next_token_expiry(issued).astimezone(UTC)  # stored and shown in UTC
        self._vault.put_session(
            verified.account_id,
            KiteSession(
                api_key=credentials.api_key,
                access_token=session.access_token,
                user_id=session.user_id,
                issued_at=issued,
                expires_at=expires,
            ),
        )
        self._registry.record_login(verified.account_id, verified.user_id, issued, expires)
        return LoginCompleted(verified.account_id, verified.user_id, expires)

    # -- the scheduled check --------------------------------------------------------------

    def check_logins(self) -> list[LoginRequired]:
        """Active accounts whose vault holds no live session; each is noted in the registry."""
        return logins_required(self._registry, self._vault, self._clock())


def logins_required(registry: Registry, vault: Vault, now: datetime) -> list[LoginRequired]:
    """Active accounts whose vault holds no session live at ``now``, each noted in ``registry``.

    The scheduled check at Kite's token expiry (``lambdas.api.handler.login_check``).
    """
    required = []
    for record in sorted(registry.all(), key=lambda r: r.account_id):
        if not record.active:
            continue
        try:
            session: KiteSession | None = vault.session(record.account_id, force_refresh=True)
        except CredentialNotFoundError:
            session = None
        except (CredentialError, ValueError):
            session = None  # unreadable counts as missing: a login rewrites it
        if session is not None and not session.is_expired(now):
            continue
        registry.mark_login_required(record.account_id, now)
        required.append(
            LoginRequired(
                record.account_id,
                record.api_key,
                session.expires_at if session is not None else None,
            )
        )
    return required
