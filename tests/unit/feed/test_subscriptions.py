"""Resolving desired subscriptions: explicit instruments, ATM windows on live prices."""

from __future__ import annotations

from datetime import UTC, date, datetime

from feed_container.subscriptions import Reconciler, resolve, spot_instruments
from lambdas.common.subscription_store import AtmWindowRule, DesiredSubscriptions
from tests.factories import chain, index_instrument
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType

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
    out, watched = resolve(desired, reg, spots, {256265: 24_010.0}, AS_OF)
    # Then the spot is streamed (ltp) and watched, 23950-24050 are in full, the explicit one widened
    assert watched == {256265}
    assert out[256265] == "ltp"
    assert strikes(reg, out) == [23_950.0, 24_000.0, 24_050.0]
    assert out[ce_24000.instrument_token] == "full"
    assert len(out) == 1 + 6
    # And at 24,160 the window moves up and the old strikes leave
    moved, _ = resolve(desired, reg, spots, {256265: 24_160.0}, AS_OF)
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
    out, _ = resolve(desired, reg, spots, {}, AS_OF)
    assert out == {256265: "ltp"}


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
