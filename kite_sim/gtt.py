"""Good-till-triggered orders (sans-I/O): Kite's ``/gtt/triggers``.

A ``single`` trigger fires when the last price crosses its one trigger value
(from the side the price was on when it was created); a ``two-leg`` (OCO)
trigger has a lower and an upper value and fires the first or the second of
its two orders. Firing places a LIMIT order through the order engine and
records the result on the trigger, whose status becomes ``triggered``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kite_sim.auth import Account
from kite_sim.clock import MarketClock, kite_timestamp
from kite_sim.errors import InputError, KiteError, NotFoundError
from kite_sim.marketview import MarketView
from kite_sim.order_params import integer, number
from kite_sim.orders import OrderEngine

MIN_DISTANCE = 0.0025  # trigger values must be at least 0.25% away from the last price


@dataclass
class Trigger:
    """One GTT."""

    trigger_id: int
    account: Account
    trigger_type: str
    condition: dict[str, Any]
    orders: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    status: str = "active"
    above: bool = True  # single: fire when the price rises to the trigger

    def to_kite(self) -> dict[str, Any]:
        """The trigger as ``GET /gtt/triggers/:id`` shows it."""
        return {
            "id": self.trigger_id,
            "user_id": self.account.user_id,
            "parent_trigger": None,
            "type": self.trigger_type,
            "created_at": kite_timestamp(self.created_at),
            "updated_at": kite_timestamp(self.updated_at),
            "expires_at": kite_timestamp(self.expires_at),
            "status": self.status,
            "condition": dict(self.condition),
            "orders": [dict(o) for o in self.orders],
            "meta": None,
        }


@dataclass
class GttBook:
    """Every account's triggers."""

    market: MarketView
    engine: OrderEngine
    clock: MarketClock
    triggers: dict[int, Trigger] = field(default_factory=dict)
    next_id: int = 100_000

    def _parse(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        trigger_type = str(params.get("type", ""))
        if trigger_type not in ("single", "two-leg"):
            raise InputError("Invalid `type`: single or two-leg.")
        try:
            condition = json.loads(str(params.get("condition", "")))
            orders = json.loads(str(params.get("orders", "")))
        except ValueError:
            raise InputError("`condition` and `orders` must be JSON.") from None
        if not isinstance(condition, dict) or not isinstance(orders, list):
            raise InputError("Invalid `condition` or `orders`.")
        inst = self.market.instrument(
            str(condition.get("exchange", "")), str(condition.get("tradingsymbol", ""))
        )
        if inst is None:
            raise InputError("Invalid `tradingsymbol` or `exchange`.")
        values = condition.get("trigger_values")
        want = 1 if trigger_type == "single" else 2
        if not isinstance(values, list) or len(values) != want:
            raise InputError(f"`trigger_values` must have {want} value(s) for {trigger_type}.")
        if len(orders) != want:
            raise InputError(f"{trigger_type} triggers take {want} order(s).")
        for order in orders:
            if not isinstance(order, dict):
                raise InputError("Invalid `orders`.")
            for key in ("transaction_type", "quantity", "order_type", "product", "price"):
                if key not in order:
                    raise InputError(f"Missing `{key}` in orders.")
        ltp = self.market.snapshot(inst.instrument_token).last_price
        floats = [number({"trigger_values": v}, "trigger_values") for v in values]
        for v in floats:
            if abs(v - ltp) < ltp * MIN_DISTANCE:
                raise InputError("Trigger price was too close to the last price.")
        if trigger_type == "two-leg" and not floats[0] < ltp < floats[1]:
            raise InputError("Two-leg trigger values must be below and above the last price.")
        condition = {
            "exchange": inst.exchange,
            "tradingsymbol": inst.tradingsymbol,
            "instrument_token": inst.instrument_token,
            "trigger_values": floats,
            "last_price": float(condition.get("last_price", ltp)),
        }
        legs = [
            {
                "exchange": inst.exchange,
                "tradingsymbol": inst.tradingsymbol,
                "product": str(o["product"]),
                "order_type": str(o["order_type"]),
                "transaction_type": str(o["transaction_type"]),
                "quantity": integer(o, "quantity"),
                "price": number(o, "price"),
                "result": None,
            }
            for o in orders
        ]
        return trigger_type, condition, legs

    def place(self, account: Account, params: Mapping[str, Any]) -> int:
        """``POST /gtt/triggers``; the new trigger's id."""
        trigger_type, condition, orders = self._parse(params)
        now = self.clock.now()
        self.next_id += 1
        trig = Trigger(
            self.next_id,
            account,
            trigger_type,
            condition,
            orders,
            now,
            now,
            now + timedelta(days=365),
        )
        ltp = self.market.snapshot(condition["instrument_token"]).last_price
        trig.above = condition["trigger_values"][0] > ltp
        self.triggers[trig.trigger_id] = trig
        return trig.trigger_id

    def get(self, account: Account, trigger_id: int) -> Trigger:
        """One of the account's triggers."""
        trig = self.triggers.get(trigger_id)
        if trig is None or trig.account is not account or trig.status == "deleted":
            raise NotFoundError("Trigger not found.")
        return trig

    def modify(self, account: Account, trigger_id: int, params: Mapping[str, Any]) -> int:
        """``PUT /gtt/triggers/:id``."""
        trig = self.get(account, trigger_id)
        if trig.status != "active":
            raise InputError(f"Trigger is {trig.status} and cannot be modified.")
        trigger_type, condition, orders = self._parse(params)
        trig.trigger_type, trig.condition, trig.orders = trigger_type, condition, orders
        trig.updated_at = self.clock.now()
        ltp = self.market.snapshot(condition["instrument_token"]).last_price
        trig.above = condition["trigger_values"][0] > ltp
        return trigger_id

    def delete(self, account: Account, trigger_id: int) -> int:
        """``DELETE /gtt/triggers/:id``."""
        trig = self.get(account, trigger_id)
        trig.status = "deleted"
        trig.updated_at = self.clock.now()
        return trigger_id

    def list(self, account: Account) -> list[dict[str, Any]]:
        """``GET /gtt/triggers``."""
        return [
            t.to_kite()
            for t in self.triggers.values()
            if t.account is account and t.status != "deleted"
        ]

    def step(self) -> int:
        """Fire triggers the market has crossed; how many fired."""
        fired = 0
        now = self.clock.now()
        for trig in self.triggers.values():
            if trig.status != "active":
                continue
            if now >= trig.expires_at:
                trig.status = "expired"
                continue
            ltp = self.market.snapshot(trig.condition["instrument_token"]).last_price
            values = trig.condition["trigger_values"]
            leg: int | None = None
            if trig.trigger_type == "single":
                hit = ltp >= values[0] if trig.above else ltp <= values[0]
                leg = 0 if hit else None
            elif ltp <= values[0]:
                leg = 0
            elif ltp >= values[1]:
                leg = 1
            if leg is None:
                continue
            self._fire(trig, leg, ltp, now)
            fired += 1
        return fired

    def _fire(self, trig: Trigger, leg: int, ltp: float, now: datetime) -> None:
        spec = trig.orders[leg]
        params = {
            "exchange": trig.condition["exchange"],
            "tradingsymbol": trig.condition["tradingsymbol"],
            "transaction_type": spec["transaction_type"],
            "quantity": spec["quantity"],
            "product": spec["product"],
            "order_type": spec["order_type"],
            "price": spec["price"],
            "tag": "gtt",
        }
        result: dict[str, Any] = {
            "account_id": trig.account.user_id,
            "exchange": trig.condition["exchange"],
            "tradingsymbol": trig.condition["tradingsymbol"],
            "validity": "DAY",
            "product": spec["product"],
            "order_type": spec["order_type"],
            "transaction_type": spec["transaction_type"],
            "quantity": spec["quantity"],
            "price": spec["price"],
            "meta": json.dumps({"gtt": trig.trigger_id}),
            "timestamp": kite_timestamp(now),
            "triggered_at": ltp,
        }
        try:
            order = self.engine.place(trig.account, "regular", params)
            result["order_result"] = {
                "status": "success",
                "order_id": order.order_id,
                "rejection_reason": order.status_message or "",
            }
        except KiteError as exc:
            result["order_result"] = {
                "status": "failed",
                "order_id": "",
                "rejection_reason": exc.message,
            }
        trig.orders[leg]["result"] = result
        trig.status = "triggered"
        trig.updated_at = now
