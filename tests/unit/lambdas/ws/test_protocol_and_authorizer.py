"""The client protocol's pure parts, and the $connect authorizer's answers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from lambdas.common.cognito import CognitoTokenVerifier
from lambdas.ws.authorizer import authorize
from lambdas.ws.protocol import (
    SUBPROTOCOL,
    Channel,
    data_message_chunks,
    data_messages,
    merge_records,
    offered_protocols,
    parse_data_message,
    token_from_protocols,
)

ISSUER = "https://cognito-idp.ap-south-1.amazonaws.com/ap-south-1_Test"
ARN = "arn:aws:execute-api:ap-south-1:123456789012:api/v1/$connect"


def record(token: int, price: float, pad: int = 0) -> bytes:
    return json.dumps({"instrument_token": token, "last_price": price, "pad": "x" * pad}).encode()


def test_the_token_is_the_one_other_subprotocol() -> None:
    assert offered_protocols(f" {SUBPROTOCOL} , eyJ.a.b ,") == [SUBPROTOCOL, "eyJ.a.b"]
    assert token_from_protocols([SUBPROTOCOL, "eyJ.a.b"]) == "eyJ.a.b"
    assert token_from_protocols(["eyJ.a.b", SUBPROTOCOL]) == "eyJ.a.b"
    assert token_from_protocols(["eyJ.a.b"]) is None  # the protocol must be offered too
    assert token_from_protocols([SUBPROTOCOL]) is None
    assert token_from_protocols([SUBPROTOCOL, "one", "two"]) is None


def test_data_messages_split_under_the_limit_and_keep_order() -> None:
    records = [(t, record(t, t, pad=200)) for t in range(100)]
    chunks = list(data_message_chunks(Channel.GREEKS, records, max_bytes=2000))
    assert len(chunks) > 5
    assert all(len(message) <= 2000 for _, message in chunks)
    assert [k for keys, _ in chunks for k in keys] == list(range(100))
    decoded = [json.loads(message) for _, message in chunks]
    assert {d["type"] for d in decoded} == {"greeks"}
    assert [r["instrument_token"] for d in decoded for r in d["data"]] == list(range(100))
    assert data_messages(Channel.TICKS, []) == []


def test_a_data_message_parses_to_records_by_instrument_latest_wins() -> None:
    body = b'{"type":"ticks","data":[' + record(1, 1.0) + b"," + record(1, 2.0) + b"]}"
    parsed = parse_data_message(body)
    assert parsed is not None
    channel, records = parsed
    assert channel is Channel.TICKS
    assert json.loads(records[1])["last_price"] == 2.0
    for other in (b'{"type":"pong"}', b"[]", b"nope", b'{"type":"ticks","data":[{"x":1}]}'):
        assert parse_data_message(other) is None


def test_merging_keeps_the_newest_record_per_instrument() -> None:
    merged = merge_records({1: b"old1", 2: b"old2"}, {2: b"new2", 3: b"new3"})
    assert merged == {1: b"old1", 2: b"new2", 3: b"new3"}


# --------------------------------------------------------------------------- authorizer


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)


def verifier(key: RSAKey) -> CognitoTokenVerifier:
    return CognitoTokenVerifier(
        issuer=ISSUER,
        audiences=frozenset({"client"}),
        fetch_keys=lambda: KeySet([key]).as_dict(private=False),
    )


def token(key: RSAKey, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "sub-1",
        "iss": ISSUER,
        "aud": "client",
        "token_use": "id",
        "cognito:username": "alice",
        "cognito:groups": ["admin", "ops"],
        "exp": now + 600,
        **changes,
    }
    return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)


def connect_event(protocols: str | None) -> dict[str, Any]:
    headers = {"Host": "example"} if protocols is None else {"sec-websocket-protocol": protocols}
    return {"type": "REQUEST", "methodArn": ARN, "headers": headers}


def test_a_valid_token_is_allowed_with_the_user_in_the_context(key: RSAKey) -> None:
    answer, outcome = authorize(connect_event(f"{SUBPROTOCOL}, {token(key)}"), verifier(key))
    assert outcome == "allowed"
    assert answer["principalId"] == "sub-1"
    statement = answer["policyDocument"]["Statement"][0]
    assert (statement["Effect"], statement["Resource"]) == ("Allow", ARN)
    assert answer["context"] == {"sub": "sub-1", "username": "alice", "groups": "admin,ops"}


@pytest.mark.parametrize(
    ("protocols", "outcome"),
    [
        (None, "missing"),
        (SUBPROTOCOL, "missing"),
        ("expired", "expired"),
        ("forged", "bad_signature_or_format"),
        ("no-subprotocol", "missing"),
    ],
)
def test_anything_else_is_denied(key: RSAKey, protocols: str | None, outcome: str) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    header = {
        "expired": f"{SUBPROTOCOL}, {token(key, exp=int(time.time()) - 1)}",
        "forged": f"{SUBPROTOCOL}, {token(forger)}",
        "no-subprotocol": token(key),
    }.get(protocols or "", protocols)
    answer, why = authorize(connect_event(header), verifier(key))
    assert why == outcome
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert "context" not in answer
    assert token(key).split(".")[0] not in json.dumps(answer)
