"""Instruments named the two ways Kite clients name them: a token, or ``EXCHANGE:TRADINGSYMBOL``."""

from __future__ import annotations

from ticker_core.instruments import Instrument, InstrumentRegistry

INSTRUMENT_REF_PATTERN = r"^([1-9][0-9]{0,9}|[A-Z]{2,8}:[^\s:]{1,64})$"
"""A token (digits) or Kite's ``EXCHANGE:TRADINGSYMBOL`` (``NSE:INFY``, ``NFO:NIFTY...CE``)."""


def resolve_instrument(registry: InstrumentRegistry, ref: int | str) -> Instrument | None:
    """The instrument ``ref`` names, if today's instruments list it."""
    if isinstance(ref, int):
        return registry.by_token(ref)
    if ref.isdigit():
        return registry.by_token(int(ref))
    exchange, _, symbol = ref.partition(":")
    return registry.by_symbol(exchange, symbol)
