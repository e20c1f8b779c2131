"""Margin arithmetic (sans-I/O): what an order blocks, in Kite's shapes.

A deliberately simple SPAN-like model, good enough for the order engine's
funds check and for ``/margins/orders`` and ``/margins/basket`` to answer
with believable numbers: delivery equity needs the full value, intraday
equity a fifth, futures and short options a SPAN share of the notional plus
exposure, long options their premium.
"""

from __future__ import annotations

from typing import Any

from kite_sim.marketview import InstrumentLike

SPAN_RATE = {"NFO": 0.11, "BFO": 0.11, "CDS": 0.025, "BCD": 0.025, "MCX": 0.06}
EXPOSURE_RATE = {"NFO": 0.035, "BFO": 0.035, "CDS": 0.01, "BCD": 0.01, "MCX": 0.02}
MIS_FACTOR = 0.2
HEDGE_BENEFIT = 0.7  # share of the smaller opposite leg's margin a basket saves


def zero_charges() -> dict[str, Any]:
    """Kite's charges breakdown, all zero (charges are not modelled)."""
    return {
        "transaction_tax": 0.0,
        "transaction_tax_type": "stt",
        "exchange_turnover_charge": 0.0,
        "sebi_turnover_charge": 0.0,
        "brokerage": 0.0,
        "stamp_duty": 0.0,
        "gst": {"igst": 0.0, "cgst": 0.0, "sgst": 0.0, "total": 0.0},
        "total": 0.0,
    }


def is_option(inst: InstrumentLike) -> bool:
    """Whether ``inst`` is an option."""
    return inst.instrument_type in ("CE", "PE")


def is_derivative(inst: InstrumentLike) -> bool:
    """Whether ``inst`` trades on a derivatives segment."""
    return inst.instrument_type in ("FUT", "CE", "PE")


def order_margin(
    inst: InstrumentLike,
    transaction_type: str,
    quantity: int,
    price: float,
    product: str,
    *,
    variety: str = "regular",
    order_type: str = "LIMIT",
    trigger_price: float = 0.0,
) -> dict[str, Any]:
    """One element of ``POST /margins/orders``'s answer."""
    notional = abs(quantity) * price
    span = exposure = premium = 0.0
    var = 0.0
    if is_option(inst) and transaction_type == "BUY":
        premium = notional
    elif is_derivative(inst):
        base = notional if not is_option(inst) else abs(quantity) * max(inst.strike, price)
        span = base * SPAN_RATE.get(inst.exchange, 0.11)
        exposure = base * EXPOSURE_RATE.get(inst.exchange, 0.035)
    else:
        var = notional if product in ("CNC", "MTF") else notional * MIS_FACTOR
    total = span + exposure + premium + var
    if product in ("MIS", "CO") and is_derivative(inst) and not premium:
        span, exposure, total = span * 0.5, exposure * 0.5, (span + exposure) * 0.5
    charges = zero_charges()
    return {
        "type": "equity",
        "tradingsymbol": inst.tradingsymbol,
        "exchange": inst.exchange,
        "span": round(span, 2),
        "exposure": round(exposure, 2),
        "option_premium": round(premium, 2),
        "additional": 0.0,
        "bo": 0.0,
        "cash": 0.0,
        "var": round(var, 2),
        "pnl": {"realised": 0.0, "unrealised": 0.0},
        "leverage": 1.0 if product in ("CNC", "NRML") else 5.0,
        "charges": charges,
        "total": round(total, 2),
    }


def basket_margin(items: list[tuple[InstrumentLike, str, dict[str, Any]]]) -> dict[str, Any]:
    """``POST /margins/basket``: per-order margins, plus the basket's with hedging.

    ``items`` are (instrument, transaction_type, order_margin result). Opposite
    legs on the same underlying offset part of each other's SPAN.
    """
    orders = [m for _, _, m in items]
    initial = _sum_margins(orders)
    by_underlying: dict[str, dict[str, float]] = {}
    for inst, side, margin in items:
        if not is_derivative(inst):
            continue
        legs = by_underlying.setdefault(inst.name, {"BUY": 0.0, "SELL": 0.0})
        legs[side] += margin["span"] + margin["exposure"] + margin["option_premium"]
    benefit = sum(min(legs["BUY"], legs["SELL"]) * HEDGE_BENEFIT for legs in by_underlying.values())
    final = dict(initial)
    final["total"] = round(max(0.0, initial["total"] - benefit), 2)
    final["span"] = round(max(0.0, initial["span"] - benefit), 2)
    return {"initial": initial, "final": final, "orders": orders, "charges": zero_charges()}


def _sum_margins(orders: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("span", "exposure", "option_premium", "additional", "bo", "cash", "var", "total")
    out: dict[str, Any] = {"type": "", "tradingsymbol": "", "exchange": ""}
    for key in keys:
        out[key] = round(sum(float(o[key]) for o in orders), 2)
    out["pnl"] = {"realised": 0.0, "unrealised": 0.0}
    out["leverage"] = 0.0
    out["charges"] = zero_charges()
    return out


def segment_funds(
    opening: float, utilised: float, realised: float, unrealised: float
) -> dict[str, Any]:
    """One segment of ``GET /user/margins``."""
    cash = opening + realised
    net = cash - utilised + min(unrealised, 0.0)
    return {
        "enabled": True,
        "net": round(net, 2),
        "available": {
            "adhoc_margin": 0.0,
            "cash": round(cash, 2),
            "opening_balance": round(opening, 2),
            "live_balance": round(cash - utilised, 2),
            "collateral": 0.0,
            "intraday_payin": 0.0,
        },
        "utilised": {
            "debits": round(utilised, 2),
            "exposure": 0.0,
            "m2m_realised": round(realised, 2),
            "m2m_unrealised": round(unrealised, 2),
            "option_premium": 0.0,
            "payout": 0.0,
            "span": 0.0,
            "holding_sales": 0.0,
            "turnover": 0.0,
            "liquid_collateral": 0.0,
            "stock_collateral": 0.0,
            "delivery": 0.0,
        },
    }
