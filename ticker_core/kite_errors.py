"""Kite Connect's error vocabulary and its JSON envelope, defined once.

Kite answers every REST call (but the CSV dumps) with an envelope::

    {"status": "success", "data": ...}
    {"status": "error", "error_type": "TokenException", "message": "...", "data": null}

and, on error, an HTTP status that goes with the type. This module holds the
one mapping from ``error_type`` to an exception class (:data:`ERROR_TYPES`),
the decoder that turns an answer into its data or a typed error
(:func:`data_from_response`), and the envelope builders the simulator answers
with (:func:`success_envelope`, :meth:`KiteError.envelope`). Callers route on
the class, never on the message text.

Families
--------
The official client (``kiteconnect``) raises one of seven classes and falls
back to its ``GeneralException`` for a type it has no class for
(``UserException``, ``MarginException``, ``HoldingException``, anything
new). Here every documented type has a class, and each derives from the
class the official client would raise for it, so code written against the
official families keeps working: ``except KiteGeneralError`` still sees a
margin shortfall. An unknown type is a :class:`KiteGeneralError` that keeps
the ``error_type`` Kite sent.

Transport failures
------------------
A request that got no answer is a :class:`KiteTransportError`, in the
:class:`KiteNetworkError` family, in one of two kinds a caller must tell
apart before it repeats a write:

* :class:`KiteNotSentError`: the connection was never made (refused, DNS,
  connect timeout, TLS verification): Kite saw nothing; repeating is safe.
* :class:`KiteOutcomeUnknownError`: the request may have reached Kite (read
  timeout, reset, a body cut short). An order may exist: look it up (by its
  ``tag``) before placing it again. Kite's own advice for a
  ``NetworkException`` on a write is the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

SUCCESS = "success"
ERROR = "error"
GENERAL_EXCEPTION = "GeneralException"


class KiteError(Exception):
    """A failure Kite reported (or that stands in for one): type, HTTP status, message.

    ``http_status`` is the status Kite answered with (the type's usual one when
    raised locally, ``None`` when no answer came); ``error_type`` is Kite's
    name for the failure, kept as sent even when this client has no class for it.
    """

    error_type: str = GENERAL_EXCEPTION
    default_http_status: ClassVar[int | None] = 500

    def __init__(
        self, message: str, *, http_status: int | None = None, error_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = self.default_http_status if http_status is None else http_status
        if error_type is not None:
            self.error_type = error_type

    def envelope(self) -> dict[str, Any]:
        """The JSON body Kite sends for this error."""
        return {
            "status": ERROR,
            "message": self.message,
            "data": None,
            "error_type": self.error_type,
        }


class KiteGeneralError(KiteError):
    """``GeneralException``: an unclassified failure (also any type without a class)."""


class KiteUserError(KiteGeneralError):
    """``UserException``: something about the user's account."""

    error_type = "UserException"
    default_http_status = 400


class KiteMarginError(KiteGeneralError):
    """``MarginException``: not enough funds for the order."""

    error_type = "MarginException"
    default_http_status = 400


class KiteHoldingError(KiteGeneralError):
    """``HoldingException``: not enough holdings to sell."""

    error_type = "HoldingException"
    default_http_status = 400


class KiteTokenError(KiteError):
    """``TokenException``: the session expired or was invalidated; log in again."""

    error_type = "TokenException"
    default_http_status = 403


class KitePermissionError(KiteError):
    """``PermissionException``: this app or user may not do this (or not from here)."""

    error_type = "PermissionException"
    default_http_status = 403


class KiteInputError(KiteError):
    """``InputException``: a parameter is missing or wrong."""

    error_type = "InputException"
    default_http_status = 400


class KiteOrderError(KiteError):
    """``OrderException``: an order cannot be placed, modified or cancelled."""

    error_type = "OrderException"
    default_http_status = 400


class KiteDataError(KiteError):
    """``DataException``, or an answer that is not what the endpoint promises."""

    error_type = "DataException"
    default_http_status = 502


class KiteNetworkError(KiteError):
    """``NetworkException``: Kite could not reach its OMS, or the caller is throttled."""

    error_type = "NetworkException"
    default_http_status: ClassVar[int | None] = 503  # None for the transport errors below


