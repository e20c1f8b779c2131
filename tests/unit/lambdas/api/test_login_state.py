"""The Kite login state: signed, expiring, bound; every refusal has its reason (pure)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from lambdas.api.login_state import LoginStateError, StateProblem, issue, verify

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
KEY = secrets.token_bytes(32)
API_KEY = secrets.token_hex(8)


def _state(**overrides: object) -> str:
    args = {
        "account_id": "AB1234",
        "api_key": API_KEY,
        "user_id": "sub-admin",
        "now": NOW,
        "ttl": timedelta(minutes=10),
    }
    args.update(overrides)
    token, _ = issue(KEY, **args)  # type: ignore[arg-type]
    return token


def _problem(token: str | None, *, key: bytes = KEY, now: datetime = NOW) -> StateProblem:
    with pytest.raises(LoginStateError) as caught:
        verify(key, token, now)
    return caught.value.problem


def test_a_state_verifies_to_what_it_was_issued_for() -> None:
    # Given a state issued for an account, its app and a user
    token, issued = issue(
        KEY, account_id="AB1234", api_key=API_KEY, user_id="sub-admin",
        now=NOW, ttl=timedelta(minutes=10),
    )  # fmt: skip
    # When it is verified before it expires
    state = verify(KEY, token, NOW + timedelta(minutes=9))
    # Then it says exactly that, with a fresh nonce
    assert state == issued
    assert (state.account_id, state.api_key, state.user_id) == ("AB1234", API_KEY, "sub-admin")
    assert state.expires_at == NOW + timedelta(minutes=10)
    assert len(state.nonce) >= 20


def test_two_states_never_share_a_nonce() -> None:
    assert len({verify(KEY, _state(), NOW).nonce for _ in range(50)}) == 50


def test_an_altered_payload_is_tampered() -> None:
    # Given a genuine state whose payload is rewritten to name another account
    payload, signature = _state().split(".")
    raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw["a"] = "ZZ9999"
    forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()
    # Then it is refused as tampered (the signature no longer matches)
    assert _problem(f"{forged}.{signature}") is StateProblem.TAMPERED


def test_an_altered_signature_or_another_key_is_tampered() -> None:
    payload, signature = _state().split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert _problem(f"{payload}.{flipped}") is StateProblem.TAMPERED
    assert _problem(_state(), key=secrets.token_bytes(32)) is StateProblem.TAMPERED


def test_an_expired_state_is_expired() -> None:
    assert _problem(_state(), now=NOW + timedelta(minutes=10)) is StateProblem.EXPIRED


@pytest.mark.parametrize("token", [None, "", "no-dot", "a.b.c", "!!!.???", "x" * 2000, "e30.e30"])
def test_anything_else_is_malformed_or_tampered(token: str | None) -> None:
    assert _problem(token) in (StateProblem.MALFORMED, StateProblem.TAMPERED)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        issue(b"short", account_id="A", api_key="k", user_id="u", now=NOW, ttl=timedelta(1))
