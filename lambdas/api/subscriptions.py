"""Desired subscriptions over the API (logic): read, change within capacity, and status.

A change is checked whole before anything is written: every instrument must
be in today's instruments (by token or ``EXCHANGE:TRADINGSYMBOL``) and not
expired, every ATM window's underlying must have option chains, and the
desired set after the change must fit the active accounts' streaming
capacity (each account: Kite's 3 connections x 3000 instruments). The count
is of distinct instruments, ATM windows resolved at the reference price the
feed starts from (the underlying's price in the instruments dump); a change
that does not grow the set is always allowed, so a set left over capacity
by a retired account can still be cut down. Entries are owned by the caller
(their Cognito ``sub``): one user's withdrawal never cuts another's stream.

The feed polls the store's generation and applies a change within its poll
interval; :meth:`SubscriptionService.status` reports what it actually
streams, from the status record it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from lambdas.api.auth import Principal
from lambdas.api.errors import CapacityExceededError, FieldProblem, ValidationFailedError
from lambdas.api.instrument_refs import resolve_instrument
from lambdas.api.subscription_models import (
    AccountStreamingStatus,
    AtmWindow,
    Capacity,
    FeedReport,
    OwnerMode,
    SubscribedInstrument,
    SubscriptionChangeRequest,
    Subscriptions,
    SubscriptionStatus,
)
from ticker_adapters.feed_status import FeedStatus
from ticker_adapters.subscription_store import StoredSubscriptions, SubscriptionChange
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType
from ticker_core.kite import (
    MAX_CONNECTIONS_PER_API_KEY,
    MAX_INSTRUMENT_TOKEN,
    MAX_INSTRUMENTS_PER_CONNECTION,
    wider_mode,
)
from ticker_core.subscriptions import AtmWindowRule, SubscriptionError

SPOT_RANK = {("INDICES", None): 0, ("NSE", InstrumentType.EQ): 1, ("BSE", InstrumentType.EQ): 2}


class Store(Protocol):
    """The desired-subscriptions store (``ticker_adapters.subscription_store``)."""

    def generation(self) -> int:
        """The change counter."""
        ...

    def entries(self) -> StoredSubscriptions:
        """Every owner's entries."""
        ...

    def change(self, change: SubscriptionChange) -> int:
        """Apply one owner's change."""
        ...


@dataclass(frozen=True)
class StreamingLimits:
    """Kite's WebSocket limits per account (API key)."""

    connections_per_account: int = MAX_CONNECTIONS_PER_API_KEY
    instruments_per_connection: int = MAX_INSTRUMENTS_PER_CONNECTION

    def capacity(self, accounts: int) -> int:
        """Instruments ``accounts`` accounts can stream at once."""
        return accounts * self.connections_per_account * self.instruments_per_connection


def _possible_token(ref: int | str) -> bool:
    """Whether ``ref`` is a token the store could hold (listed today or not)."""
    token = ref if isinstance(ref, int) else int(ref) if ref.isdigit() else 0
    return 0 < token <= MAX_INSTRUMENT_TOKEN


def _spot_rank(instrument: Instrument) -> int | None:
    if instrument.segment == "INDICES":
        return SPOT_RANK["INDICES", None]
    return SPOT_RANK.get((instrument.exchange, instrument.instrument_type))


