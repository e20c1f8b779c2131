"""The API function's request path over in-memory dependencies (no sockets)."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from lambdas.api.errors import KiteCallError, KiteFailureKind, ServiceUnavailableError
from lambdas.api.logic import kite_tag
from lambdas.api.openapi import DOCUMENT, generate
from tests.unit.lambdas.api.fakes import (
    ACCOUNT,
    ADMIN,
    LIMIT_BUY,
    OTHER_ACCOUNT,
    TRADER,
    VIEWER,
    rig,
)
from ticker_core.kite_checksums import postback_checksum

ORDERS = f"/accounts/{ACCOUNT}/orders"


def key(value: str = "k-1") -> dict[str, str]:
    return {"Idempotency-Key": value}


def test_openapi_json_is_what_the_code_generates() -> None:
    # Given the committed document, Then it is exactly what the routers and models say
    assert DOCUMENT.read_text() == generate(), "run: python -m lambdas.api.openapi"


def test_place_order_answers_the_order_id_and_the_tag() -> None:
    r = rig()
    status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert status == 200
    assert body["data"]["order_id"] == r.kite.orders_book[0]["order_id"]
    assert body["data"]["tag"] == kite_tag(TRADER, "k-1")
    assert r.kite.placed == [{**LIMIT_BUY, "variety": "regular", "validity": "DAY",
                              "tag": kite_tag(TRADER, "k-1")}]  # fmt: skip


def test_without_claims_the_answer_is_401() -> None:
    status, body, _ = rig().call("GET", ORDERS, user=None)
    assert (status, body["code"]) == (401, "unauthorized")


def test_another_users_account_is_403_whether_or_not_it_exists() -> None:
    r = rig()
    answers = [r.call("GET", f"/accounts/{a}/orders") for a in (OTHER_ACCOUNT, "NOSUCH1")]
    assert [(s, b) for s, b, _ in answers] == [
        (403, {"status": "error", "code": "forbidden",
               "message": "You do not have access to this account."})
    ] * 2  # fmt: skip


def test_a_view_grant_reads_but_cannot_trade() -> None:
    r = rig()
    assert r.call("GET", ORDERS, user=VIEWER)[0] == 200
    status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key(), user=VIEWER)
    assert (status, body["code"]) == (403, "forbidden")
    assert r.kite.placed == []


def test_writes_need_an_idempotency_key() -> None:
    r = rig()
    for headers, rule in (({}, "missing"), (key("bad key!"), "string_pattern_mismatch")):
        status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=headers)
        assert status == 422
        detail = body["details"][0]
        assert (detail["field"], detail["rule"]) == ("header.idempotency-key", rule)
    assert r.kite.placed == []


def test_a_body_that_is_not_utf8_is_422() -> None:
    r = rig()
    status, body, _ = r.call("POST", ORDERS, raw_body=b"\xff\xfe{", headers=key())
    assert (status, body["details"][0]["rule"]) == (422, "json_invalid")


def test_bodies_must_be_json() -> None:
    r = rig()
    status, body, _ = r.call(
        "POST", ORDERS, raw_body=b"a=1", headers={**key(), "Content-Type": "multipart/form-data"}
    )
    assert (status, body["code"]) == (415, "unsupported_media_type")


def test_a_replay_in_any_header_case_returns_the_first_answer_and_places_once() -> None:
    r = rig()
    first = r.call("POST", ORDERS, body=LIMIT_BUY, headers={"Idempotency-Key": "same"})
    again = r.call("POST", ORDERS, body=LIMIT_BUY, headers={"idempotency-key": "same"})
    third = r.call("POST", ORDERS, body=LIMIT_BUY, headers={"IDEMPOTENCY-KEY": "same"})
    assert first[1] == again[1] == third[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    assert len(r.kite.placed) == 1


def test_the_same_key_with_another_body_is_422() -> None:
    r = rig()
    r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    status, body, _ = r.call("POST", ORDERS, body={**LIMIT_BUY, "quantity": 2}, headers=key())
    assert (status, body["code"]) == (422, "idempotency_key_reused")
    assert len(r.kite.placed) == 1


def test_keys_are_per_user() -> None:
    r = rig()
    r.grants.grants[(ADMIN, ACCOUNT)] = "trade"
    r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    r.call("POST", ORDERS, body=LIMIT_BUY, headers=key(), user=ADMIN)
    assert len(r.kite.placed) == 2


def test_a_request_in_progress_answers_409_with_retry_after() -> None:
    r = rig()
    inside = threading.Event()
    release = threading.Event()
    original = r.kite.place_order

    def slow_place(**params: Any) -> str:
        inside.set()
        release.wait(10)
        return original(**params)

    r.kite.place_order = slow_place  # type: ignore[method-assign]
    results: list[Any] = []
    first = threading.Thread(
        target=lambda: results.append(r.call("POST", ORDERS, body=LIMIT_BUY, headers=key()))
    )
    first.start()
    assert inside.wait(10)
    status, body, headers = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    release.set()
    first.join(10)
    assert (status, body["code"], headers.get("Retry-After")) == (409, "request_in_progress", "1")
    assert results[0][0] == 200
    assert len(r.kite.placed) == 1


def test_invalid_order_is_422_naming_field_and_rule_and_kite_is_not_called() -> None:
    r = rig()
    status, body, _ = r.call("POST", ORDERS, body={**LIMIT_BUY, "price": 1500.03}, headers=key())
    assert status == 422
    assert body["code"] == "validation_error"
    assert {"field": "price", "rule": "tick_size"}.items() <= body["details"][0].items()
    status, body, _ = r.call("POST", ORDERS, body={**LIMIT_BUY, "quantity": 0}, headers=key("k2"))
    assert status == 422
    assert body["details"][0]["field"] == "quantity"
    assert r.kite.calls == []


def test_an_answer_lost_after_acceptance_is_found_by_tag_not_placed_again() -> None:
    r = rig()
    r.kite.accept_before_failing = True
    r.kite.fail_next = [KiteCallError(KiteFailureKind.OUTCOME_UNKNOWN, "read timeout")]
    status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert status == 200
    assert body["data"]["order_id"] == r.kite.orders_book[0]["order_id"]
    assert r.kite.calls == ["place_order", "orders"]
    assert len(r.kite.placed) == 1


def test_an_unknown_outcome_is_504_and_a_retry_looks_again_but_never_places() -> None:
    r = rig()
    r.kite.fail_next = [KiteCallError(KiteFailureKind.OUTCOME_UNKNOWN, "reset")]
    status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert (status, body["code"]) == (504, "order_outcome_unknown")
    # When the client retries with the same key, Then the book is read again, nothing placed
    status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert (status, body["code"]) == (504, "order_outcome_unknown")
    assert r.kite.calls.count("place_order") == 1


def test_kite_refusal_is_stored_and_replayed() -> None:
    r = rig()
    r.kite.fail_next = [
        KiteCallError(KiteFailureKind.REFUSED, "Insufficient funds.", error_type="MarginException")
    ]
    first = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    again = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert first[0] == again[0] == 400
    assert first[1] == again[1]
    assert first[1]["kite_error_type"] == "MarginException"
    assert r.kite.calls.count("place_order") == 1


def test_nothing_sent_can_be_retried_with_the_same_key() -> None:
    r = rig()
    r.kite.fail_next = [KiteCallError(KiteFailureKind.NOT_SENT, "connection refused")]
    status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert (status, body["code"]) == (503, "kite_unavailable")
    status, _, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert status == 200
    assert len(r.kite.placed) == 1


def test_an_expired_kite_session_is_kite_login_required_on_every_route() -> None:
    r = rig()
    r.broker.session_expired = True
    for index, (method, path, body) in enumerate(
        [
            ("GET", ORDERS, None),
            ("GET", f"/accounts/{ACCOUNT}/portfolio/holdings", None),
            ("GET", f"/accounts/{ACCOUNT}/user/profile", None),
            ("GET", f"/accounts/{ACCOUNT}/gtt/triggers", None),
            ("POST", ORDERS, LIMIT_BUY),
            ("DELETE", f"{ORDERS}/2611300001", None),
        ]
    ):
        status, answer, _ = r.call(method, path, body=body, headers=key(f"k{index}"))
        assert (status, answer["code"]) == (424, "kite_login_required"), path
    # And nothing was stored as the key's answer: after logging in, the same key places
    r.broker.session_expired = False
    assert r.call("POST", ORDERS, body=LIMIT_BUY, headers=key("k4"))[0] == 200


def test_order_limiter_refusal_is_429_with_retry_after_and_nothing_sent() -> None:
    r = rig(limiter_capacity=0)
    status, body, headers = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert (status, body["code"], headers["Retry-After"]) == (429, "rate_limited", "1")
    assert r.kite.placed == []


def test_a_basket_places_in_order_with_a_result_each() -> None:
    r = rig()
    r.kite.accept_before_failing = False
    second = {**LIMIT_BUY, "tradingsymbol": "RELIANCE", "price": 2500.0}
    r.kite.fail_next = []
    status, body, _ = r.call(
        "POST", f"/accounts/{ACCOUNT}/baskets", body={"orders": [LIMIT_BUY, second]}, headers=key()
    )
    assert status == 200
    results = body["data"]["orders"]
    assert [x["status"] for x in results] == ["success", "success"]
    assert [p["tradingsymbol"] for p in r.kite.placed] == ["INFY", "RELIANCE"]
    assert results[0]["tag"] != results[1]["tag"]


def test_a_basket_with_a_bad_order_sends_nothing() -> None:
    r = rig()
    bad = {**LIMIT_BUY, "price": 1.03}
    status, body, _ = r.call(
        "POST", f"/accounts/{ACCOUNT}/baskets", body={"orders": [LIMIT_BUY, bad]}, headers=key()
    )
    assert status == 422
    assert body["details"][0]["field"] == "orders.1.price"
    assert r.kite.placed == []


def test_kite_fields_added_later_pass_through() -> None:
    status, body, _ = rig().call("GET", f"/accounts/{ACCOUNT}/portfolio/holdings")
    assert status == 200
    assert body["data"][0]["a_field_kite_adds_later"] == {"x": 1}


def test_cors_allowed_origin_and_preflight() -> None:
    r = rig()
    origin = {"Origin": "https://app.example.com"}
    status, _, headers = r.call("GET", ORDERS, headers=origin)
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    status, _, headers = r.call(
        "OPTIONS", ORDERS, user=None,
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "idempotency-key,content-type"},
    )  # fmt: skip
    assert status == 204
    assert "Idempotency-Key" in headers["Access-Control-Allow-Headers"]
    assert "POST" in headers["Access-Control-Allow-Methods"]


def test_cors_other_origins_get_no_cors_headers_even_on_preflight() -> None:
    r = rig()
    for method in ("GET", "OPTIONS"):
        _, _, headers = r.call(method, ORDERS, headers={"Origin": "https://evil.example"})
        assert not [h for h in headers if h.lower().startswith("access-control-")], method


def test_bodies_over_the_cap_are_413() -> None:
    r = rig(max_body_bytes=1024)
    status, body, _ = r.call("POST", ORDERS, raw_body=b"{" + b" " * 2000 + b"}", headers=key())
    assert (status, body["code"]) == (413, "payload_too_large")


def test_an_unexpected_error_is_500_without_its_text() -> None:
    r = rig()

    def boom() -> Any:
        raise RuntimeError("token=abc123 secret in the message")

    r.kite.positions = boom  # type: ignore[method-assign]
    status, body, _ = r.call("GET", f"/accounts/{ACCOUNT}/portfolio/positions")
    assert status == 500
    assert "abc123" not in json.dumps(body)
    assert body["code"] == "internal_error"


def test_postback_with_a_good_checksum_is_stored_once_and_published() -> None:
    r = rig()
    order = {"order_id": "2611300001", "order_timestamp": "2026-11-30 10:00:00",
             "exchange_update_timestamp": "2026-11-30 10:00:01", "status": "COMPLETE",
             "filled_quantity": 1, "user_id": ACCOUNT, "tag": "Tabc"}  # fmt: skip
    order["checksum"] = postback_checksum(
        order["order_id"], order["order_timestamp"], r.secrets[ACCOUNT]
    )
    first = r.call("POST", "/postbacks", body=order, user=None)
    again = r.call("POST", "/postbacks", body=order, user=None)
    assert (first[0], first[1]) == (200, {"stored": True})
    assert (again[0], again[1]) == (200, {"stored": False})
    assert len(r.publisher.events) == 1
    assert r.publisher.events[0]["source"] == "postback"
    stored = next(iter(r.lifecycle.updates.values()))[0]
    assert "checksum" not in stored.payload
    assert stored.update_time == datetime.fromisoformat("2026-11-30T10:00:01+05:30")


def test_postback_with_a_bad_checksum_or_unknown_account_is_refused() -> None:
    r = rig()
    order = {"order_id": "1", "order_timestamp": "2026-11-30 10:00:00", "status": "COMPLETE",
             "user_id": ACCOUNT, "checksum": "0" * 64}  # fmt: skip
    for body in (order, {**order, "user_id": "NOSUCH"}, {"not": "an order"}):
        status, answer, _ = r.call("POST", "/postbacks", body=body, user=None)
        assert (status, answer["code"]) == (403, "postback_refused")
    status, _, _ = r.call("POST", "/postbacks", raw_body=b"not json", user=None)
    assert status == 403
    assert r.lifecycle.updates == {}


def test_admins_manage_grants_and_others_cannot() -> None:
    r = rig()
    path = f"/admin/grants/{VIEWER}/{OTHER_ACCOUNT}"
    status, body, _ = r.call("PUT", path, body={"role": "trade"})
    assert (status, body["code"]) == (403, "forbidden")
    status, body, _ = r.call("PUT", path, body={"role": "trade"}, user=ADMIN, groups="admin")
    assert status == 200
    assert r.grants.role(VIEWER, OTHER_ACCOUNT) == "trade"
    status, body, _ = r.call("GET", "/me/grants", user=VIEWER)
    assert {g["account_id"] for g in body["data"]["grants"]} == {ACCOUNT, OTHER_ACCOUNT}
    assert r.call("DELETE", path, user=ADMIN, groups="[admin, ops]")[0] == 200
    assert r.call("DELETE", path, user=ADMIN, groups="admin")[0] == 404


def test_health_is_public_and_unknown_routes_are_404() -> None:
    r = rig()
    assert r.call("GET", "/health", user=None)[:2] == (200, {"status": "ok"})
    status, body, _ = r.call("GET", "/nowhere", user=None)
    assert (status, body["code"]) == (404, "not_found")


def test_an_order_kite_accepted_is_answered_even_if_its_intent_cannot_be_settled() -> None:
    r = rig()
    original = r.lifecycle.settle_intent

    def store_down(intent_id: int, status: str, **changes: Any) -> None:
        if status == "accepted":
            raise ServiceUnavailableError()
        original(intent_id, status, **changes)

    r.lifecycle.settle_intent = store_down  # type: ignore[method-assign]
    status, body, _ = r.call("POST", ORDERS, body=LIMIT_BUY, headers=key())
    assert status == 200
    assert body["data"]["order_id"] == r.kite.orders_book[0]["order_id"]
    # And the intent is still "sent": a retry after the idempotency record expired finds it
    assert [i.status for i in r.lifecycle.intents.values()] == ["sent"]