class KiteTooManyRequestsError(KiteNetworkError):
    """HTTP 429: a rate limit was exceeded (Kite types it ``NetworkException``)."""

    default_http_status = 429


class KiteTransportError(KiteNetworkError):
    """No answer from Kite; see :class:`KiteNotSentError` and :class:`KiteOutcomeUnknownError`."""

    default_http_status = None


class KiteNotSentError(KiteTransportError):
    """The request never left: connection refused, unresolvable, timed out or untrusted."""


class KiteOutcomeUnknownError(KiteTransportError):
    """The request may have reached Kite but no complete answer came back."""


ERROR_TYPES: Mapping[str, type[KiteError]] = {
    "GeneralException": KiteGeneralError,
    "UserException": KiteUserError,
    "MarginException": KiteMarginError,
    "HoldingException": KiteHoldingError,
    "TokenException": KiteTokenError,
    "PermissionException": KitePermissionError,
    "InputException": KiteInputError,
    "OrderException": KiteOrderError,
    "DataException": KiteDataError,
    "NetworkException": KiteNetworkError,
}
"""Kite's ``error_type`` -> the class raised for it (anything else: KiteGeneralError)."""

TOO_MANY_REQUESTS = 429
TRANSIENT_HTTP_STATUSES = frozenset({502, 503, 504})


def success_envelope(data: Any) -> dict[str, Any]:
    """The JSON body Kite sends with a successful answer."""
    return {"status": SUCCESS, "data": data}


def error_class(error_type: str) -> type[KiteError]:
    """The class for Kite's ``error_type`` (KiteGeneralError when there is none)."""
    return ERROR_TYPES.get(error_type, KiteGeneralError)


def error_from_envelope(envelope: Mapping[str, Any], http_status: int | None = None) -> KiteError:
    """The typed error an error envelope stands for (HTTP 429 is KiteTooManyRequestsError)."""
    error_type = envelope.get("error_type")
    if not isinstance(error_type, str) or not error_type:
        error_type = GENERAL_EXCEPTION
    message = envelope.get("message")
    kind = error_class(error_type)
    if http_status == TOO_MANY_REQUESTS and issubclass(kind, KiteNetworkError):
        kind = KiteTooManyRequestsError
    return kind(
        message if isinstance(message, str) else "", http_status=http_status, error_type=error_type
    )


def data_from_response(http_status: int, content_type: str, body: bytes) -> Any:
    """What a Kite answer carries: the envelope's ``data``, or the CSV bytes; else a typed error.

    * a JSON error envelope (``status: error`` or an ``error_type``): its typed
      error, whatever the HTTP status;
    * a 2xx JSON success envelope: its ``data`` (parsed JSON);
    * a 2xx CSV answer: the bytes;
    * anything else, e.g. a proxy's HTML page: :class:`KiteTooManyRequestsError`
      for 429, :class:`KiteNetworkError` for a 5xx (worth trying again later),
      :class:`KiteDataError` otherwise. The body is not quoted: it is not Kite's.
    """
    media = content_type.lower()
    success = 200 <= http_status < 300
    if "json" in media:
        try:
            envelope = json.loads(body)
        except ValueError:
            envelope = None
        if isinstance(envelope, dict):
            if envelope.get("status") == ERROR or envelope.get("error_type"):
                raise error_from_envelope(envelope, http_status)
            if success and envelope.get("status") == SUCCESS and "data" in envelope:
                return envelope["data"]
    elif "csv" in media and success:
        return body
    what = f"HTTP {http_status} with {content_type or 'no content type'}, not Kite's answer"
    if http_status == TOO_MANY_REQUESTS:
        raise KiteTooManyRequestsError(what, http_status=http_status)
    if http_status >= 500:
        raise KiteNetworkError(what, http_status=http_status)
    raise KiteDataError(what, http_status=http_status)


def is_transient(error: KiteError) -> bool:
    """Whether the same idempotent read may succeed later (network family, 502/503/504)."""
    return isinstance(error, KiteNetworkError) or error.http_status in TRANSIENT_HTTP_STATUSES
