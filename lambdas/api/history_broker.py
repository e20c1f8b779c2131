"""Kite's historical candles for the market routes: the one module of them that calls Kite.

Any active account with a live session will do (history is not per
account): the registry's session mirror names the candidates, the vault
gives the session, and the project's one Kite REST client asks
``GET /instruments/historical/:token/:interval`` (a read: retried by the
client's policy on transient failures). Failures come out as
:class:`~lambdas.api.errors.KiteCallError`, classified by type.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from lambdas.api.accounts import Registry, Vault, utc_now
from lambdas.api.broker import Classifier
from lambdas.api.errors import KiteCallError, KiteFailureKind
from ticker_adapters.credentials import CredentialError
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport


class KiteHistory:
    """Historical candles through whichever active account is logged in."""

    def __init__(
        self,
        registry: Registry,
        vault: Vault,
        transport: KiteTransport,
        classify: Classifier,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._registry = registry
        self._vault = vault
        self._transport = transport
        self._classify = classify
        self._clock = clock

    def _client(self) -> KiteRestClient:
        now = self._clock()
        live = [
            r
            for r in self._registry.all()
            if r.active and r.session_expires_at is not None and r.session_expires_at > now
        ]
        for record in sorted(live, key=lambda r: r.account_id):
            try:
                session = self._vault.session(record.account_id)
            except (CredentialError, ValueError):
                continue
            if not session.is_expired(now):
                return KiteRestClient.from_session(session, self._transport)
        raise KiteCallError(KiteFailureKind.LOGIN_REQUIRED, "no account is logged in to Kite")

    def candles(
        self, instrument_token: int, start: datetime, end: datetime, interval: str
    ) -> list[dict[str, Any]]:
        """Kite's candles (``date`` as Kite writes it, open..volume, oi) for ``[start, end]``."""
        client = self._client()
        try:
            return client.historical_data(instrument_token, start, end, interval, oi=True)
        except Exception as exc:
            failure = self._classify(exc)
            if failure is None:
                raise
            raise failure from exc