class ReferencePrices:
    """Per underlying: the instrument the feed centres its windows on, and its dump price.

    The index, else the NSE then BSE equity, else the nearest future (the
    feed's rule); built once per registry.
    """

    def __init__(self, registry: InstrumentRegistry) -> None:
        self.registry = registry
        best: dict[str, tuple[int, Instrument]] = {}
        for i in registry.instruments:
            rank = _spot_rank(i)
            if rank is None:
                continue
            held = best.get(i.underlying)
            if held is None or rank < held[0]:
                best[i.underlying] = (rank, i)
        self._spots = {name: inst for name, (_, inst) in best.items()}

    def spot(self, underlying: str) -> Instrument | None:
        """The underlying's price instrument."""
        spot = self._spots.get(underlying)
        if spot is None:
            futures = self.registry.futures(underlying)
            spot = futures[0] if futures else None
        return spot

    def price(self, underlying: str, as_of: datetime) -> float | None:
        """The dump's price of the spot, else the middle strike of the nearest chain."""
        spot = self.spot(underlying)
        if spot is not None and spot.last_price > 0:
            return spot.last_price
        expiries = self.registry.expiries(underlying)
        live = [e for e in expiries if e >= as_of.date()]
        chain = self.registry.option_chain(underlying, live[0]) if live else None
        if chain is None or not chain.strikes:
            return None
        return chain.strikes[len(chain.strikes) // 2]


def planned_tokens(
    instruments: Iterable[int],
    rules: Iterable[AtmWindowRule],
    prices: ReferencePrices,
    as_of: datetime,
) -> set[int]:
    """Distinct instruments the feed would stream: explicit ones, windows and their spots."""
    tokens = set(instruments)
    for rule in rules:
        spot = prices.spot(rule.underlying)
        if spot is not None:
            tokens.add(spot.instrument_token)
        price = prices.price(rule.underlying, as_of)
        if price is None:
            continue
        window = prices.registry.atm_window(
            rule.underlying,
            price,
            strikes_each_side=rule.strikes_each_side,
            expiries=rule.expiries,
            as_of=as_of,
        )
        tokens.update(i.instrument_token for i in window)
    return tokens


def _checked_instruments(
    registry: InstrumentRegistry,
    refs: Sequence[int | str],
    field: str,
    today: date,
    problems: list[FieldProblem],
) -> list[Instrument | None]:
    found: list[Instrument | None] = []
    for n, ref in enumerate(refs):
        instrument = resolve_instrument(registry, ref)
        if instrument is None:
            problems.append(
                FieldProblem(f"{field}[{n}]", "unknown_instrument", f"{ref} is not listed today")
            )
        elif instrument.expiry is not None and instrument.expiry < today:
            problems.append(
                FieldProblem(f"{field}[{n}]", "expired", f"{ref} expired on {instrument.expiry}")
            )
            instrument = None
        found.append(instrument)
    return found


class SubscriptionService:
    """The routes' logic over the store, the registry, the accounts and the feed's record."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Callable[[], InstrumentRegistry],
        active_accounts: Callable[[], int],
        feed_statuses: Callable[[], list[FeedStatus]],
        limits: StreamingLimits,
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._registry = registry
        self._active_accounts = active_accounts
        self._feed_statuses = feed_statuses
        self._limits = limits
        self._now = now
        self._prices: ReferencePrices | None = None

    def _reference(self) -> ReferencePrices:
        registry = self._registry()
        if self._prices is None or self._prices.registry is not registry:
            self._prices = ReferencePrices(registry)
        return self._prices

    def _capacity(self, planned: int, accounts: int | None = None) -> Capacity:
        count = self._active_accounts() if accounts is None else accounts
        return Capacity(
            accounts=count,
            connections_per_account=self._limits.connections_per_account,
            instruments_per_connection=self._limits.instruments_per_connection,
            capacity=self._limits.capacity(count),
            planned=planned,
        )

    def read(self) -> Subscriptions:
        """Every entry, merged per instrument, with the capacity it is planned against."""
        stored = self._store.entries()
        prices = self._reference()
        return self._view(stored, prices)

    def _view(self, stored: StoredSubscriptions, prices: ReferencePrices) -> Subscriptions:
        registry = prices.registry
        by_token: dict[int, list[OwnerMode]] = {}
        for entry in stored.instruments:
            by_token.setdefault(entry.token, []).append(
                OwnerMode(owner=entry.owner, mode=entry.mode)  # type: ignore[arg-type]
            )
        instruments = []
        for token in sorted(by_token):
            requests = sorted(by_token[token], key=lambda r: r.owner)
            mode = requests[0].mode
            for r in requests[1:]:
                mode = wider_mode(mode, r.mode)  # type: ignore[assignment]
            listed = registry.by_token(token)
            instruments.append(
                SubscribedInstrument(
                    instrument_token=token,
                    exchange=listed.exchange if listed else None,
                    tradingsymbol=listed.tradingsymbol if listed else None,
                    mode=mode,
                    requests=requests,
                )
            )
        windows = [
            AtmWindow(
                underlying=r.underlying,
                strikes_each_side=r.strikes_each_side,
                expiries=r.expiries,
                mode=r.mode,  # type: ignore[arg-type]
                owner=r.owner,
            )
            for r in sorted(stored.atm_windows, key=lambda r: (r.underlying, r.owner))
        ]
        planned = planned_tokens(by_token, stored.atm_windows, prices, self._now())
        return Subscriptions(
            generation=stored.generation,
            instruments=instruments,
            atm_windows=windows,
            capacity=self._capacity(len(planned)),
        )

    def change(self, caller: Principal, request: SubscriptionChangeRequest) -> Subscriptions:
        """Check the whole change, refuse it over capacity, else write it; the new state."""
        prices = self._reference()
        registry = prices.registry
        now = self._now()
        problems: list[FieldProblem] = []
        subscribe = _checked_instruments(
            registry, [r.instrument for r in request.subscribe], "subscribe", now.date(), problems
        )
        unsubscribe = _checked_instruments(
            registry, list(request.unsubscribe), "unsubscribe", now.date(), []
        )
        for n, ref in enumerate(request.unsubscribe):
            # Withdrawing needs only the token: an instrument gone from today's dump can go too.
            if unsubscribe[n] is None and not _possible_token(ref):
                problems.append(
                    FieldProblem(f"unsubscribe[{n}]", "unknown_instrument", f"{ref} is not listed")
                )
        for n, window in enumerate(request.atm_windows):
            if not registry.expiries(window.underlying):
                problems.append(
                    FieldProblem(
                        f"atm_windows[{n}].underlying",
                        "no_option_chain",
                        f"{window.underlying} has no listed options",
                    )
                )
        if problems:
            raise ValidationFailedError(problems)

        change = SubscriptionChange(
            owner=caller.user_id,
            subscribe=tuple(
                (i.instrument_token, r.mode)
                for i, r in zip(subscribe, request.subscribe, strict=True)
                if i is not None
            ),
            unsubscribe=tuple(
                i.instrument_token if i is not None else int(ref)
                for i, ref in zip(unsubscribe, request.unsubscribe, strict=True)
            ),
            atm_windows=tuple(
                AtmWindowRule(w.underlying, w.strikes_each_side, w.expiries, w.mode, caller.user_id)
                for w in request.atm_windows
            ),
            remove_atm_windows=tuple(request.remove_atm_windows),
        )
        stored = self._store.entries()
        before = planned_tokens(
            (e.token for e in stored.instruments), stored.atm_windows, prices, now
        )
        after_entries, after_rules = apply_change(stored, change)
        after = planned_tokens(after_entries, after_rules, prices, now)
        accounts = self._active_accounts()
        capacity = self._limits.capacity(accounts)
        if len(after) > capacity and len(after) > len(before):
            raise CapacityExceededError(
                f"The subscriptions would need {len(after)} instruments; the {accounts} active "
                f"account(s) stream at most {capacity} "
                f"({self._limits.connections_per_account} connections x "
                f"{self._limits.instruments_per_connection} instruments each).",
                extra={
                    "planned": len(after),
                    "current": len(before),
                    "capacity": capacity,
                    "accounts": accounts,
                    "connections_per_account": self._limits.connections_per_account,
                    "instruments_per_connection": self._limits.instruments_per_connection,
                },
            )
        if (
            change.subscribe
            or change.unsubscribe
            or change.atm_windows
            or change.remove_atm_windows
        ):
            try:
                self._store.change(change)
            except SubscriptionError as exc:  # the store's own checks: never a 500
                problem = FieldProblem("body", "subscription", str(exc))
                raise ValidationFailedError([problem]) from exc
        return self._view(self._store.entries(), prices)

    def status(self) -> SubscriptionStatus:
        """The feed's latest record against the store's current generation."""
        generation = self._store.generation()
        records = self._feed_statuses()
        if not records:
            return SubscriptionStatus(desired_generation=generation, feed=None, instances=0)
        latest = records[0]
        now = self._now()
        return SubscriptionStatus(
            desired_generation=generation,
            feed=FeedReport(
                instance=latest.instance,
                reported_at=latest.written_at,
                age_seconds=round(latest.age_seconds(now), 3),
                stale=latest.is_stale(now),
                generation=latest.generation,
                desired=latest.desired,
                streaming=latest.streaming,
                not_fitted=latest.not_fitted,
                not_fitted_sample=list(latest.not_fitted_sample),
                accounts=[
                    AccountStreamingStatus(
                        account_id=a.account_id,
                        connections_open=a.connections_open,
                        connections=len(a.connections),
                        instruments=a.instruments,
                        streaming=a.streaming,
                    )
                    for a in latest.accounts
                ],
                accounts_waiting_for_login=list(latest.accounts_waiting),
            ),
            instances=len(records),
        )


def apply_change(
    stored: StoredSubscriptions, change: SubscriptionChange
) -> tuple[set[int], list[AtmWindowRule]]:
    """The distinct tokens and the rules the store would hold after ``change`` (pure)."""
    entries: dict[tuple[int, str], str] = {(e.token, e.owner): e.mode for e in stored.instruments}
    for token in change.unsubscribe:
        entries.pop((token, change.owner), None)
    for token, mode in change.subscribe:
        entries[(token, change.owner)] = mode
    rules: dict[tuple[str, str], AtmWindowRule] = {
        (r.underlying, r.owner): r for r in stored.atm_windows
    }
    for underlying in change.remove_atm_windows:
        rules.pop((underlying, change.owner), None)
    for rule in change.atm_windows:
        rules[(rule.underlying, rule.owner)] = rule
    return {token for token, _ in entries}, list(rules.values())
