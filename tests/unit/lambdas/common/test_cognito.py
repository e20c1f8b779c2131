"""Cognito ID token verification: what passes, what is refused and why, and key fetching."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from lambdas.common.cognito import CognitoTokenVerifier, TokenRejectedError
from lambdas.common.settings import CognitoSettings

ISSUER = "https://cognito-idp.ap-south-1.amazonaws.com/ap-south-1_Test"
CLIENT = "client-1"


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "sub-1",
        "iss": ISSUER,
        "aud": CLIENT,
        "token_use": "id",
        "cognito:username": "alice",
        "cognito:groups": ["admin"],
        "iat": now,
        "exp": now + 600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: RSAKey, payload: dict[str, Any], kid: str = "k1") -> str:
    return jwt.encode({"alg": "RS256", "kid": kid}, payload, key)


class Keys:
    """A JWKS endpoint stand-in that counts fetches."""

    def __init__(self, *keys: RSAKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.fail = False

    def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        if self.fail:
            raise OSError("unreachable")
        return KeySet(self.keys).as_dict(private=False)


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def verifier(keys: Keys, monotonic: Monotonic | None = None) -> CognitoTokenVerifier:
    return CognitoTokenVerifier(
        issuer=ISSUER,
        audiences=frozenset({CLIENT}),
        fetch_keys=keys,
        refetch_seconds=60,
        monotonic=monotonic or Monotonic(),
    )


def test_a_current_id_token_of_the_pool_passes(key: RSAKey) -> None:
    checked = verifier(Keys(key)).claims(sign(key, claims()))
    assert (checked["sub"], checked["cognito:username"]) == ("sub-1", "alice")
    # A "Bearer " prefix is accepted, as API Gateway's Cognito authorizer accepts it
    assert verifier(Keys(key)).claims("Bearer " + sign(key, claims()))["sub"] == "sub-1"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 1}, "expired"),
        ({"exp": None}, "expiry_missing"),
        ({"iss": ISSUER + "x"}, "issuer"),
        ({"aud": "another-client"}, "audience"),
        ({"token_use": "access"}, "token_use"),
        ({"sub": None}, "subject_missing"),
    ],
)
def test_claims_are_checked(key: RSAKey, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenRejectedError) as refused:
        verifier(Keys(key)).claims(sign(key, claims(**changes)))
    assert refused.value.reason == reason


def test_a_token_signed_by_another_key_is_refused(key: RSAKey) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    with pytest.raises(TokenRejectedError) as refused:
        verifier(Keys(key)).claims(sign(forger, claims()))
    assert refused.value.reason == "bad_signature_or_format"


@pytest.mark.parametrize("token", [None, "", "abc", "a.b", "a.b.c", "x" * 9000])
def test_missing_and_malformed_tokens_are_refused(key: RSAKey, token: str | None) -> None:
    with pytest.raises(TokenRejectedError) as refused:
        verifier(Keys(key)).claims(token)
    assert refused.value.reason in {"missing", "malformed", "bad_signature_or_format"}


def test_the_token_never_appears_in_the_refusal(key: RSAKey) -> None:
    token = sign(key, claims(exp=int(time.time()) - 5))
    with pytest.raises(TokenRejectedError) as refused:
        verifier(Keys(key)).claims(token)
    assert token not in str(refused.value)
    assert token.split(".")[2] not in repr(refused.value)


def test_keys_are_fetched_once_and_again_when_the_pool_rotates(key: RSAKey) -> None:
    keys, clock = Keys(key), Monotonic()
    check = verifier(keys, clock)
    for _ in range(3):
        check.claims(sign(key, claims()))
    assert keys.fetches == 1
    # When Cognito rotates in a new key
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"}, private=True)
    keys.keys.append(rotated)
    clock.now += 61
    # Then a token signed with it fetches the set once more, and passes
    assert check.claims(sign(rotated, claims(), kid="k2"))["sub"] == "sub-1"
    assert keys.fetches == 2


def test_unknown_key_ids_cannot_make_a_stream_of_fetches(key: RSAKey) -> None:
    keys, clock = Keys(key), Monotonic()
    check = verifier(keys, clock)
    check.claims(sign(key, claims()))
    stranger = RSAKey.generate_key(2048, parameters={"kid": "nope"}, private=True)
    for _ in range(5):
        with pytest.raises(TokenRejectedError) as refused:
            check.claims(sign(stranger, claims(), kid="nope"))
        assert refused.value.reason == "unknown_key"
    assert keys.fetches == 1  # the first fetch was under a minute ago: no more


def test_keys_unavailable_refuses_and_retries_later(key: RSAKey) -> None:
    keys, clock = Keys(key), Monotonic()
    keys.fail = True
    check = verifier(keys, clock)
    with pytest.raises(TokenRejectedError) as refused:
        check.claims(sign(key, claims()))
    assert refused.value.reason == "keys_unavailable"
    # Within a second no request is made; after it, the keys are fetched again
    with pytest.raises(TokenRejectedError):
        check.claims(sign(key, claims()))
    assert keys.fetches == 1
    keys.fail = False
    clock.now += 1.5
    assert check.claims(sign(key, claims()))["sub"] == "sub-1"


def test_settings_derive_the_jwks_url_from_the_issuer() -> None:
    settings = CognitoSettings(issuer=ISSUER, client_ids="a, b")
    assert settings.keys_url() == ISSUER + "/.well-known/jwks.json"
    assert settings.audiences() == frozenset({"a", "b"})
    with pytest.raises(ValueError, match="https"):
        CognitoSettings(issuer="http://example.com/pool", client_ids="a")
