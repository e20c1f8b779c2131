"""Portfolio (sans-I/O): positions from the day's trades, margin blocked, holdings, auctions.

Positions are built from trades alone (the simulator carries no overnight
positions, so ``net`` and ``day`` are the same rows), marked to the last
price. The margin an account has blocked is what its open positions and live
orders need by :func:`kite_sim.margins.order_margin`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from kite_sim.margins import order_margin
from kite_sim.marketview import InstrumentLike, Snapshot
from kite_sim.order_model import LIVE_STATUSES, Order, Trade


def position_rows(
    trades: Iterable[Trade], snapshot: Callable[[int], Snapshot]
) -> list[dict[str, Any]]:
    """``GET /portfolio/positions`` rows, one per (exchange, tradingsymbol, product)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for trade in trades:
        o = trade.order
        key = (o.exchange, o.tradingsymbol, o.product)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _empty_position(o)
        side = "buy" if o.transaction_type == "BUY" else "sell"
        row[f"{side}_quantity"] += trade.quantity
        row[f"{side}_value"] += trade.quantity * trade.price
    out = []
    for row in rows.values():
        _finish_position(row, snapshot(row["instrument_token"]))
        out.append(row)
    return out


def blocked_margin(
    rows: Iterable[dict[str, Any]],
    orders: Iterable[Order],
    by_token: Callable[[int], InstrumentLike | None],
    snapshot: Callable[[int], Snapshot],
) -> float:
    """Margin blocked by open positions (``rows``) and live entry orders."""
    total = 0.0
    for row in rows:
        inst = by_token(row["instrument_token"])
        qty = int(row["quantity"])
        if inst is None or qty == 0:
            continue
        side = "BUY" if qty > 0 else "SELL"
        price = row["average_price"] or row["last_price"]
        total += order_margin(inst, side, abs(qty), price, row["product"])["total"]
    for order in orders:
        if order.status in LIVE_STATUSES and order.parent_order_id is None:
            inst = by_token(order.instrument_token)
            if inst is None:
                continue
            price = order.price or snapshot(order.instrument_token).last_price
            total += order_margin(
                inst, order.transaction_type, order.pending_quantity, price, order.product
            )["total"]
    return total


def _empty_position(o: Order) -> dict[str, Any]:
    return {
        "tradingsymbol": o.tradingsymbol,
        "exchange": o.exchange,
        "instrument_token": o.instrument_token,
        "product": o.product,
        "quantity": 0,
        "overnight_quantity": 0,
        "multiplier": 1,
        "average_price": 0.0,
        "close_price": 0.0,
        "last_price": 0.0,
        "value": 0.0,
        "pnl": 0.0,
        "m2m": 0.0,
        "unrealised": 0.0,
        "realised": 0.0,
        "buy_quantity": 0,
        "buy_price": 0.0,
        "buy_value": 0.0,
        "buy_m2m": 0.0,
        "sell_quantity": 0,
        "sell_price": 0.0,
        "sell_value": 0.0,
        "sell_m2m": 0.0,
        "day_buy_quantity": 0,
        "day_buy_price": 0.0,
        "day_buy_value": 0.0,
        "day_sell_quantity": 0,
        "day_sell_price": 0.0,
        "day_sell_value": 0.0,
    }


def _finish_position(row: dict[str, Any], snap: Snapshot) -> None:
    bq, sq = row["buy_quantity"], row["sell_quantity"]
    bv, sv = row["buy_value"], row["sell_value"]
    row["buy_price"] = round(bv / bq, 4) if bq else 0.0
    row["sell_price"] = round(sv / sq, 4) if sq else 0.0
    net = bq - sq
    row["quantity"] = net
    ltp = snap.last_price
    row["last_price"] = ltp
    row["close_price"] = snap.close
    closed = min(bq, sq)
    realised = closed * (row["sell_price"] - row["buy_price"]) if closed else 0.0
    if net > 0:
        avg = row["buy_price"]
    elif net < 0:
        avg = row["sell_price"]
    else:
        avg = 0.0
    unrealised = net * (ltp - avg) if net else 0.0
    row["average_price"] = avg
    row["value"] = round(sv - bv, 2)
    row["realised"] = round(realised, 2)
    row["unrealised"] = round(unrealised, 2)
    row["pnl"] = round(sv - bv + net * ltp, 2)
    row["m2m"] = row["pnl"]
    row["buy_m2m"] = round(bv, 2)
    row["sell_m2m"] = round(sv, 2)
    for side in ("buy", "sell"):
        row[f"day_{side}_quantity"] = row[f"{side}_quantity"]
        row[f"day_{side}_price"] = row[f"{side}_price"]
        row[f"day_{side}_value"] = round(row[f"{side}_value"], 2)
        row[f"{side}_value"] = round(row[f"{side}_value"], 2)


@dataclass(frozen=True)
class AuctionLot:
    """Shares an account may sell in one of the exchange's auctions (short deliveries)."""

    auction_number: str
    instrument_token: int
    quantity: int


def holding_row(
    inst: InstrumentLike, quantity: int, average: float, snap: Snapshot, today: date
) -> dict[str, Any]:
    """One ``GET /portfolio/holdings`` row: ``quantity`` held at ``average``, marked to ``snap``.

    The simulator's holdings are delivery holdings only: nothing authorised,
    pledged, short or bought with margin trading funding (``mtf`` all zero).
    """
    row = _holding_fields(inst, quantity, average, snap, today)
    row.update(
        used_quantity=0,
        authorisation={},
        short_quantity=0,
        mtf={
            "quantity": 0,
            "used_quantity": 0,
            "average_price": 0,
            "value": 0,
            "initial_margin": 0,
        },
    )
    return row


def auction_row(
    lot: AuctionLot, inst: InstrumentLike, average: float, snap: Snapshot, today: date
) -> dict[str, Any]:
    """One ``GET /portfolio/holdings/auctions`` row: a holding that an auction can buy."""
    row = _holding_fields(inst, lot.quantity, average, snap, today)
    row["auction_number"] = lot.auction_number
    return row


def _holding_fields(
    inst: InstrumentLike, quantity: int, average: float, snap: Snapshot, today: date
) -> dict[str, Any]:
    return {
        "tradingsymbol": inst.tradingsymbol,
        "exchange": inst.exchange,
        "instrument_token": inst.instrument_token,
        "isin": f"INE{inst.exchange_token:06d}01",
        "product": "CNC",
        "price": 0,
        "quantity": quantity,
        "t1_quantity": 0,
        "realised_quantity": quantity,
        "authorised_quantity": 0,
        "authorised_date": f"{today:%Y-%m-%d} 00:00:00",
        "opening_quantity": quantity,
        "collateral_quantity": 0,
        "collateral_type": "",
        "discrepancy": False,
        "average_price": average,
        "last_price": snap.last_price,
        "close_price": snap.close,
        "pnl": round((snap.last_price - average) * quantity, 2),
        "day_change": round(snap.last_price - snap.close, 2),
        "day_change_percentage": (
            round((snap.last_price - snap.close) * 100 / snap.close, 4) if snap.close else 0.0
        ),
    }
