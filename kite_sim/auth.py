"""Accounts, the login flow and sessions (sans-I/O).

An :class:`Account` is one Kite Connect app with the one user who logs in to
it: ``api_key``/``api_secret`` (generated at runtime unless given), the app's
redirect and postback URLs, and the IP addresses registered for orders.

The login flow is Kite's: ``/connect/login`` hands out a single-use
``request_token`` (valid a few minutes) that ``POST /session/token`` exchanges
for an ``access_token`` when ``checksum == sha256(api_key + request_token +
api_secret)``. Access tokens expire at the next 06:00 IST of the market clock
(Kite expires them daily between 06:00 and 08:00) or when expired by hand.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from kite_sim.clock import MarketClock
from kite_sim.errors import InputError, PermissionDeniedError, TokenError
from ticker_core.kite_checksums import session_checksum
from ticker_core.tz import IST

REQUEST_TOKEN_TTL = timedelta(minutes=5)
DAILY_EXPIRY = time(6, 0)
_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


def random_token(length: int = 32, alphabet: str = _ALNUM) -> str:
    """A random token like Kite's (``secrets``-grade)."""
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_api_key() -> str:
    """A fresh 16-character API key."""
    return random_token(16, _LOWER_ALNUM)


def new_api_secret() -> str:
    """A fresh 32-character API secret."""
    return random_token(32, _LOWER_ALNUM)


@dataclass
class Account:
    """One Kite Connect app and its user."""

    user_id: str
    api_key: str
    api_secret: str
    user_name: str = "Sim User"
    email: str = "sim@example.com"
    redirect_url: str = "http://127.0.0.1/kite/callback"
    postback_url: str | None = None
    registered_ips: set[str] = field(default_factory=lambda: {"127.0.0.1", "::1"})
    enforce_ip: bool = True

    def ip_allowed(self, ip: str | None) -> bool:
        """Whether orders may come from ``ip`` (always, when the check is off)."""
        if not self.enforce_ip:
            return True
        if ip is None:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        for registered in self.registered_ips:
            try:
                if addr in ipaddress.ip_network(registered, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def require_ip(self, ip: str | None) -> None:
        """Raise :class:`PermissionDeniedError` unless orders may come from ``ip``."""
        if not self.ip_allowed(ip):
            raise PermissionDeniedError(
                f"Orders are allowed only from the app's registered IP addresses; got {ip}."
            )


def generate_account(index: int = 0, **overrides: object) -> Account:
    """An account with fresh credentials (``index`` names the user)."""
    fields: dict[str, object] = {
        "user_id": f"SM{1000 + index:04d}",
        "api_key": new_api_key(),
        "api_secret": new_api_secret(),
        "user_name": f"Sim User {index}",
        "email": f"user{index}@sim.invalid",
    }
    fields.update(overrides)
    return Account(**fields)  # type: ignore[arg-type]


@dataclass
class Session:
    """A logged-in session: what an access token stands for."""

    account: Account
    access_token: str
    public_token: str
    login_time: datetime
    expires_at: datetime
    revoked: bool = False

    def valid_at(self, when: datetime) -> bool:
        """Whether the token still works at market time ``when``."""
        return not self.revoked and when < self.expires_at


@dataclass
class _RequestToken:
    account: Account
    issued_at: datetime
    used: bool = False


def next_daily_expiry(login: datetime) -> datetime:
    """The first 06:00 IST strictly after ``login``."""
    local = login.astimezone(IST)
    candidate = datetime.combine(local.date(), DAILY_EXPIRY, tzinfo=IST)
    if candidate <= local:
        candidate += timedelta(days=1)
    return candidate


class SessionStore:
    """Request tokens, access tokens and their expiry, for a set of accounts."""

    def __init__(self, accounts: list[Account], clock: MarketClock) -> None:
        if not accounts:
            raise ValueError("at least one account is needed")
        self._clock = clock
        self._accounts = {a.api_key: a for a in accounts}
        self._request_tokens: dict[str, _RequestToken] = {}
        self._sessions: dict[str, Session] = {}

    @property
    def accounts(self) -> list[Account]:
        """Every account, in the order given."""
        return list(self._accounts.values())

    def account(self, api_key: str) -> Account:
        """The account for ``api_key``; :class:`InputError` when unknown."""
        try:
            return self._accounts[api_key]
        except KeyError:
            raise InputError("Invalid `api_key`.") from None

    def begin_login(self, api_key: str) -> str:
        """Log the app's user in (no form in the simulator); a ``request_token``."""
        account = self.account(api_key)
        token = random_token()
        self._request_tokens[token] = _RequestToken(account, self._clock.now())
        return token

    def create_session(self, api_key: str, request_token: str, checksum: str) -> Session:
        """Exchange a ``request_token``: Kite's ``POST /session/token``."""
        account = self.account(api_key)
        pending = self._request_tokens.get(request_token)
        now = self._clock.now()
        if (
            pending is None
            or pending.used
            or pending.account is not account
            or now - pending.issued_at > REQUEST_TOKEN_TTL
        ):
            raise TokenError("Token is invalid or has expired.")
        expected = session_checksum(api_key, request_token, account.api_secret)
        if not hmac.compare_digest(expected, checksum.lower()):
            raise TokenError("Invalid checksum")
        pending.used = True
        return self._new_session(account, now)

    def issue_session(self, api_key: str) -> Session:
        """A session without the login dance (admin API and tests)."""
        return self._new_session(self.account(api_key), self._clock.now())

    def _new_session(self, account: Account, now: datetime) -> Session:
        session = Session(
            account=account,
            access_token=random_token(),
            public_token=random_token(),
            login_time=now,
            expires_at=next_daily_expiry(now),
        )
        self._sessions[session.access_token] = session
        return session

    def authenticate(self, api_key: str | None, access_token: str | None) -> Session:
        """The live session for this key and token; :class:`TokenError` otherwise."""
        if not api_key or not access_token:
            raise TokenError("Incorrect `api_key` or `access_token`.")
        session = self._sessions.get(access_token)
        if session is None or session.account.api_key != api_key:
            raise TokenError("Incorrect `api_key` or `access_token`.")
        if not session.valid_at(self._clock.now()):
            raise TokenError("Token is invalid or has expired.")
        return session

    def authenticate_header(self, header: str | None) -> Session:
        """Authenticate ``Authorization: token api_key:access_token``."""
        if not header or not header.startswith("token "):
            raise TokenError("Incorrect `api_key` or `access_token`.")
        api_key, _, access_token = header[len("token ") :].partition(":")
        return self.authenticate(api_key.strip(), access_token.strip())

    def invalidate(self, api_key: str, access_token: str) -> bool:
        """Log a session out (``DELETE /session/token``)."""
        session = self._sessions.get(access_token)
        if session is None or session.account.api_key != api_key:
            raise TokenError("Incorrect `api_key` or `access_token`.")
        session.revoked = True
        return True

    def expire(self, *, api_key: str | None = None, access_token: str | None = None) -> int:
        """Expire matching live sessions now (all when no filter); how many."""
        count = 0
        for session in self._sessions.values():
            if session.revoked:
                continue
            if api_key is not None and session.account.api_key != api_key:
                continue
            if access_token is not None and session.access_token != access_token:
                continue
            session.revoked = True
            count += 1
        return count

    def sessions(self) -> list[Session]:
        """Every session ever issued (live or not)."""
        return list(self._sessions.values())
