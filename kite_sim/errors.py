"""Kite's error types, as the simulator raises and serialises them.

The classes, their ``error_type`` strings, usual HTTP statuses and envelope
are :mod:`ticker_core.kite_errors` (the one definition every client also
parses with); the simulator knows them by the short names below. The pure
modules raise these; the HTTP layer turns them into envelopes by type
(never by message text).
"""

from __future__ import annotations

from ticker_core.kite_errors import KiteDataError as DataError
from ticker_core.kite_errors import KiteError, KiteTooManyRequestsError
from ticker_core.kite_errors import KiteGeneralError as GeneralError
from ticker_core.kite_errors import KiteInputError as InputError
from ticker_core.kite_errors import KiteNetworkError as NetworkError
from ticker_core.kite_errors import KiteOrderError as OrderError
from ticker_core.kite_errors import KitePermissionError as PermissionDeniedError
from ticker_core.kite_errors import KiteTokenError as TokenError

__all__ = [
    "DataError",
    "GeneralError",
    "InputError",
    "KiteError",
    "NetworkError",
    "NotFoundError",
    "OrderError",
    "PermissionDeniedError",
    "TokenError",
    "error_for_status",
    "too_many_requests",
]


class NotFoundError(GeneralError):
    """A resource (order, trigger, route) that does not exist (404)."""

    default_http_status = 404


def too_many_requests() -> KiteTooManyRequestsError:
    """The error Kite returns when a rate limit is exceeded (HTTP 429)."""
    return KiteTooManyRequestsError("Too many requests")


def error_for_status(status: int, message: str | None = None) -> KiteError:
    """The error Kite sends with an injected HTTP ``status`` (fault injection)."""
    if status == 429:
        return too_many_requests()
    if status == 403:
        return TokenError(message or "Incorrect `api_key` or `access_token`.")
    if status == 400:
        return InputError(message or "Bad request")
    if status == 502:
        return DataError(message or "Couldn't parse the response from the OMS.")
    if status in (503, 504):
        return NetworkError(message or "Gateway timed out.", http_status=status)
    return GeneralError(message or "Something unexpected went wrong.", http_status=status)
