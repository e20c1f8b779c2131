"""Matching (sans-I/O): how much of an order the visible depth fills, and at what prices.

A live order takes the opposite side's depth level by level up to its limit
(LIMIT/SL: its price; MARKET/SL-M: the last price moved by its
``market_protection``, clamped to the circuit band), in whole lots. Depth
taken by earlier orders in the same market step is not available again.
Stop-loss orders wait until the last price crosses their trigger.
"""

from __future__ import annotations

import math

from kite_sim.marketview import Level, Snapshot, round_to_tick
from kite_sim.order_model import Order

# Depth already taken in this market step: (token, "ask"|"bid", price) -> quantity.
Taken = dict[tuple[int, str, float], int]


def auto_protection(price: float) -> float:
    """Percent of protection Kite applies for ``market_protection=-1`` (approximation)."""
    if price < 100:
        return 2.0
    if price < 500:
        return 1.0
    return 0.5


def limit_price(order: Order, snap: Snapshot, tick: float) -> float:
    """The worst price the order accepts right now."""
    if order.order_type in ("LIMIT", "SL"):
        return order.price
    pct = order.market_protection
    if pct == -1:
        pct = auto_protection(snap.last_price)
    if order.transaction_type == "BUY":
        cap = snap.last_price * (1 + pct / 100.0)
        if snap.upper_circuit:
            cap = min(cap, snap.upper_circuit)
        return round_to_tick(math.floor(cap / tick) * tick, tick)
    floor_ = snap.last_price * (1 - pct / 100.0)
    if snap.lower_circuit:
        floor_ = max(floor_, snap.lower_circuit)
    return round_to_tick(math.ceil(floor_ / tick) * tick, tick)


def fills(
    order: Order,
    snap: Snapshot,
    *,
    wanted: int,
    limit: float,
    lot: int,
    taken: Taken,
) -> list[tuple[int, float]]:
    """(quantity, price) fills for up to ``wanted`` of ``order``; records them in ``taken``."""
    buying = order.transaction_type == "BUY"
    levels: list[Level] = snap.asks if buying else snap.bids
    side = "ask" if buying else "bid"
    remaining = wanted
    out: list[tuple[int, float]] = []
    for level in levels:
        if remaining <= 0:
            break
        if (buying and level.price > limit + 1e-9) or (not buying and level.price < limit - 1e-9):
            break
        key = (order.instrument_token, side, level.price)
        available = level.quantity - taken.get(key, 0)
        qty = (min(available, remaining) // lot) * lot
        if qty <= 0:
            continue
        taken[key] = taken.get(key, 0) + qty
        out.append((qty, level.price))
        remaining -= qty
    return out


def trigger_hit(order: Order, last_price: float) -> bool:
    """Whether the last price has crossed a stop-loss order's trigger."""
    if order.transaction_type == "BUY":
        return last_price >= order.trigger_price
    return last_price <= order.trigger_price
