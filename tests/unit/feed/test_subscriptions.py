"""Resolving desired subscriptions: explicit instruments, ATM windows on live prices."""

from __future__ import annotations

from datetime import UTC, date, datetime

from feed_container.subscriptions import Reconciler, resolve, spot_instruments, strike_step
from testkit.factories import chain, index_instrument
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType
from ticker_core.subscriptions import AtmWindowRule, DesiredSubscriptions

EXPIRY = date(2026, 12, 29)
AS_OF = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)


def registry() -> InstrumentRegistry:
    crude = Instrument(
        9999 << 8 | 7, 9999, "CRUDE26DECFUT", "CRUDE", 6000.0, EXPIRY, 0.0, 1.0, 100,
        InstrumentType.FUT, "MCX-FUT", "MCX",
    )  # fmt: skip
    strikes = [float(k) for k in range(23_800, 24_250, 50)]
    options = chain("NIFTY", EXPIRY, strikes, first_exchange_token=5001, future=False)
    return InstrumentRegistry([index_instrument("NIFTY 50", 1001), *options, crude])


def call(reg: InstrumentRegistry, strike: float) -> Instrument:
    return next(
        i for i in reg.instruments if i.strike == strike and i.instrument_type is InstrumentType.CE
    )


def strikes(reg: InstrumentRegistry, tokens: dict[int, str]) -> list[float]:
    return sorted({i.strike for t in tokens if (i := reg.by_token(t)) is not None and i.is_option})


def test_a_window_is_centred_on_the_spot_price_and_includes_the_spot() -> None:
    # Given an ATM rule and an explicit subscription to one of its options in ltp
    reg = registry()
    spots = spot_instruments(reg)
    ce_24000 = call(reg, 24_000.0)
    desired = DesiredSubscriptions(
        1, {ce_24000.instrument_token: "ltp"}, (AtmWindowRule("NIFTY", 1, 1, "full", "o"),)
    )
    # When resolved at a NIFTY price of 24,010
    out, watched, _ = resolve(desired, reg, spots, {256265: 24_010.0}, AS_OF)
    # Then the spot is streamed (ltp) and watched, 23950-24050 are in full, the explicit one widened
    assert watched == {256265}
    assert out[256265] == "ltp"
    assert strikes(reg, out) == [23_950.0, 24_000.0, 24_050.0]
    assert out[ce_24000.instrument_token] == "full"
    assert len(out) == 1 + 6
    # And at 24,160 the window moves up and the old strikes leave
    moved, _, _ = resolve(desired, reg, spots, {256265: 24_160.0}, AS_OF)
    assert strikes(reg, moved) == [
        24_000.0,
        24_100.0,
        24_150.0,
        24_200.0,
    ]  # 24000 CE stays: explicit
    assert moved[ce_24000.instrument_token] == "ltp"


def test_without_a_price_the_window_is_empty_and_futures_stand_in_for_a_missing_spot() -> None:
    reg = registry()
    spots = spot_instruments(reg)
    assert spots["CRUDE"].instrument_type is InstrumentType.FUT
    desired = DesiredSubscriptions(1, {}, (AtmWindowRule("NIFTY", 2, 1, "quote", "o"),))
    out, _, centres = resolve(desired, reg, spots, {}, AS_OF)
    assert out == {256265: "ltp"}
    assert centres == {}


def test_hysteresis_holds_a_window_until_the_price_has_really_moved() -> None:
    # Given a NIFTY window (step 50) centred at 24,010 with half a step of hysteresis
    reg = registry()
    spots = spot_instruments(reg)
    desired = DesiredSubscriptions(1, {}, (AtmWindowRule("NIFTY", 1, 1, "full", "o"),))
    centres: dict[str, float] = {}
    seen = []
    # When the price hovers around the 24,025 midpoint, then really moves, then hovers back
    for price in (24_010.0, 24_026.0, 24_024.0, 24_034.0, 24_036.0, 24_020.0, 24_012.0, 24_010.0):
        out, _, centres = resolve(
            desired, reg, spots, {256265: price}, AS_OF, centres=centres, hysteresis_steps=0.5
        )
        seen.append((price, centres["NIFTY"], strikes(reg, out)[1]))
    # Then the window moves only once the price is 25 points from where it was centred
    assert seen == [
        (24_010.0, 24_010.0, 24_000.0),
        (24_026.0, 24_010.0, 24_000.0),  # past the midpoint, 16 from the centre: held
        (24_024.0, 24_010.0, 24_000.0),
        (24_034.0, 24_010.0, 24_000.0),  # 24 from the centre: held
        (24_036.0, 24_036.0, 24_050.0),  # 26: re-centred
        (24_020.0, 24_036.0, 24_050.0),  # back below the midpoint, 16 away: held
        (24_012.0, 24_036.0, 24_050.0),  # 24 away: held
        (24_010.0, 24_010.0, 24_000.0),  # 26 away: re-centred
    ]


