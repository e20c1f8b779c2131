"""What the sandbox asks the feed to stream: stocks, indices, futures and ATM option windows.

A client of the service would write these through the API; the sandbox
writes them straight to the subscription store the feed container
reconciles against. The set grows with the requested tick rate (a real feed
reaches high rates through many instruments, each ticking a few times a
second): more ATM windows, wider and over more expiries, until the estimate
reaches the target.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ticker_adapters.subscription_store import SubscriptionStore
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType
from ticker_core.subscriptions import MAX_EXPIRIES, AtmWindowRule

OWNER = "sandbox"
STOCKS = ("RELIANCE", "TCS", "HDFCBANK", "INFY", "SBIN")
INDEX_UNDERLYINGS = ("NIFTY", "BANKNIFTY", "FINNIFTY")
# The base windows (strikes each side, expiries); larger targets add and widen windows.
BASE_WINDOWS = (("NIFTY", 5, 2), ("BANKNIFTY", 5, 1))
WIDTHS = (5, 10, 20, 35, 50)


@dataclass(frozen=True)
class SubscriptionPlan:
    """Explicit instruments (token -> mode) plus ATM window rules."""

    instruments: dict[int, str]
    atm_windows: tuple[AtmWindowRule, ...]
    estimated_instruments: int
    labels: dict[int, str] = field(default_factory=dict)  # token -> tradingsymbol

    def describe(self) -> list[str]:
        """One line per kind, for the start-up banner."""
        kinds: dict[str, list[str]] = {}
        for token in self.instruments:
            kinds.setdefault(self.labels.get(token, "?").split(":")[0], []).append(
                self.labels.get(token, str(token)).split(":", 1)[-1]
            )
        lines = [f"{kind}: {', '.join(sorted(names))}" for kind, names in sorted(kinds.items())]
        lines += [
            f"ATM window {r.underlying}: {r.strikes_each_side} strikes each side, "
            f"{r.expiries} expir{'y' if r.expiries == 1 else 'ies'}, {r.mode}"
            for r in self.atm_windows
        ]
        return lines


def _window_size(registry: InstrumentRegistry, underlying: str, width: int, expiries: int) -> int:
    size = 0
    for expiry in registry.expiries(underlying)[:expiries]:
        chain = registry.option_chain(underlying, expiry)
        if chain is not None:
            size += 2 * min(2 * width + 1, len(chain.rows))
    return size


def _equity(registry: InstrumentRegistry, symbol: str) -> Instrument | None:
    return registry.by_symbol("NSE", symbol)


def _index(registry: InstrumentRegistry, underlying: str) -> Instrument | None:
    for instrument in registry.instruments:
        if instrument.segment == "INDICES" and instrument.underlying == underlying:
            return instrument
    return None


def _candidates(registry: InstrumentRegistry) -> Iterator[str]:
    """Underlyings with option chains, indices first."""
    yield from (u for u in INDEX_UNDERLYINGS if registry.expiries(u))
    seen = set(INDEX_UNDERLYINGS)
    for instrument in registry.instruments:
        u = instrument.underlying
        if instrument.instrument_type is InstrumentType.EQ and u not in seen:
            seen.add(u)
            if registry.expiries(u):
                yield u


def plan_subscriptions(
    registry: InstrumentRegistry, *, target_instruments: int = 0, mode: str = "full"
) -> SubscriptionPlan:
    """Stocks, indices and futures explicitly, option chains as ATM windows, to ``target``."""
    instruments: dict[int, str] = {}
    labels: dict[int, str] = {}

    def add(instrument: Instrument | None, kind: str) -> None:
        if instrument is not None:
            instruments[instrument.instrument_token] = mode
            labels[instrument.instrument_token] = f"{kind}:{instrument.tradingsymbol}"

    for symbol in STOCKS:
        add(_equity(registry, symbol), "stocks")
    for underlying in INDEX_UNDERLYINGS:
        add(_index(registry, underlying), "indices")
        futures = registry.futures(underlying)
        add(futures[0] if futures else None, "futures")
    for symbol in STOCKS[:2]:
        futures = registry.futures(symbol)
        add(futures[0] if futures else None, "futures")

    windows: dict[str, tuple[int, int]] = {
        u: (w, e) for u, w, e in BASE_WINDOWS if registry.expiries(u)
    }

    def estimate() -> int:
        return len(instruments) + sum(
            _window_size(registry, u, w, e) for u, (w, e) in windows.items()
        )

    for width in WIDTHS:
        for underlying in _candidates(registry):
            if estimate() >= target_instruments:
                break
            current = windows.get(underlying, (0, 0))
            expiries = min(MAX_EXPIRIES, 2 if width < 20 else 4, len(registry.expiries(underlying)))
            windows[underlying] = (max(width, current[0]), max(expiries, current[1]))
    rules = tuple(
        AtmWindowRule(underlying=u, strikes_each_side=w, expiries=e, mode=mode, owner=OWNER)
        for u, (w, e) in windows.items()
    )
    return SubscriptionPlan(instruments, rules, estimate(), labels)


def write_plan(store: SubscriptionStore, plan: SubscriptionPlan) -> None:
    """Write the plan to the store, as the API would on a client's behalf."""
    for token, mode in plan.instruments.items():
        store.subscribe(token, mode, OWNER)
    for rule in plan.atm_windows:
        store.put_atm_window(rule)
