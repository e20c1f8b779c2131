"""Subscriptions through the resolver over fakes: validation, capacity, ownership, status."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import date

from lambdas.api.subscriptions import StreamingLimits
from testkit.factories import chain, index_instrument
from tests.unit.lambdas.api.account_fakes import (
    ACCOUNT,
    ADMIN,
    NOW,
    TRADER,
    AccountRig,
    account_rig,
)
from tests.unit.lambdas.api.fakes import equity
from ticker_adapters.feed_status import AccountStatus, ConnectionStatus, FeedStatus
from ticker_core.instruments import InstrumentRegistry

EXPIRY = date(2026, 12, 29)
OLD_EXPIRY = date(2026, 11, 26)
STRIKES = [float(k) for k in range(23000, 25050, 50)]  # 41 strikes
NIFTY = [replace(index_instrument("NIFTY 50", 256_265 >> 8), last_price=24010.0)]
REGISTRY = InstrumentRegistry(
    [
        *NIFTY,
        equity("INFY", 1594),
        equity("RELIANCE", 2885),
        *chain("NIFTY", EXPIRY, STRIKES, first_exchange_token=60_000, future=True),
        *chain("NIFTY", OLD_EXPIRY, [24000.0], first_exchange_token=61_000, future=False),
    ]
)
INFY = REGISTRY.by_symbol("NSE", "INFY")
OLD_CALL = REGISTRY.option_chain("NIFTY", OLD_EXPIRY).rows[0].ce  # type: ignore[union-attr]


def rig_with_accounts(accounts: int = 1, limits: StreamingLimits | None = None) -> AccountRig:
    rig = account_rig(registry=REGISTRY, limits=limits)
    for n in range(accounts):
        status, _, _ = rig.call(
            "PUT",
            f"/admin/accounts/AC{n:04d}",
            body={"api_key": secrets.token_hex(8), "api_secret": secrets.token_hex(16)},
        )
        assert status == 200
    return rig


def change(rig: AccountRig, body: dict, user: str = TRADER) -> tuple[int, dict, dict]:
    return rig.call("POST", "/subscriptions", body=body, user=user)


def test_instruments_by_token_or_symbol_are_subscribed_for_the_caller() -> None:
    rig = rig_with_accounts()
    status, body, _ = change(
        rig,
        {
            "subscribe": [
                {"instrument": "NSE:INFY", "mode": "full"},
                {"instrument": 256_265, "mode": "ltp"},
            ]
        },
    )
    assert status == 200
    data = body["data"]
    assert [(i["tradingsymbol"], i["mode"]) for i in data["instruments"]] == [
        ("NIFTY 50", "ltp"), ("INFY", "full"),
    ]  # fmt: skip
    assert {r["owner"] for i in data["instruments"] for r in i["requests"]} == {TRADER}
    assert data["capacity"] == {
        "accounts": 1, "connections_per_account": 3, "instruments_per_connection": 3000,
        "capacity": 9000, "planned": 2,
    }  # fmt: skip
    assert rig.store.generation_value == 1


def test_the_widest_mode_any_owner_asked_for_is_the_instruments_mode() -> None:
    rig = rig_with_accounts()
    change(rig, {"subscribe": [{"instrument": "NSE:INFY", "mode": "ltp"}]})
    change(rig, {"subscribe": [{"instrument": "NSE:INFY", "mode": "full"}]}, user=ADMIN)
    (infy,) = rig.call("GET", "/subscriptions", user=TRADER)[1]["data"]["instruments"]
    assert infy["mode"] == "full"
    assert infy["requests"] == [{"owner": ADMIN, "mode": "full"}, {"owner": TRADER, "mode": "ltp"}]
    # And one owner's withdrawal leaves the other's stream
    change(rig, {"unsubscribe": ["NSE:INFY"]}, user=ADMIN)
    (infy,) = rig.call("GET", "/subscriptions", user=TRADER)[1]["data"]["instruments"]
    assert infy["requests"] == [{"owner": TRADER, "mode": "ltp"}]


def test_unknown_and_expired_instruments_are_refused_naming_each_and_nothing_is_written() -> None:
    rig = rig_with_accounts()
    assert OLD_CALL is not None
    status, body, _ = change(
        rig,
        {
            "subscribe": [
                {"instrument": "NSE:INFY"},
                {"instrument": "NSE:NOSUCH"},
                {"instrument": OLD_CALL.instrument_token},
            ],
            "atm_windows": [{"underlying": "INFY", "strikes_each_side": 5}],
        },
    )
    assert (status, body["code"]) == (422, "validation_error")
    assert [(d["field"], d["rule"]) for d in body["details"]] == [
        ("subscribe[1]", "unknown_instrument"),
        ("subscribe[2]", "expired"),
        ("atm_windows[0].underlying", "no_option_chain"),
    ]
    assert rig.store.changes == []


def test_malformed_requests_are_422_from_the_models() -> None:
    rig = rig_with_accounts()
    for body in (
        {"subscribe": [{"instrument": "infy"}]},
        {"subscribe": [{"instrument": "NSE:INFY", "mode": "fast"}]},
        {"atm_windows": [{"underlying": "NIFTY", "strikes_each_side": 51}]},
        {"unknown": []},
        {"unsubscribe": [False]},  # a bool is not a token (found by schemathesis: was a 500)
        {"unsubscribe": ["0"]},
        {"unsubscribe": [0]},
        {"unsubscribe": ["99999999999"]},
        {"subscribe": [{"instrument": "NSE:INFY"}] * 101},
    ):
        status, answer, _ = change(rig, body)
        assert (status, answer["code"]) == (422, "validation_error"), body


def test_a_change_beyond_capacity_is_refused_with_the_numbers() -> None:
    # Given one account of 2 connections x 10 instruments (20 in all)
    rig = rig_with_accounts(1, StreamingLimits(2, 10))
    # When a window of 10 strikes each side (21 strikes x CE/PE + the index) is asked for
    status, body, _ = change(
        rig, {"atm_windows": [{"underlying": "NIFTY", "strikes_each_side": 10}]}
    )
    # Then it is refused with the numbers, and nothing is written
    assert (status, body["code"]) == (409, "capacity_exceeded")
    assert {k: body[k] for k in ("planned", "current", "capacity", "accounts")} == {
        "planned": 43, "current": 0, "capacity": 20, "accounts": 1,
    }  # fmt: skip
    assert (body["connections_per_account"], body["instruments_per_connection"]) == (2, 10)
    assert "43 instruments" in body["message"]
    assert "at most 20" in body["message"]
    assert rig.store.changes == []
    # And the same window fits once a third account joins
    for n in (1, 2):
        rig.call(
            "PUT", f"/admin/accounts/AC{n:04d}",
            body={"api_key": secrets.token_hex(8), "api_secret": secrets.token_hex(16)},
        )  # fmt: skip
    status, body, _ = change(
        rig, {"atm_windows": [{"underlying": "NIFTY", "strikes_each_side": 10}]}
    )
    assert status == 200
    assert body["data"]["capacity"]["planned"] == 43


def test_a_change_that_does_not_grow_the_set_is_allowed_over_capacity() -> None:
    # Given a set that fitted, then an account retired
    rig = rig_with_accounts(1, StreamingLimits(1, 2))
    change(rig, {"subscribe": [{"instrument": "NSE:INFY"}, {"instrument": "NSE:RELIANCE"}]})
    rig.call("DELETE", "/admin/accounts/AC0000")
    # When the caller withdraws one instrument, Then it is allowed
    status, body, _ = change(rig, {"unsubscribe": ["NSE:RELIANCE"]})
    assert status == 200
    assert body["data"]["capacity"]["planned"] == 1
    # But adding one is not
    status, body, _ = change(rig, {"subscribe": [{"instrument": "NSE:RELIANCE"}]})
    assert (status, body["code"]) == (409, "capacity_exceeded")


def test_an_instrument_gone_from_todays_dump_can_still_be_withdrawn_by_token() -> None:
    rig = rig_with_accounts()
    rig.store.instruments[(99_999_999, TRADER)] = "ltp"
    status, body, _ = change(rig, {"unsubscribe": [99_999_999]})
    assert status == 200
    assert body["data"]["instruments"] == []


def test_the_status_reports_the_feeds_record_against_the_desired_generation() -> None:
    rig = rig_with_accounts()
    assert rig.call("GET", "/subscriptions/status", user=TRADER)[1]["data"] == {
        "desired_generation": 0, "feed": None, "instances": 0,
    }  # fmt: skip
    rig.statuses.append(
        FeedStatus(
            instance="feed-1", written_at=NOW, started_at=NOW, interval_seconds=5,
            generation=0, desired=5, streaming=4, not_fitted=1, not_fitted_sample=(123,),
            accounts=(AccountStatus(ACCOUNT, (ConnectionStatus(0, True, 4),)),),
            accounts_waiting=("CD5678",),
        )
    )  # fmt: skip
    change(rig, {"subscribe": [{"instrument": "NSE:INFY"}]})
    rig.clock.advance(2)
    data = rig.call("GET", "/subscriptions/status", user=TRADER)[1]["data"]
    assert data["desired_generation"] == 1
    assert data["instances"] == 1
    feed = data["feed"]
    assert (feed["generation"], feed["desired"], feed["streaming"], feed["not_fitted"]) == (
        0, 5, 4, 1,
    )  # fmt: skip
    assert feed["not_fitted_sample"] == [123]
    assert feed["age_seconds"] == 2.0
    assert feed["stale"] is False
    assert feed["accounts"] == [{
        "account_id": ACCOUNT, "connections_open": 1, "connections": 1, "instruments": 4,
        "streaming": 4,
    }]  # fmt: skip
    assert feed["accounts_waiting_for_login"] == ["CD5678"]


def test_subscriptions_need_a_caller() -> None:
    rig = rig_with_accounts()
    status, body, _ = rig.call("GET", "/subscriptions", user=None)
    assert (status, body["code"]) == (401, "unauthorized")
