"""Cognito user pool ID tokens, verified as API Gateway's Cognito authorizer verifies them.

The one place tokens are checked in runtime code: the WebSocket API's Lambda
REQUEST authorizer uses it (WebSocket APIs take no Cognito authorizer), and
so does the sandbox's local REST API Gateway, standing in for the Cognito
authorizer the REST API has in AWS. A token passes when it is a JWS signed
RS256 by a key of the pool's JWKS, its ``iss`` is the pool's issuer in AWS's
form (``https://cognito-idp.<region>.amazonaws.com/<pool id>``, configured
apart from where the JWKS is fetched, so a local stand-in can serve it),
``token_use`` is ``id``, ``aud`` is one of the pool's app clients and it has
not expired. Anything else raises :class:`TokenRejectedError` with a stable
``reason`` (a metric name, never the token).

The JWKS is fetched once and kept; a token naming a key id the cached set
lacks (Cognito rotated its keys) fetches it again, at most once per
``refetch_seconds``, so a stream of forged key ids cannot turn into a stream
of requests to Cognito.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from lambdas.common.settings import CognitoSettings

ALGORITHMS = ("RS256",)
JWKS_TIMEOUT_S = 5.0
MAX_TOKEN_CHARS = 8192
"""Longer than any Cognito ID token: refused before it is parsed."""


class TokenRejectedError(Exception):
    """The token is missing, malformed, forged, expired or not for this pool."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token rejected: {reason}")
        self.reason = reason


def fetch_jwks(url: str) -> Callable[[], Mapping[str, Any]]:
    """A fetcher of the JWKS document at ``url`` (HTTPS in AWS; moto on loopback locally)."""
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError("the JWKS URL must be https (or loopback for local runs)")

    def fetch() -> Mapping[str, Any]:
        with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT_S) as response:  # noqa: S310 # nosec B310 # scheme checked above
            document = json.loads(response.read())
        if not isinstance(document, dict):
            raise ValueError("the JWKS document is not a JSON object")
        return document

    return fetch


class CognitoTokenVerifier:
    """Verifies ID tokens of one user pool (thread-safe; keys cached, see the module)."""

    def __init__(
        self,
        *,
        issuer: str,
        audiences: frozenset[str],
        fetch_keys: Callable[[], Mapping[str, Any]],
        refetch_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._audiences = audiences
        self._fetch = fetch_keys
        self._refetch_seconds = refetch_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()
        self.key_fetches = 0
        """How many times the JWKS was fetched (for metrics and tests)."""

    @classmethod
    def from_settings(cls, settings: CognitoSettings) -> CognitoTokenVerifier:
        """The verifier ``settings`` describe, fetching keys over HTTP."""
        return cls(
            issuer=settings.issuer,
            audiences=settings.audiences(),
            fetch_keys=fetch_jwks(settings.keys_url()),
            refetch_seconds=settings.refetch_seconds,
        )

    def _key_set(self, *, stale: KeySet | None = None) -> KeySet:
        """The cached keys: fetched when there are none, or again when ``stale`` is still cached."""
        with self._lock:
            current = self._keys
            if current is not None and (stale is None or current is not stale):
                return current
            now = self._monotonic()
            wait = self._refetch_seconds if current is not None else min(self._refetch_seconds, 1.0)
            if now - self._fetched_at < wait:  # fetched (or failed) too recently: no request
                if current is None:
                    raise TokenRejectedError("keys_unavailable")
                return current
            self._fetched_at = now
            try:
                keys = KeySet.import_key_set(self._fetch())  # type: ignore[arg-type]
            except (OSError, ValueError, JoseError) as exc:
                if current is None:
                    raise TokenRejectedError("keys_unavailable") from exc
                return current  # keep verifying with the keys we have
            self._keys = keys
            self.key_fetches += 1
            return keys

    def claims(self, token: str | None) -> dict[str, Any]:
        """The verified token's claims; :class:`TokenRejectedError` otherwise."""
        if not token:
            raise TokenRejectedError("missing")
        token = token.strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenRejectedError("malformed")
        keys = self._key_set()
        try:
            try:
                decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            except InvalidKeyIdError:
                decoded = jwt.decode(token, self._key_set(stale=keys), algorithms=list(ALGORITHMS))
        except InvalidKeyIdError as exc:
            raise TokenRejectedError("unknown_key") from exc
        except (JoseError, ValueError) as exc:
            raise TokenRejectedError("bad_signature_or_format") from exc
        claims = dict(decoded.claims)
        if claims.get("iss") != self._issuer:
            raise TokenRejectedError("issuer")
        if claims.get("token_use") != "id":
            raise TokenRejectedError("token_use")
        if claims.get("aud") not in self._audiences:
            raise TokenRejectedError("audience")
        expires = claims.get("exp")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise TokenRejectedError("expiry_missing")
        if expires <= self._clock():
            raise TokenRejectedError("expired")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenRejectedError("subject_missing")
        return claims


def claim_text(value: Any) -> str:
    """A claim as API Gateway passes it on: a string (a list joined with commas)."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
