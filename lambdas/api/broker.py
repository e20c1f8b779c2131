"""Kite for the API function: the one module here that talks to Kite.

:data:`KiteApi` is the project's one Kite REST client
(``ticker_adapters.kite_rest``), whose methods are named and parameterised
exactly as the official ``kiteconnect.KiteConnect``'s and return the
envelope's ``data``. :class:`KiteBroker` finds the account's session in the
credential vault, hands the call to a client for that session and turns
every way it can fail into a :class:`~lambdas.api.errors.KiteCallError`
whose ``kind`` says what happened at Kite: nothing (``not_sent``,
``refused``, ``rate_limited``, ``login_required``), or perhaps something
(``outcome_unknown``) - the distinction at-most-once placement rests on.
Failures are classified by the client's error *types*, never by text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from lambdas.api.errors import KiteCallError, KiteFailureKind
from ticker_adapters.credentials import CredentialError, CredentialNotFoundError, KiteSession
from ticker_adapters.kite_rest import KiteRestClient

T = TypeVar("T")


KiteApi = KiteRestClient
"""What an operation is given: the project's one Kite REST client (``kiteconnect``'s method
names and parameters, each returning the envelope's ``data``). Tests pass a fake with the
same methods."""


class SessionSource(Protocol):
    """The credential vault, as far as sessions go."""

    def session(self, account_id: str, *, force_refresh: bool = False) -> KiteSession:
        """The account's current session (possibly expired)."""
        ...


ClientFactory = Callable[[KiteSession], KiteApi]
"""Builds a Kite client bound to one session (API key and access token)."""
Classifier = Callable[[Exception], KiteCallError | None]
"""Turns a client exception into a :class:`KiteCallError` (None: not a Kite failure)."""


class KiteBroker:
    """Runs Kite calls for an account with its current session; failures come out typed.

    Clients are cached per (account, access token): a rotated token (the
    morning login) gets a fresh client on the next call, and a refused
    token makes the next call re-read the vault. Thread-safe.
    """

    def __init__(
        self,
        sessions: SessionSource,
        client_for: ClientFactory,
        classify: Classifier,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._client_for = client_for
        self._classify = classify
        self._clock = clock
        self._clients: dict[str, tuple[str, KiteApi]] = {}
        self._stale: set[str] = set()
        self._lock = threading.Lock()

    def _client(self, account_id: str) -> KiteApi:
        with self._lock:
            refresh = account_id in self._stale
            self._stale.discard(account_id)
        try:
            session = self._sessions.session(account_id, force_refresh=refresh)
        except CredentialNotFoundError as exc:
            raise KiteCallError(KiteFailureKind.LOGIN_REQUIRED, "no Kite session stored") from exc
        except (CredentialError, ValueError) as exc:
            # A vault that cannot be read (or a malformed id): Kite was not called.
            raise KiteCallError(KiteFailureKind.NOT_SENT, "session unavailable") from exc
        if session.is_expired(self._clock()):
            raise KiteCallError(KiteFailureKind.LOGIN_REQUIRED, "the Kite session has expired")
        with self._lock:
            cached = self._clients.get(account_id)
            if cached is not None and cached[0] == session.access_token:
                return cached[1]
            client = self._client_for(session)
            self._clients[account_id] = (session.access_token, client)
            return client

    def call(self, account_id: str, operation: Callable[[KiteApi], T]) -> T:
        """Run ``operation`` with the account's client; :class:`KiteCallError` on any failure."""
        client = self._client(account_id)
        try:
            return operation(client)
        except KiteCallError:
            raise
        except Exception as exc:
            failure = self._classify(exc)
            if failure is None:
                raise
            if failure.kind is KiteFailureKind.LOGIN_REQUIRED:
                with self._lock:
                    self._stale.add(account_id)
                    self._clients.pop(account_id, None)
            raise failure from exc