def test_without_hysteresis_every_midpoint_crossing_moves_the_window() -> None:
    reg = registry()
    spots = spot_instruments(reg)
    desired = DesiredSubscriptions(1, {}, (AtmWindowRule("NIFTY", 1, 1, "full", "o"),))
    centres: dict[str, float] = {}
    atm = []
    for price in (24_024.0, 24_026.0, 24_024.0):
        out, _, centres = resolve(desired, reg, spots, {256265: price}, AS_OF, centres=centres)
        atm.append(strikes(reg, out)[1])
    assert atm == [24_000.0, 24_050.0, 24_000.0]


def test_strike_step_is_the_nearest_expirys_smallest_gap() -> None:
    # Given a near expiry 50 apart and a later one 100 apart
    near_strikes = [23_950.0, 24_000.0, 24_050.0]
    near = chain("NIFTY", EXPIRY, near_strikes, first_exchange_token=100, future=False)
    later = date(2027, 1, 26)
    far = chain("NIFTY", later, [23_900.0, 24_000.0], first_exchange_token=200, future=False)
    # Then the step is the near expiry's, whatever the order, and needs two strikes
    assert strike_step((*far, *near)) == 50.0
    assert strike_step(tuple(far)) == 100.0
    assert strike_step(tuple(near[:2])) is None  # one strike: a call and a put
    assert strike_step(()) is None


class Store:
    def __init__(self, desired: DesiredSubscriptions) -> None:
        self.desired = desired
        self.snapshots = 0

    def generation(self) -> int:
        return self.desired.generation

    def snapshot(self) -> DesiredSubscriptions:
        self.snapshots += 1
        return self.desired


async def test_the_reconciler_rereads_only_on_a_new_generation_and_applies_only_changes() -> None:
    # Given a store and a reconciler feeding a recorder
    store = Store(DesiredSubscriptions(1, {11: "quote"}))
    applied: list[dict[int, str]] = []
    prices: dict[int, float] = {}
    watched: list[set[int]] = []
    rec = Reconciler(
        store,
        applied.append,
        prices=prices,
        watch=watched.append,
        poll_seconds=1,
        recentre_seconds=1,
        now=lambda: AS_OF,
    )
    rec.set_registry(registry())
    # When it polls twice with no change
    assert await rec.refresh()
    rec.reconcile()
    assert not await rec.refresh()
    rec.reconcile()
    # Then it read once and applied once
    assert store.snapshots == 1
    assert applied == [{11: "quote"}]
    # And a new generation with an ATM rule applies the window once a price arrives
    store.desired = DesiredSubscriptions(
        2, {11: "quote"}, (AtmWindowRule("NIFTY", 1, 1, "ltp", "o"),)
    )
    assert await rec.refresh()
    rec.reconcile()
    assert applied[-1] == {11: "quote", 256265: "ltp"}
    assert watched == [{256265}]
    prices[256265] = 24_000.0
    rec.reconcile()
    assert len(applied[-1]) == 2 + 6
    assert rec.reconciled.is_set()


async def test_the_reconciler_carries_window_centres_between_rounds() -> None:
    # Given a reconciler with half a step of hysteresis and a centred NIFTY window
    store = Store(DesiredSubscriptions(1, {}, (AtmWindowRule("NIFTY", 1, 1, "full", "o"),)))
    applied: list[dict[int, str]] = []
    prices = {256265: 24_010.0}
    rec = Reconciler(
        store,
        applied.append,
        prices=prices,
        watch=lambda _: None,
        poll_seconds=1,
        recentre_seconds=1,
        hysteresis_steps=0.5,
        now=lambda: AS_OF,
    )
    rec.set_registry(registry())
    await rec.refresh()
    rec.reconcile()
    # When the price wanders across the midpoint and back, re-centring each time
    for price in (24_026.0, 24_024.0, 24_030.0, 24_021.0):
        prices[256265] = price
        rec.reconcile()
    # Then nothing was re-applied; a real move applies the new window once
    assert len(applied) == 1
    prices[256265] = 24_040.0
    rec.reconcile()
    assert len(applied) == 2
    assert strikes(rec.registry or registry(), applied[-1]) == [24_000.0, 24_050.0, 24_100.0]
