"""Orders are checked against the instrument registry before Kite is called."""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.api.errors import ValidationFailedError
from lambdas.api.models import GttRequest, PlaceOrderRequest
from lambdas.api.validation import OrderRules, checked_gtt, checked_order, on_tick_grid
from tests.unit.lambdas.api.fakes import LIMIT_BUY, NIFTY_FUT, REGISTRY, TODAY


def problems(order: dict[str, Any], rules: OrderRules | None = None) -> set[tuple[str, str]]:
    with pytest.raises(ValidationFailedError) as caught:
        checked_order(PlaceOrderRequest(**order), REGISTRY, rules or OrderRules(), TODAY)
    return {(p.field, p.rule) for p in caught.value.problems}


def test_a_good_limit_order_becomes_kite_parameters() -> None:
    params = checked_order(PlaceOrderRequest(**LIMIT_BUY), REGISTRY, OrderRules(), TODAY)
    assert params == {**LIMIT_BUY, "variety": "regular", "validity": "DAY"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tradingsymbol": "NOPE"}, ("tradingsymbol", "unknown_instrument")),
        ({"tradingsymbol": "NIFTY 50"}, ("tradingsymbol", "not_tradable")),
        ({"price": 1500.03}, ("price", "tick_size")),
        ({"price": None}, ("price", "required")),
        ({"trigger_price": 1490.0}, ("trigger_price", "not_allowed")),
        ({"product": "NRML"}, ("product", "product_for_segment")),
        ({"validity": "TTL"}, ("validity_ttl", "required")),
        ({"validity_ttl": 5}, ("validity_ttl", "not_allowed")),
        ({"disclosed_quantity": 5}, ("disclosed_quantity", "disclosed_quantity")),
        ({"iceberg_legs": 2}, ("iceberg_legs", "not_allowed")),
        ({"variety": "auction"}, ("auction_number", "required")),
        ({"variety": "co", "trigger_price": 1490.0}, ("product", "order_type_for_variety")),
        ({"market_protection": 2}, ("market_protection", "not_allowed")),
    ],
)
def test_each_broken_rule_is_named(change: dict[str, Any], expected: tuple[str, str]) -> None:
    # Given a good order with one thing wrong, Then that field and rule are named
    assert expected in problems({**LIMIT_BUY, **change})


def test_lot_size_and_expiry_of_derivatives() -> None:
    future = {**LIMIT_BUY, "exchange": "NFO", "tradingsymbol": NIFTY_FUT.tradingsymbol,
              "product": "NRML", "quantity": 50}  # fmt: skip
    assert ("quantity", "lot_size") in problems(future)
    assert ("product", "product_for_segment") in problems(
        {**future, "quantity": 75, "product": "CNC"}
    )
    expired = {**future, "quantity": 75, "tradingsymbol": "NIFTY26NOVFUT"}
    assert ("tradingsymbol", "expired") in problems(expired)


def test_market_orders_need_protection_unless_configured() -> None:
    market = {**LIMIT_BUY, "order_type": "MARKET", "price": None}
    # Given no default, Then the request must say
    assert ("market_protection", "required") in problems(market)
    # Given a configured default, Then it is sent
    params = checked_order(
        PlaceOrderRequest(**market), REGISTRY, OrderRules(market_protection_default=-1), TODAY
    )
    assert params["market_protection"] == -1
    # And a zero protection is refused whatever the default
    assert ("market_protection", "market_protection") in problems(
        {**market, "market_protection": 0}
    )


def test_stop_loss_triggers_on_the_right_side() -> None:
    sl_buy = {**LIMIT_BUY, "order_type": "SL", "trigger_price": 1501.0}
    assert ("trigger_price", "trigger_vs_price") in problems(sl_buy)
    sl_sell = {**sl_buy, "transaction_type": "SELL", "trigger_price": 1499.0}
    assert ("trigger_price", "trigger_vs_price") in problems(sl_sell)
    checked_order(
        PlaceOrderRequest(**{**sl_buy, "trigger_price": 1499.0}), REGISTRY, OrderRules(), TODAY
    )


def test_every_problem_is_reported_at_once() -> None:
    found = problems({**LIMIT_BUY, "price": 1500.03, "validity": "TTL", "product": "NRML"})
    assert {("price", "tick_size"), ("validity_ttl", "required"),
            ("product", "product_for_segment")} <= found  # fmt: skip


def test_tick_grid_is_exact_in_decimal() -> None:
    assert on_tick_grid(1500.05, 0.05)
    assert on_tick_grid(83.2525, 0.0025)
    assert not on_tick_grid(1500.03, 0.05)


def test_gtt_shape_and_instrument() -> None:
    good = {
        "trigger_type": "two-leg",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "trigger_values": [1400.0, 1600.0],
        "last_price": 1500.0,
        "orders": [
            {"transaction_type": "SELL", "quantity": 1, "product": "CNC", "price": 1399.0},
            {"transaction_type": "SELL", "quantity": 1, "product": "CNC", "price": 1601.0},
        ],
    }
    checked_gtt(GttRequest(**good), REGISTRY, TODAY)
    with pytest.raises(ValidationFailedError) as caught:
        checked_gtt(
            GttRequest(**{**good, "trigger_type": "single", "trigger_values": [1400.03]}),
            REGISTRY,
            TODAY,
        )
    found = {(p.field, p.rule) for p in caught.value.problems}
    assert {("orders", "gtt_shape"), ("trigger_values.0", "tick_size")} <= found
