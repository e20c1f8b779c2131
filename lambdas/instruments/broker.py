"""Kite Connect REST for the instruments function: the one module here that speaks HTTP.

``GET /instruments`` answers the CSV dump on success and Kite's JSON error
envelope otherwise (``{"status": "error", "error_type": ..., "message": ...}``).
Errors are raised as types named after Kite's ``error_type`` so callers route
on the type, never on message text. Transient failures (HTTP 429 and 5xx,
``NetworkException``, a dropped connection or a body cut short) are retried
with delays from an injectable generator; the rest are raised at once.

Requests carry ``X-Kite-Version: 3`` and ``Authorization: token
api_key:access_token``. The access token only travels over HTTPS, or over
plain HTTP to a loopback simulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlsplit

import urllib3

from ticker_adapters.retry import Delays, full_jitter

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
KITE_VERSION = "3"
USER_AGENT = "ticker-service/0.1"


class KiteError(Exception):
    """Kite refused a request or could not be reached; ``status`` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class KiteTokenError(KiteError):
    """``TokenException``: the access token expired or was revoked; log in again."""


class KiteInputError(KiteError):
    """``InputException``: a parameter was missing or wrong."""


class KitePermissionError(KiteError):
    """``PermissionException``: the app or user may not do this."""


class KiteDataError(KiteError):
    """``DataException`` or an answer that is not what the endpoint promises."""


class KiteNetworkError(KiteError):
    """``NetworkException``, HTTP 429/5xx, or a transport failure: worth retrying."""


class KiteGeneralError(KiteError):
    """``GeneralException`` or an error type this client does not know."""


ERROR_TYPES: dict[str, type[KiteError]] = {
    "TokenException": KiteTokenError,
    "InputException": KiteInputError,
    "PermissionException": KitePermissionError,
    "DataException": KiteDataError,
    "NetworkException": KiteNetworkError,
    "GeneralException": KiteGeneralError,
}
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def _default_delays() -> Iterator[float]:
    return full_jitter(1.0, 8.0)


def check_root(root: str) -> str:
    """``root`` without a trailing slash; refuses plain HTTP except to loopback."""
    parts = urlsplit(root)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return root.rstrip("/")
    raise ValueError(f"Kite root must be https:// (or http:// to loopback), got {root!r}")


class KiteRestClient:
    """Kite REST calls the instruments function needs (thread-safe, pooled connections)."""

    def __init__(
        self,
        root: str = "https://api.kite.trade",
        *,
        timeout_s: float = 30.0,
        attempts: int = 3,
        delays: Delays = _default_delays,
        sleep: Callable[[float], None] = time.sleep,
        http: urllib3.PoolManager | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.root = check_root(root)
        self._timeout = urllib3.Timeout(connect=min(timeout_s, 10.0), read=timeout_s)
        self._attempts = attempts
        self._delays = delays
        self._sleep = sleep
        self._http = http or urllib3.PoolManager(num_pools=2, maxsize=2)

    def instruments_csv(
        self, api_key: str, access_token: str, *, exchange: str | None = None
    ) -> bytes:
        """The instruments dump (all exchanges, or one) as the CSV bytes Kite served."""
        path = "/instruments" if exchange is None else f"/instruments/{quote(exchange, safe='')}"
        headers = {
            "X-Kite-Version": KITE_VERSION,
            "Authorization": f"token {api_key}:{access_token}",
            "Accept-Encoding": "gzip",
            "User-Agent": USER_AGENT,
        }
        delays = self._delays()
        for attempt in range(1, self._attempts + 1):
            try:
                return self._get_csv(path, headers)
            except KiteNetworkError:
                if attempt == self._attempts:
                    raise
                self._sleep(next(delays))
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_csv(self, path: str, headers: dict[str, str]) -> bytes:
        try:
            response = self._http.request(
                "GET",
                self.root + path,
                headers=headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out, cut short
            raise KiteNetworkError(f"GET {path} failed: {type(exc).__name__}") from exc
        body = response.data
        content_type = response.headers.get("Content-Type", "")
        if response.status == 200 and "json" not in content_type:
            return body
        raise _error_from(path, response.status, content_type, body)


def _error_from(path: str, status: int, content_type: str, body: bytes) -> KiteError:
    """The typed error for a non-CSV answer (Kite's envelope where there is one)."""
    envelope: object = None
    if "json" in content_type:
        try:
            envelope = json.loads(body)
        except ValueError:
            envelope = None
    if isinstance(envelope, dict) and envelope.get("status") == "error":
        error_type = str(envelope.get("error_type") or "")
        message = str(envelope.get("message") or "")[:300]
        kind = ERROR_TYPES.get(error_type, KiteGeneralError)
        if status in RETRYABLE_STATUSES:
            kind = KiteNetworkError
        return kind(f"GET {path}: {error_type}: {message}", status=status, error_type=error_type)
    if status in RETRYABLE_STATUSES:
        return KiteNetworkError(f"GET {path}: HTTP {status}", status=status)
    if status == 200:
        return KiteDataError(f"GET {path}: a JSON answer where CSV was expected", status=status)
    return KiteGeneralError(
        f"GET {path}: HTTP {status} ({content_type or 'no type'})", status=status
    )
