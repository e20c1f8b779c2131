"""Kite login state: signed, expiring, single-use, bound to an account, its app and a user (pure).

``GET /accounts/{account_id}/kite/login`` sends the browser to Kite with a
state in Kite's ``redirect_params``; Kite sends it back, untouched, to the
login callback with the ``request_token``. The state says which account the
login is for, with which app (API key) and on whose request, and until when
it may be used; the HMAC-SHA256 over it, keyed with a secret only the API
holds, makes it impossible to forge or alter. The nonce makes it single-use:
the callback claims it in the account registry before anything else happens.

Wire form: ``base64url(payload JSON) "." base64url(HMAC-SHA256(key, DOMAIN + payload part))``
(no padding), where the payload is ``{"v": 1, "a": account, "k": api key, "u": user,
"n": nonce, "iat": issued, "exp": expires}`` (instants in whole epoch seconds).
Nothing in it is secret; it must only be unforgeable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

VERSION = 1
DOMAIN = b"ticker-service/kite-login-state/1."
"""Mixed into the MAC so a signature made for anything else never verifies here."""
MIN_KEY_BYTES = 32
MAX_STATE_CHARS = 1024
NONCE_BYTES = 18


class StateProblem(StrEnum):
    """Why a state was refused."""

    MALFORMED = "malformed"
    """Not a state at all (missing, cut, not our encoding, another version)."""
    TAMPERED = "tampered"
    """Well-formed, but the signature does not match its contents."""
    EXPIRED = "expired"
    """Genuine, but used after its expiry."""


class LoginStateError(Exception):
    """A state that must be refused; ``problem`` says why (never the state itself)."""

    def __init__(self, problem: StateProblem) -> None:
        super().__init__(f"login state refused: {problem.value}")
        self.problem = problem


@dataclass(frozen=True)
class LoginState:
    """What a verified state says."""

    account_id: str
    api_key: str
    user_id: str
    nonce: str
    issued_at: datetime
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload_part: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the state key must be at least {MIN_KEY_BYTES} bytes")
    return hmac.new(key, DOMAIN + payload_part.encode(), hashlib.sha256).digest()


def issue(
    key: bytes,
    *,
    account_id: str,
    api_key: str,
    user_id: str,
    now: datetime,
    ttl: timedelta,
    nonce: str | None = None,
) -> tuple[str, LoginState]:
    """A new state (wire form) and what it says."""
    issued = now.astimezone(UTC).replace(microsecond=0)
    state = LoginState(
        account_id=account_id,
        api_key=api_key,
        user_id=user_id,
        nonce=nonce or secrets.token_urlsafe(NONCE_BYTES),
        issued_at=issued,
        expires_at=issued + ttl,
    )
    payload = {
        "v": VERSION,
        "a": state.account_id,
        "k": state.api_key,
        "u": state.user_id,
        "n": state.nonce,
        "iat": int(state.issued_at.timestamp()),
        "exp": int(state.expires_at.timestamp()),
    }
    payload_part = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload_part}.{_b64(_mac(key, payload_part))}", state


def verify(key: bytes, token: str | None, now: datetime) -> LoginState:
    """What ``token`` says, if it is genuine and unexpired; :class:`LoginStateError` otherwise.

    The signature is checked (in constant time) before the payload is parsed,
    so nothing an attacker wrote is interpreted unless the API signed it.
    """
    if not token or len(token) > MAX_STATE_CHARS or token.count(".") != 1:
        raise LoginStateError(StateProblem.MALFORMED)
    payload_part, signature_part = token.split(".")
    try:
        signature = _unb64(signature_part)
        payload_bytes = _unb64(payload_part)
    except (binascii.Error, ValueError) as exc:
        raise LoginStateError(StateProblem.MALFORMED) from exc
    if not hmac.compare_digest(signature, _mac(key, payload_part)):
        raise LoginStateError(StateProblem.TAMPERED)
    try:
        payload = json.loads(payload_bytes)
        if payload["v"] != VERSION:
            raise LoginStateError(StateProblem.MALFORMED)
        state = LoginState(
            account_id=str(payload["a"]),
            api_key=str(payload["k"]),
            user_id=str(payload["u"]),
            nonce=str(payload["n"]),
            issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
        )
    except LoginStateError:
        raise
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise LoginStateError(StateProblem.MALFORMED) from exc
    if now >= state.expires_at:
        raise LoginStateError(StateProblem.EXPIRED)
    return state
