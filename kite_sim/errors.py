"""Kite's error types, as the simulator raises and serialises them.

Kite answers every failed call with ``{"status": "error", "error_type": ...,
"message": ..., "data": null}`` and an HTTP status that goes with the type.
The pure modules raise these; the HTTP layer turns them into envelopes by
type (never by message text).
"""

from __future__ import annotations

from typing import Any


class KiteError(Exception):
    """A failure that Kite reports to the client as an error envelope."""

    error_type = "GeneralException"
    http_status = 500

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status

    def envelope(self) -> dict[str, Any]:
        """The JSON body Kite sends for this error."""
        return {
            "status": "error",
            "message": self.message,
            "data": None,
            "error_type": self.error_type,
        }


class TokenError(KiteError):
    """Invalid, expired or missing session (403, ``TokenException``)."""

    error_type = "TokenException"
    http_status = 403


class PermissionDeniedError(KiteError):
    """Not allowed for this user or from this address (403, ``PermissionException``)."""

    error_type = "PermissionException"
    http_status = 403


class InputError(KiteError):
    """Missing or bad parameters (400, ``InputException``)."""

    error_type = "InputException"
    http_status = 400


class OrderError(KiteError):
    """An order cannot be placed, modified or cancelled (400, ``OrderException``)."""

    error_type = "OrderException"
    http_status = 400


class NetworkError(KiteError):
    """Kite could not reach its OMS, or the caller is throttled (``NetworkException``)."""

    error_type = "NetworkException"
    http_status = 503


class DataError(KiteError):
    """Kite could not understand its OMS's answer (502, ``DataException``)."""

    error_type = "DataException"
    http_status = 502


class GeneralError(KiteError):
    """An unclassified failure (``GeneralException``)."""

    error_type = "GeneralException"
    http_status = 500


class NotFoundError(GeneralError):
    """A resource (order, trigger, route) that does not exist (404)."""

    http_status = 404


def too_many_requests() -> NetworkError:
    """The error Kite returns when a rate limit is exceeded (HTTP 429)."""
    return NetworkError("Too many requests", http_status=429)


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
