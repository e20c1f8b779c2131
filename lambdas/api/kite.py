"""The production Kite wiring: the project's one REST client, and its errors classified.

:func:`client_factory` makes a :class:`ticker_adapters.kite_rest.KiteRestClient`
per session on one shared transport (pooled connections, the function's
timeouts). :func:`classify` turns the client's typed errors
(:mod:`ticker_core.kite_errors`) into the broker's
:class:`~lambdas.api.errors.KiteCallError` kinds, by type and HTTP status,
never by message:

=============================================  ===================
client error                                   kind
=============================================  ===================
``KiteNotSentError``                           ``not_sent``
``KiteOutcomeUnknownError``                    ``outcome_unknown``
``KiteTooManyRequestsError`` (429)             ``rate_limited``
``KiteTokenError``                             ``login_required``
``KiteDataError`` (an answer not Kite's)       ``bad_response``
``KiteNetworkError`` (Kite's OMS unreachable)  ``outcome_unknown``
any other with HTTP 404                        ``not_found``
any other with HTTP >= 500                     ``outcome_unknown``
any other (input, order, margin, ...)          ``refused``
=============================================  ===================

For a read, ``outcome_unknown`` is answered as Kite unavailable; for a write
it sends the API looking for the order before answering (see ``logic``).
"""

from __future__ import annotations

from lambdas.api.broker import ClientFactory, KiteApi
from lambdas.api.errors import KiteCallError, KiteFailureKind
from ticker_adapters.credentials import KiteSession
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport
from ticker_core.kite_errors import (
    KiteDataError,
    KiteError,
    KiteNetworkError,
    KiteNotSentError,
    KiteOutcomeUnknownError,
    KiteTokenError,
    KiteTooManyRequestsError,
)

NOT_FOUND = 404
SERVER_ERROR = 500


def client_factory(transport: KiteTransport) -> ClientFactory:
    """Clients for sessions, sharing ``transport`` (its pool and timeouts) for the environment."""

    def client_for(session: KiteSession) -> KiteApi:
        return KiteRestClient.from_session(session, transport)

    return client_for


def kind_of(error: KiteError) -> KiteFailureKind:
    """The broker's kind for one of the client's errors (the table above)."""
    ordered: tuple[tuple[type[KiteError], KiteFailureKind], ...] = (
        (KiteNotSentError, KiteFailureKind.NOT_SENT),
        (KiteOutcomeUnknownError, KiteFailureKind.OUTCOME_UNKNOWN),
        (KiteTooManyRequestsError, KiteFailureKind.RATE_LIMITED),
        (KiteTokenError, KiteFailureKind.LOGIN_REQUIRED),
        (KiteDataError, KiteFailureKind.BAD_RESPONSE),
        (KiteNetworkError, KiteFailureKind.OUTCOME_UNKNOWN),
    )
    for error_class, kind in ordered:
        if isinstance(error, error_class):
            return kind
    if error.http_status == NOT_FOUND:
        return KiteFailureKind.NOT_FOUND
    if error.http_status is not None and error.http_status >= SERVER_ERROR:
        return KiteFailureKind.OUTCOME_UNKNOWN
    return KiteFailureKind.REFUSED


def classify(exc: Exception) -> KiteCallError | None:
    """The broker's error for a client exception (None: not a Kite failure; re-raised)."""
    if not isinstance(exc, KiteError):
        return None
    return KiteCallError(
        kind_of(exc), exc.message, error_type=exc.error_type, http_status=exc.http_status
    )
