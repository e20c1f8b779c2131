"""The sandbox's side of the Kite simulator: its admin API, and Kite's login as an app does it.

:class:`SimAdmin` wraps ``/_sim`` (credentials, exact per-instrument counters,
faults, tokens, the market clock). :func:`login` is the login flow the login
callback Lambda runs in AWS: ``/connect/login`` redirects to the app's URL
with a ``request_token``, which ``POST /session/token`` exchanges for the
day's access token (``KiteRestClient.generate_session``, the project's one
Kite client, which signs it with ``checksum = sha256(api_key + request_token +
api_secret)``). :func:`register_accounts` stores the results, encrypted, in the
credential vault.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ticker_adapters.credentials import (
    ApiCredentials,
    CredentialVault,
    KiteSession,
    next_token_expiry,
)
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport
from ticker_core.kite_errors import KiteError

HTTP_TIMEOUT_S = 15.0


class KiteSimError(RuntimeError):
    """The simulator answered with an error or something unexpected."""


@dataclass(frozen=True)
class SimAccount:
    """One simulated Kite app and its user."""

    user_id: str
    api_key: str
    api_secret: str

    def __repr__(self) -> str:  # never print the secret
        return f"SimAccount(user_id={self.user_id!r}, api_key={self.api_key!r})"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise KiteSimError(f"the sandbox only talks to loopback, not {host!r}")


def http_json(
    method: str,
    url: str,
    *,
    body: Any = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> Any:
    """One HTTP call to a loopback server; the JSON reply."""
    _check_loopback(url)
    data = None
    all_headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        all_headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 # nosec B310 # loopback only
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise KiteSimError(f"{method} {url}: HTTP {exc.code} {detail}") from exc


class SimAdmin:
    """The simulator's admin API."""

    def __init__(self, rest_url: str, admin_token: str | None = None) -> None:
        _check_loopback(rest_url)
        self.rest_url = rest_url.rstrip("/")
        self._headers = {"X-Sim-Admin-Token": admin_token} if admin_token else {}

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return http_json(method, f"{self.rest_url}/_sim{path}", body=body, headers=self._headers)

    def info(self) -> dict[str, Any]:
        """URLs, market time and the accounts' credentials."""
        result: dict[str, Any] = self._call("GET", "/info")
        return result

    def accounts(self) -> list[SimAccount]:
        """The simulated apps."""
        return [
            SimAccount(a["user_id"], a["api_key"], a["api_secret"]) for a in self.info()["accounts"]
        ]

    def counters(self, *, per_instrument: bool = True) -> dict[str, Any]:
        """Packets sent per connection and per instrument (exact), REST counts, faults fired."""
        query = "" if per_instrument else "?per_instrument=0"
        result: dict[str, Any] = self._call("GET", f"/counters{query}")
        return result

    def fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply a fault spec (see kite_sim's README)."""
        result: dict[str, Any] = self._call("POST", "/faults", spec)
        return result

    def expire_tokens(self, api_key: str | None = None) -> int:
        """Expire the sessions of one app (or all) now; returns how many."""
        body = {"api_key": api_key} if api_key else {}
        return int(self._call("POST", "/tokens/expire", body)["expired"])

    def clock(self, **changes: Any) -> dict[str, Any]:
        """Read (no arguments) or change the market clock."""
        if changes:
            result: dict[str, Any] = self._call("POST", "/clock", changes)
        else:
            result = self._call("GET", "/clock")
        return result

    def close_market(self) -> dict[str, Any]:
        """Stop the feed's ticks: the market clock to the close, no session loop.

        Connections stay up (heartbeats continue); an instrument subscribed
        afterwards still gets its one first tick, which the counters count.
        """
        now = datetime.fromisoformat(self.clock()["market_time"])
        close = now.replace(hour=15, minute=30, second=0, microsecond=0)
        if close <= now:
            return self.clock(session_loop=False)
        return self.clock(session_loop=False, set=close.isoformat())

    def tick_rates(
        self, rates: dict[str, float], max_ticks_per_second: float | None = None
    ) -> dict[str, Any]:
        """Ticks/s per token, symbol, name or segment, and the cap on the total."""
        body: dict[str, Any] = {"rates": rates}
        if max_ticks_per_second is not None:
            body["max_ticks_per_second"] = max_ticks_per_second
        result: dict[str, Any] = self._call("POST", "/tick_rates", body)
        return result

    def instruments_csv(self) -> str:
        """Kite's instruments dump (a public endpoint)."""
        _check_loopback(self.rest_url)
        with urllib.request.urlopen(  # noqa: S310 # nosec B310 # loopback only
            f"{self.rest_url}/instruments", timeout=HTTP_TIMEOUT_S
        ) as response:
            return str(response.read().decode())


def login(rest_url: str, account: SimAccount, now: datetime | None = None) -> KiteSession:
    """Kite's login: redirect with a request token, exchanged for the day's access token."""
    base = rest_url.rstrip("/")
    _check_loopback(base)
    query = urllib.parse.urlencode({"api_key": account.api_key, "v": "3"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(f"{base}/connect/login?{query}", timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code not in (301, 302, 303, 307):
            raise KiteSimError(f"login: HTTP {exc.code}") from exc
        location = exc.headers.get("Location", "")
    else:
        raise KiteSimError("login did not redirect")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    request_token = (params.get("request_token") or [""])[0]
    if not request_token or (params.get("status") or [""])[0] != "success":
        raise KiteSimError("login redirect carries no request_token")
    kite = KiteRestClient(
        account.api_key,
        transport=KiteTransport(base, connect_timeout=HTTP_TIMEOUT_S, read_timeout=HTTP_TIMEOUT_S),
    )
    try:
        data = kite.generate_session(request_token, account.api_secret)
    except KiteError as exc:
        raise KiteSimError(f"session/token refused: {exc.error_type}: {exc.message}") from exc
    issued = now or datetime.now(UTC)
    return KiteSession(
        api_key=account.api_key,
        access_token=data["access_token"],
        user_id=data["user_id"],
        issued_at=issued,
        expires_at=next_token_expiry(issued),
    )


def register_accounts(
    vault: CredentialVault, rest_url: str, accounts: list[SimAccount]
) -> list[str]:
    """Store each app's API credentials and a fresh session in the vault; returns account ids."""
    ids = []
    for account in accounts:
        vault.put_api_credentials(
            account.user_id, ApiCredentials(account.api_key, account.api_secret)
        )
        vault.put_session(account.user_id, login(rest_url, account))
        ids.append(account.user_id)
    return ids


def rotate_session(vault: CredentialVault, rest_url: str, account: SimAccount) -> KiteSession:
    """A fresh login written to the vault, as the login callback does after expiry."""
    session = login(rest_url, account)
    vault.put_session(account.user_id, session)
    return session
