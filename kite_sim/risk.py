"""Risk and margin checks (sans-I/O): why Kite's RMS or the exchange rejects an order.

An order that passes parameter validation is accepted and recorded; these
checks then decide whether it is REJECTED, with a ``status_message``: product
not allowed for the segment, quantity off the lot size, price off the tick
grid or outside the circuit band, not enough holdings to sell delivery, not
enough funds for its margin.
"""

from __future__ import annotations

from collections.abc import Callable

from kite_sim.margins import is_derivative, order_margin
from kite_sim.marketview import InstrumentLike, Snapshot, on_tick_grid
from kite_sim.order_model import Order


def rejection_reason(
    order: Order,
    inst: InstrumentLike,
    snap: Snapshot,
    *,
    held_quantity: Callable[[], int],
    available_funds: Callable[[], float] | None,
) -> str | None:
    """Why the OMS or the exchange would reject ``order``, or None.

    ``held_quantity`` is asked only for delivery sells, ``available_funds``
    only when the funds check is on (None: off).
    """
    if is_derivative(inst) and order.product in ("CNC", "MTF"):
        return f"{order.product} is not allowed for derivatives. Use NRML or MIS."
    if not is_derivative(inst) and order.product == "NRML" and inst.exchange in ("NSE", "BSE"):
        return "NRML is not allowed for equity. Use CNC or MIS."
    lot = max(1, inst.lot_size)
    if order.quantity % lot:
        return f"Quantity should be a multiple of the lot size {lot}."
    tick = inst.tick_size or 0.05
    for name, value in (("price", order.price), ("trigger price", order.trigger_price)):
        if value and not on_tick_grid(value, tick):
            return (
                f"Tick size for this script is {tick:g}. Kindly enter {name} "
                "in the multiple of tick size for this script."
            )
    if order.stoploss and not on_tick_grid(order.stoploss, tick):
        return f"Tick size for this script is {tick:g}. Kindly enter the stoploss on the grid."
    for value in (order.price, order.trigger_price):
        if value and snap.upper_circuit and not (snap.lower_circuit <= value <= snap.upper_circuit):
            return (
                f"Your order price is outside the circuit limits "
                f"({snap.lower_circuit:g} - {snap.upper_circuit:g}). Try within the range."
            )
    selling_delivery = order.transaction_type == "SELL" and order.product in ("CNC", "MTF")
    if selling_delivery and held_quantity() < order.quantity:
        return "Insufficient holdings to sell. Check your holdings and open orders."
    if available_funds is not None:
        price = order.price or snap.last_price
        need = order_margin(inst, order.transaction_type, order.quantity, price, order.product)[
            "total"
        ]
        available = available_funds()
        if need > available:
            return (
                f"Insufficient funds. Required margin is {need:.2f} "
                f"but available margin is {available:.2f}."
            )
    return None
