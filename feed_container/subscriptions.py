"""Reconcile the pool with the desired subscriptions, continuously.

The API writes desired subscriptions to DynamoDB
(:class:`ticker_adapters.subscription_store.SubscriptionStore`); the
reconciler polls its cheap generation counter, re-reads the set only when
it changed, resolves the ATM window rules and hands the pool the whole
desired map (the pool diffs it, so only changes reach Kite).

ATM windows: for each rule, the underlying's spot instrument (the index, the
stock, or failing both its nearest future) is subscribed too, at least in
ltp mode, so its live price comes from the tick stream itself, per
underlying. Every ``recentre`` interval the window is recomputed around that
price with :meth:`InstrumentRegistry.atm_window` (N strikes either side, K
nearest live expiries): strikes entering are subscribed, strikes leaving are
unsubscribed unless another subscription wants them. Until the first tick,
the instruments dump's ``last_price`` stands in (when positive); with no
price at all the window is empty.

Hysteresis: a window stays centred where it was until its underlying has
moved ``hysteresis_steps`` strike steps (the nearest expiry's step around
the old centre) from the price it was centred on. Without it, a price
hovering on the midpoint between two strikes would unsubscribe and
resubscribe the edge strikes on every re-centre, leaving gaps in their
ticks; with it, each change of window costs a real move of the underlying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Protocol

from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType
from ticker_core.kite import wider_mode
from ticker_core.subscriptions import AtmWindowRule, DesiredSubscriptions

log = logging.getLogger("feed_container.subscriptions")


class DesiredSource(Protocol):
    """What the reconciler reads (the subscription store)."""

    def generation(self) -> int:
        """A counter every write increases."""
        ...

    def snapshot(self) -> DesiredSubscriptions:
        """The merged desired set with the generation it reflects."""
        ...


def spot_instruments(registry: InstrumentRegistry) -> dict[str, Instrument]:
    """Per underlying, the instrument whose price centres its ATM windows.

    The index (segment INDICES), else the NSE then BSE equity, else the
    nearest future.
    """
    rank: dict[str, tuple[int, Instrument]] = {}
    for i in registry.instruments:
        if i.segment == "INDICES":
            order = 0
        elif i.instrument_type is InstrumentType.EQ and i.exchange == "NSE":
            order = 1
        elif i.instrument_type is InstrumentType.EQ and i.exchange == "BSE":
            order = 2
        else:
            continue
        best = rank.get(i.underlying)
        if best is None or order < best[0]:
            rank[i.underlying] = (order, i)
    spots = {name: inst for name, (_, inst) in rank.items()}
    for underlying in {i.underlying for i in registry.instruments if i.is_future}:
        if underlying not in spots:
            futures = registry.futures(underlying)
            if futures:
                spots[underlying] = futures[0]
    return spots


def _window(
    registry: InstrumentRegistry, rule: AtmWindowRule, centre: float, as_of: datetime
) -> tuple[Instrument, ...]:
    return registry.atm_window(
        rule.underlying,
        centre,
        strikes_each_side=rule.strikes_each_side,
        expiries=rule.expiries,
        as_of=as_of,
    )


def strike_step(window: tuple[Instrument, ...]) -> float | None:
    """The smallest strike gap of the window's nearest expiry (None below two strikes)."""
    expiries = [i.expiry for i in window if i.expiry is not None]
    if not expiries:
        return None
    nearest = min(expiries)
    ks = sorted({i.strike for i in window if i.expiry == nearest})
    gaps = [high - low for low, high in pairwise(ks)]
    return min(gaps) if gaps else None


