"""Simulated accounts registered and logged in through the API, as operations do it.

:func:`register_and_login` registers each app (``PUT /admin/accounts/{id}``
with the administrator's token) and logs it in by walking Kite's redirect
flow the way a browser does: ``GET /accounts/{id}/kite/login`` answers 302
to Kite's login page (kite_sim's, which logs its user in without a form)
with the signed state in ``redirect_params``; Kite answers 302 to the app's
redirect URL (the API's callback) with the ``request_token`` and the state;
the callback exchanges the token and stores the session in the vault. No
step writes to the vault directly: the API does.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.kite import SimAccount

HTTP_TIMEOUT_S = 30.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")
REDIRECTS = (301, 302, 303, 307, 308)


class LoginFlowError(RuntimeError):
    """A step of the flow did not answer as it should."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, not followed if it redirects."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body or b"null")

    @property
    def location(self) -> str:
        """Where a redirect points."""
        return self.headers.get("Location", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(method: str, url: str, *, token: str | None = None, body: Any = None) -> Answer:
    """One request to a loopback server; redirects are returned, not followed."""
    if urllib.parse.urlsplit(url).hostname not in LOOPBACK:
        raise LoginFlowError(f"the sandbox only talks to loopback, not {url!r}")
    headers = {"Authorization": token} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT_S) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


def register(api_url: str, admin_token: str, account: SimAccount) -> Answer:
    """``PUT /admin/accounts/{id}``: the app's key and secret, to the vault via the API."""
    return fetch(
        "PUT",
        f"{api_url}/admin/accounts/{account.user_id}",
        token=admin_token,
        body={"api_key": account.api_key, "api_secret": account.api_secret},
    )


def login(api_url: str, token: str, account_id: str) -> Answer:
    """The daily login as a browser walks it; the callback's answer (its page)."""
    start = fetch("GET", f"{api_url}/accounts/{account_id}/kite/login", token=token)
    if start.status != 302 or not start.location:
        raise LoginFlowError(f"login for {account_id}: HTTP {start.status} {start.body[:200]!r}")
    kite = fetch("GET", start.location)
    if kite.status not in REDIRECTS or not kite.location:
        raise LoginFlowError(f"Kite's login for {account_id}: HTTP {kite.status}")
    return fetch("GET", kite.location)


def register_and_login(api_url: str, admin_token: str, accounts: Sequence[SimAccount]) -> list[str]:
    """Register and log in each account through the API; their ids."""
    ids = []
    for account in accounts:
        registered = register(api_url, admin_token, account)
        if registered.status != 200:
            raise LoginFlowError(
                f"registering {account.user_id}: HTTP {registered.status} {registered.body[:200]!r}"
            )
        done = login(api_url, admin_token, account.user_id)
        if done.status != 200:
            raise LoginFlowError(
                f"logging in {account.user_id}: HTTP {done.status} {done.body[:300]!r}"
            )
        ids.append(account.user_id)
    return ids
