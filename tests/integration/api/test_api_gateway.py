"""Acceptance: the trading API through the local API Gateway, against kite_sim and moto."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from lambdas.api.logic import kite_tag
from testkit.factories import moto_signed, token_claims
from tests.integration.api.conftest import Stack
from tests.waiting import wait_until
from ticker_core.kite_checksums import postback_checksum

pytestmark = pytest.mark.integration

LIMIT = {
    "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": 1,
    "product": "MIS", "order_type": "LIMIT", "price": 1.0,
}  # fmt: skip
MARKET = {**LIMIT, "order_type": "MARKET", "price": None, "market_protection": -1}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"t-{uuid.uuid4()}"}


def orders_path(stack: Stack, suffix: str = "") -> str:
    return f"/accounts/{stack.account}/orders{suffix}"


def test_health_is_public(stack: Stack) -> None:
    assert stack.call("GET", "/health")[:2] == (200, {"status": "ok"})


def test_unknown_routes_are_refused_by_the_gateway(stack: Stack) -> None:
    status, body, _ = stack.call("GET", "/nowhere")
    assert (status, body["message"]) == (403, "Missing Authentication Token")


def test_unauthenticated_forged_expired_and_foreign_tokens_are_401(stack: Stack) -> None:
    claims = token_claims(stack.api.trader.id_token)
    assert stack.call("GET", orders_path(stack))[0] == 401
    forged = jwt.encode(
        {"alg": "RS256", "kid": "dummy"},
        {**claims, "exp": int(time.time()) + 600},
        RSAKey.generate_key(2048),
    )
    expired = moto_signed({**claims, "exp": int(time.time()) - 1})
    other_pool = moto_signed({**claims, "iss": claims["iss"] + "x"})
    access_token = moto_signed({**claims, "token_use": "access"})
    for token in (forged, expired, other_pool, access_token, "not-a-jwt"):
        status, body, _ = stack.call("GET", orders_path(stack), token=token)
        assert (status, body["code"]) == (401, "unauthorized")
    # The same claims, properly signed and current, pass
    assert stack.call("GET", orders_path(stack), token=moto_signed(claims))[0] == 200


def test_another_users_account_is_403_whether_or_not_it_exists(stack: Stack) -> None:
    for account in (stack.accounts[0].user_id, "NOSUCH1"):
        status, body, _ = stack.call(
            "GET", f"/accounts/{account}/orders", token=stack.api.admin.id_token
        )
        assert (status, body["code"]) == (403, "forbidden")


def test_a_view_grant_reads_but_cannot_trade(stack: Stack) -> None:
    assert stack.call("GET", orders_path(stack), token=stack.viewer.id_token)[0] == 200
    status, body, _ = stack.call(
        "POST", orders_path(stack), token=stack.viewer.id_token, body=LIMIT, headers=key()
    )
    assert (status, body["code"]) == (403, "forbidden")


def test_place_list_history_modify_cancel(stack: Stack) -> None:
    price = stack.resting_price("NSE", "INFY")
    resting = {**LIMIT, "price": price}
    lower = round(price - 0.05, 2)
    status, body, _ = stack.trader_call("POST", orders_path(stack), body=resting, headers=key())
    assert status == 200, body
    order_id = body["data"]["order_id"]
    book = stack.trader_call("GET", orders_path(stack))[1]["data"]
    mine = next(o for o in book if o["order_id"] == order_id)
    assert mine["tag"] == body["data"]["tag"]
    history = stack.trader_call("GET", orders_path(stack, f"/{order_id}"))[1]["data"]
    assert history[-1]["status"] == "OPEN"
    status, _, _ = stack.trader_call(
        "PUT", orders_path(stack, f"/{order_id}"), body={"price": lower}, headers=key()
    )
    assert status == 200
    status, _, _ = stack.trader_call(
        "DELETE", orders_path(stack, f"/{order_id}?variety=regular"), headers=key()
    )
    assert status == 200
    final = stack.trader_call("GET", orders_path(stack, f"/{order_id}"))[1]["data"][-1]
    assert (final["status"], final["price"]) == ("CANCELLED", lower)
    assert stack.trader_call("GET", orders_path(stack, f"/{order_id}/trades"))[0] == 200
    status, body, _ = stack.trader_call("GET", orders_path(stack, "/999999999"))
    assert (status, body["code"]) == (404, "kite_not_found")


def test_invalid_order_is_422_and_kite_never_sees_it(stack: Stack) -> None:
    before = len(stack.sim_orders())
    status, body, _ = stack.trader_call(
        "POST", orders_path(stack), body={**LIMIT, "price": 1.03}, headers=key()
    )
    assert (status, body["details"][0]["field"], body["details"][0]["rule"]) == (
        422, "price", "tick_size",
    )  # fmt: skip
    assert len(stack.sim_orders()) == before


def test_twenty_concurrent_identical_places_make_one_order(stack: Stack) -> None:
    same = f"burst-{uuid.uuid4()}"
    names = ["Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY", "Idempotency-key"]
    gate = threading.Barrier(20)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        gate.wait(10)
        status, body, _ = stack.trader_call(
            "POST", orders_path(stack), body=LIMIT, headers={names[i % 4]: same}
        )
        with lock:
            answers.append((status, body))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    tag = kite_tag(stack.api.trader.sub, same)
    assert len([o for o in stack.sim_orders() if o["tag"] == tag]) == 1
    assert {s for s, _ in answers} <= {200, 409}
    ids = {b["data"]["order_id"] for s, b in answers if s == 200}
    assert len(ids) == 1


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "hang_after_accept", "seconds": 6},  # past the API's 2 s read timeout
        {"kind": "reset_after_accept"},
    ],
)
def test_an_answer_lost_after_kite_accepted_places_no_second_order(
    stack: Stack, fault: dict[str, Any]
) -> None:
    # Given Kite accepts the next order but its answer never arrives
    sim = stack.simulator
    account = sim.accounts[0]
    stack.sim.call(
        lambda: sim.faults.apply(
            {**fault, "path_prefix": "/orders", "method": "POST", "api_key": account.api_key}
        )
    )
    headers = key()
    order = {**LIMIT, "price": stack.resting_price("NSE", "INFY")}
    # When the order is placed (and the client retries with the same key)
    status, body, _ = stack.trader_call("POST", orders_path(stack), body=order, headers=headers)
    again = stack.trader_call("POST", orders_path(stack), body=order, headers=headers)
    # Then the API found the order by its tag and answered with it, and Kite has it once
    assert status == 200, body
    tag = body["data"]["tag"]
    assert [o["order_id"] for o in stack.sim_orders() if o["tag"] == tag] == [
        body["data"]["order_id"]
    ]
    assert again[1] == body


def test_kite_rejection_is_replayed_not_retried(stack: Stack) -> None:
    unaffordable = {**LIMIT, "price": 1_000_000.0, "quantity": 100}
    headers = key()
    first = stack.trader_call("POST", orders_path(stack), body=unaffordable, headers=headers)
    again = stack.trader_call("POST", orders_path(stack), body=unaffordable, headers=headers)
    # kite_sim accepts the order and then rejects it (funds), as Kite does: 200 with an id
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"


def test_an_expired_kite_session_answers_kite_login_required(stack: Stack) -> None:
    sim = stack.sim.sim
    assert sim is not None
    other = stack.accounts[1]
    path = f"/accounts/{other.user_id}"
    stack.sim.call(lambda: sim.sessions.expire(api_key=other.api_key))
    try:
        for method, suffix, body in [
            ("GET", "/orders", None),
            ("GET", "/portfolio/positions", None),
            ("POST", "/orders", LIMIT),
        ]:
            status, answer, _ = stack.trader_call(method, path + suffix, body=body, headers=key())
            assert (status, answer["code"]) == (424, "kite_login_required"), suffix
    finally:
        from sandbox.kite import rotate_session
        from sandbox.provision import client
        from ticker_adapters.credentials import CredentialVault
        from ticker_adapters.envelope import KmsEnvelopeCipher

        vault = CredentialVault(
            client(stack.aws, "secretsmanager"),
            KmsEnvelopeCipher(client(stack.aws, "kms"), stack.resources.kms_key_arn),
            prefix=stack.resources.names.secrets_prefix,
        )
        rotate_session(vault, sim.rest_url, other)


def test_portfolio_margins_profile_and_gtt(stack: Stack) -> None:
    stack.await_quiet_kite()  # ten reads follow: Kite's limit, with nothing left from before
    base = f"/accounts/{stack.account}"
    reads = ("/portfolio/positions", "/portfolio/holdings", "/user/margins",
             "/user/margins/equity", "/user/profile", "/trades", "/gtt/triggers")  # fmt: skip
    for suffix in reads:
        status, body, _ = stack.trader_call("GET", base + suffix)
        assert status == 200, (suffix, body)
    margin_order = {k: v for k, v in LIMIT.items() if k != "market_protection"}
    for suffix in ("/margins/orders", "/margins/basket"):
        status, body, _ = stack.trader_call("POST", base + suffix, body={"orders": [margin_order]})
        assert status == 200, (suffix, body)
    gtt = {
        "trigger_type": "single", "exchange": "NSE", "tradingsymbol": "INFY",
        "trigger_values": [1.0], "last_price": 2.0,
        "orders": [{"transaction_type": "BUY", "quantity": 1, "product": "CNC", "price": 1.0}],
    }  # fmt: skip
    status, body, _ = stack.trader_call("POST", base + "/gtt/triggers", body=gtt, headers=key())
    assert status in (200, 400), body  # kite_sim may refuse a trigger this far from the price


def test_basket_places_each_order_with_its_result(stack: Stack) -> None:
    basket = {"orders": [LIMIT, {**LIMIT, "tradingsymbol": "NOSUCHSYMBOL"}]}
    status, body, _ = stack.trader_call(
        "POST", f"/accounts/{stack.account}/baskets", body=basket, headers=key()
    )
    assert status == 422  # the unknown instrument is caught before anything is sent
    basket = {"orders": [LIMIT, {**LIMIT, "tradingsymbol": "TCS"}]}
    status, body, _ = stack.trader_call(
        "POST", f"/accounts/{stack.account}/baskets", body=basket, headers=key()
    )
    assert status == 200
    assert [r["status"] for r in body["data"]["orders"]] == ["success", "success"]


def test_cors_allowed_refused_and_preflight(stack: Stack) -> None:
    allowed = {"Origin": "https://app.example.com"}
    _, _, headers = stack.trader_call("GET", orders_path(stack), headers=allowed)
    assert headers.get("Access-Control-Allow-Origin") == "https://app.example.com"
    status, _, headers = stack.call(
        "OPTIONS", orders_path(stack),
        headers={**allowed, "Access-Control-Request-Method": "POST"},
    )  # fmt: skip
    assert status == 204
    assert "POST" in headers.get("Access-Control-Allow-Methods", "")
    for method in ("GET", "OPTIONS"):
        _, _, headers = stack.trader_call(
            method, orders_path(stack), headers={"Origin": "https://evil.example"}
        )
        assert not [h for h in headers if h.lower().startswith("access-control-")]


def test_postbacks_verified_and_stored_once_with_the_websocket_copy(stack: Stack) -> None:
    status, body, _ = stack.trader_call("POST", orders_path(stack), body=MARKET, headers=key())
    assert status == 200
    order_id = body["data"]["order_id"]
    # kite_sim posts the fill back to the gateway; it is stored once
    wait_until(
        lambda: stack.sql(
            "select 1 from trading.order_updates where order_id = $1 and status = 'COMPLETE'",
            order_id,
        ),
        within=30,
        what="the fill's postback stored",
    )
    update = stack.sql(
        "select payload from trading.order_updates where order_id = $1 and status = 'COMPLETE'",
        order_id,
    )[0]["payload"]
    update = json.loads(update) if isinstance(update, str) else update
    # The same update from the WebSocket (forwarded through SQS) is not stored again
    body = json.dumps({"account_id": stack.account, "order": update})
    event = {"Records": [{"messageId": "m-1", "body": body}]}
    result = stack.updates_function.invoke(event)
    assert result.payload == {
        "batchItemFailures": [], "stored": 0, "duplicates": 1, "rejected": 0, "failed": 0,
    }  # fmt: skip
    # A postback with a bad checksum is refused and stores nothing
    forged = {**update, "status": "CANCELLED", "checksum": "0" * 64}
    assert stack.call("POST", "/postbacks", body=forged)[0] == 403
    good = {**update, "status": "UPDATE"}
    good["checksum"] = postback_checksum(
        good["order_id"], good["order_timestamp"], stack.accounts[0].api_secret
    )
    assert stack.call("POST", "/postbacks", body=good)[1] == {"stored": True}
    rows = stack.sql("select status from trading.order_updates where order_id = $1", order_id)
    assert "CANCELLED" not in {r["status"] for r in rows}
