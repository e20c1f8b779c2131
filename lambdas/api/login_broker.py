"""Kite's request-token exchange for the login callback: the one module of it that calls Kite.

The exchange is ``POST /session/token`` through the project's one Kite REST
client (``ticker_adapters.kite_rest``), which signs it with
``sha256(api_key + request_token + api_secret)``. It is a write: sent once,
never repeated (a request token is single-use). Failures come out as
:class:`~lambdas.api.errors.KiteCallError`, classified by the client's error
types (:func:`lambdas.api.kite.classify`), never by message.
"""

from __future__ import annotations

from lambdas.api.accounts import ExchangedSession
from lambdas.api.broker import Classifier
from lambdas.api.errors import KiteCallError, KiteFailureKind
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport


class KiteSessionExchange:
    """Exchanges request tokens on one transport (its pool and timeouts)."""

    def __init__(self, transport: KiteTransport, classify: Classifier) -> None:
        self._transport = transport
        self._classify = classify

    def exchange(self, api_key: str, api_secret: str, request_token: str) -> ExchangedSession:
        """The day's session for the app's user; :class:`KiteCallError` when Kite refuses."""
        client = KiteRestClient(api_key, transport=self._transport)
        try:
            data = client.generate_session(request_token, api_secret)
        except Exception as exc:
            failure = self._classify(exc)
            if failure is None:
                raise
            raise failure from exc
        access_token, user_id = data.get("access_token"), data.get("user_id")
        if not isinstance(access_token, str) or not access_token or not isinstance(user_id, str):
            raise KiteCallError(KiteFailureKind.BAD_RESPONSE, "no session in Kite's answer")
        return ExchangedSession(access_token=access_token, user_id=user_id)