def resolve(
    desired: DesiredSubscriptions,
    registry: InstrumentRegistry | None,
    spots: Mapping[str, Instrument],
    prices: Mapping[int, float],
    as_of: datetime,
    *,
    centres: Mapping[str, float] | None = None,
    hysteresis_steps: float = 0.0,
) -> tuple[dict[int, str], set[int], dict[str, float]]:
    """The instruments to stream (token -> mode), the spot tokens whose prices matter,
    and the price each underlying's windows are now centred on.

    ``centres`` is the previous round's third value; with ``hysteresis_steps``
    > 0 a window keeps its centre until the price has moved that many strike
    steps from it.
    """
    out = dict(desired.instruments)
    watched: set[int] = set()
    new_centres: dict[str, float] = {}
    if registry is None:
        return out, watched, new_centres
    previous = centres or {}
    for rule in desired.atm_windows:
        spot = spots.get(rule.underlying)
        if spot is None:
            continue
        token = spot.instrument_token
        watched.add(token)
        out[token] = wider_mode(out.get(token, "ltp"), "ltp")
        price = prices.get(token)
        if price is None and spot.last_price > 0:
            price = spot.last_price
        if price is None:
            continue
        centre = new_centres.get(rule.underlying)
        if centre is None:
            centre = price
            held = previous.get(rule.underlying)
            if held is not None and hysteresis_steps > 0:
                step = strike_step(_window(registry, rule, held, as_of))
                if step is not None and abs(price - held) < hysteresis_steps * step:
                    centre = held
            new_centres[rule.underlying] = centre
        for option in _window(registry, rule, centre, as_of):
            t = option.instrument_token
            out[t] = wider_mode(out.get(t, rule.mode), rule.mode)
    return out, watched, new_centres


class Reconciler:
    """Polls the store, resolves windows on live prices, applies the result to the pool."""

    def __init__(
        self,
        source: DesiredSource,
        apply: Callable[[dict[int, str]], Any],
        *,
        prices: Mapping[int, float],
        watch: Callable[[set[int]], None],
        poll_seconds: float,
        recentre_seconds: float,
        hysteresis_steps: float = 0.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._apply = apply
        self._prices = prices
        self._watch = watch
        self._poll = poll_seconds
        self._recentre = recentre_seconds
        self._hysteresis = hysteresis_steps
        self._centres: dict[str, float] = {}
        self._now = now
        self._clock = clock
        self._registry: InstrumentRegistry | None = None
        self._spots: dict[str, Instrument] = {}
        self._snapshot: DesiredSubscriptions | None = None
        self._applied: dict[int, str] | None = None
        self._watched: set[int] = set()
        self.reconciled = asyncio.Event()
        self.rounds = 0
        #: The desired-set generation the pool was last reconciled with (None: none yet).
        self.applied_generation: int | None = None

    @property
    def registry(self) -> InstrumentRegistry | None:
        """The instruments windows are resolved against."""
        return self._registry

    def set_registry(self, registry: InstrumentRegistry) -> None:
        """Use a new day's instruments for ATM windows."""
        self._registry = registry
        self._spots = spot_instruments(registry)

    async def refresh(self) -> bool:
        """Re-read the store if its generation moved; True when it did."""
        generation = await asyncio.to_thread(self._source.generation)
        if self._snapshot is not None and generation == self._snapshot.generation:
            return False
        self._snapshot = await asyncio.to_thread(self._source.snapshot)
        log.info(
            "desired subscriptions changed",
            extra={
                "generation": self._snapshot.generation,
                "instruments": len(self._snapshot.instruments),
                "atm_windows": len(self._snapshot.atm_windows),
            },
        )
        return True

    def reconcile(self) -> dict[int, str] | None:
        """Resolve and apply; returns the desired map when it changed."""
        if self._snapshot is None:
            return None
        desired, watched, self._centres = resolve(
            self._snapshot,
            self._registry,
            self._spots,
            self._prices,
            self._now(),
            centres=self._centres,
            hysteresis_steps=self._hysteresis,
        )
        if watched != self._watched:
            self._watched = watched
            self._watch(watched)
        self.rounds += 1
        self.applied_generation = self._snapshot.generation
        if desired == self._applied:
            return None
        self._apply(desired)
        self._applied = desired
        self.reconciled.set()
        return desired

    async def run(self) -> None:
        """Until cancelled: poll every ``poll_seconds``, re-centre every ``recentre_seconds``."""
        next_poll = next_recentre = self._clock()
        while True:
            now = self._clock()
            try:
                if now >= next_poll:
                    next_poll = now + self._poll
                    if await self.refresh():
                        next_recentre = now
                if now >= next_recentre:
                    next_recentre = now + self._recentre
                    self.reconcile()
            except Exception as exc:  # the store is unreachable: keep what we have
                log.error("reconcile failed", extra={"error": repr(exc)})
            await asyncio.sleep(max(0.0, min(next_poll, next_recentre) - self._clock()))
