"""Implied volatility and Greeks for every option tick of a Kinesis batch, vectorized.

Flow of one batch
-----------------
1. **Decode.** Each Kinesis record is de-aggregated and each user record
   decoded as a ``tick/1`` record (orjson, then ticker_core's ``check_tick``:
   the schema's every rule and bound, so nothing later fails on one tick). A
   corrupt aggregate or a tick that fails any rule makes its Kinesis record a
   batch item failure (Powertools partial batch response), counted by reason;
   the good ticks of that record are still used, as are all other records.
   Ticks are kept as columns, in stream order.
2. **Join.** Tokens are looked up in the instruments snapshot with one
   binary search over the batch (:class:`RegistryIndex`). Options (CE/PE)
   become rows; futures are inputs for forwards; indices and equities are
   read and otherwise ignored (Black-76 needs the forward, and a forward
   built from spot would ignore dividends). A token not in the snapshot gives
   no row and is counted: ``greeks.v1.json`` requires expiry, strike and
   option type, which only the snapshot knows, so an ``unknown_instrument``
   row cannot be written honestly.
3. **Forward** per (underlying, expiry), in this order of preference:

   * ``future``: the listed future of that underlying and expiry, as of the
     option tick: its latest price at or before the tick in stream order,
     else its first price after it in the batch;
   * ``parity``: put-call parity over the batch's options of that group, at
     the strikes nearest the money, from each option's latest price in the
     batch (:func:`ticker_core.options.forward_from_parity`);
   * ``carried``: the last future/parity forward of that group seen by this
     execution environment, if it is at most ``carry_max_age_s`` older than
     the tick (a forward from before a gap is not today's forward);
   * ``none``: no forward; the row's numbers are null with ``no_forward``.

4. **Math**, over the whole batch at once: time to expiry in calendar
   seconds from the tick's exchange timestamp (else ``received_at``) to 15:30
   IST on the expiry date, over 365 x 86400; ``implied_vol`` then ``greeks``
   (Black-76 on the forward, rate from settings). The option price is the
   tick's ``last_price``: every feed mode carries it, and the schema names it;
   a mid from depth exists only in full mode and would make the Greeks of one
   instrument depend on its subscription mode.
5. **Rows** per ``greeks.v1.json``: ``source`` is the tick's Kinesis identity,
   so a replayed batch yields rows with the same identities and persistence
   writes them once. Bad elements are rows too: null numbers, reason string.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lambdas.common.kinesis_batch import consume_kinesis_event, loads_user_record
from ticker_adapters.instrument_snapshots import InstrumentSnapshot
from ticker_core.expiry_arrays import expiry_epoch_seconds, year_fractions
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType
from ticker_core.options import (
    OK,
    Greeks,
    Reason,
    forward_from_parity,
    greeks,
    implied_vol,
    reason_labels,
)
from ticker_core.records import (
    KinesisUserRecord,
    RecordBatcher,
    check_tick,
    encode_greeks,
)
from ticker_core.records.batching import PutRecordsBatch
from ticker_core.records.limits import DEFAULT_AGGREGATE_BYTES

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KIND_OTHER, KIND_FUTURE, KIND_CALL, KIND_PUT = 0, 1, 2, 3
_KINDS = {
    InstrumentType.FUT: KIND_FUTURE,
    InstrumentType.CE: KIND_CALL,
    InstrumentType.PE: KIND_PUT,
}
_EXPIRY_BITS = 20  # days since 1970 fit in 20 bits until the year 4840
_NO_FORWARD = Reason.NO_FORWARD.code
_EXPIRED = Reason.EXPIRED.code
_EPOCH = date(1970, 1, 1)


# --------------------------------------------------------------------------- decode


@dataclass
class TickColumns:
    """The batch's decoded ticks as columns, in stream order."""

    tokens: list[int] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    """Exchange timestamp, else received_at, in epoch seconds."""
    exchange_timestamps: list[datetime | None] = field(default_factory=list)
    as_of: list[datetime] = field(default_factory=list)
    """Exchange timestamp, else received_at: the tick's own instant, the same on every replay."""
    sources: list[dict[str, str | int]] = field(default_factory=list)
    poison: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, user: KinesisUserRecord) -> None:
        """Decode one user record and append it.

        Raises a :class:`ticker_core.records.RecordError` (its ``reason`` is
        the poison count's) when it is not a ``tick/1`` record by the
        schema's every rule: a token within 32 bits, a finite price, instants
        within Kite's range (Kite's "never" as None), so nothing later in the
        batch can fail on it.
        """
        tick = check_tick(loads_user_record(user.data))
        exchange_ts: datetime | None = tick.get("exchange_timestamp")
        when: datetime = exchange_ts or tick["received_at"]
        self.tokens.append(tick["instrument_token"])
        self.prices.append(float(tick["last_price"]))
        self.epochs.append(when.timestamp())
        self.exchange_timestamps.append(exchange_ts)
        self.as_of.append(when)
        self.sources.append(user.source)


# --------------------------------------------------------------------------- instruments


@dataclass(frozen=True)
class RegistryIndex:
    """The snapshot as sorted columns, for joining a whole batch with one search."""

    sha256: str
    tokens: IntArray
    kind: npt.NDArray[np.int8]
    strike: FloatArray
    expiry_epoch: FloatArray
    """15:30 IST on the expiry date, epoch seconds (NaN: no expiry)."""
    group: IntArray
    """(underlying code << 20) | expiry day: one forward per group (-1: not a derivative)."""
    instruments: tuple[Instrument, ...]
    """In token order, for the row's symbol, underlying and expiry."""

    @classmethod
    def build(cls, registry: InstrumentRegistry, sha256: str) -> RegistryIndex:
        """Index every instrument of ``registry``."""
        ordered = tuple(sorted(registry.instruments, key=lambda i: i.instrument_token))
        names = {name: code for code, name in enumerate(sorted({i.underlying for i in ordered}))}
        expiry_day = np.array(
            [(i.expiry - _EPOCH).days if i.expiry is not None else -1 for i in ordered],
            dtype=np.int64,
        )
        codes = np.array([names[i.underlying] for i in ordered], dtype=np.int64)
        kind = np.array([_KINDS.get(i.instrument_type, KIND_OTHER) for i in ordered], np.int8)
        days = np.where(expiry_day >= 0, expiry_day, 0).astype("datetime64[D]")
        expiry_epoch = np.where(expiry_day >= 0, expiry_epoch_seconds(days), np.nan)
        group = np.where(
            (kind != KIND_OTHER) & (expiry_day >= 0), (codes << _EXPIRY_BITS) | expiry_day, -1
        )
        return cls(
            sha256=sha256,
            tokens=np.array([i.instrument_token for i in ordered], dtype=np.int64),
            kind=kind,
            strike=np.array([i.strike for i in ordered], dtype=np.float64),
            expiry_epoch=expiry_epoch,
            group=group,
            instruments=ordered,
        )

    def positions(self, tokens: IntArray) -> IntArray:
        """Index of each token in this snapshot, -1 where it is not listed."""
        if self.tokens.size == 0:
            return np.full(tokens.shape, -1, dtype=np.int64)
        slots = np.minimum(np.searchsorted(self.tokens, tokens), self.tokens.size - 1)
        return np.where(self.tokens[slots] == tokens, slots, -1).astype(np.int64)


class SnapshotSource(Protocol):
    """Where the current instruments snapshot comes from (the S3 reader, or a fake)."""

    def current(self) -> InstrumentSnapshot:
        """The current snapshot."""
        ...


class RegistryIndexCache:
    """The :class:`RegistryIndex` of the current snapshot, rebuilt only when its SHA changes."""

    def __init__(self, snapshots: SnapshotSource) -> None:
        self._snapshots = snapshots
        self._index: RegistryIndex | None = None
        self.builds = 0

    def current(self) -> RegistryIndex:
        """The index of the snapshot the source currently names."""
        snapshot = self._snapshots.current()
        if self._index is None or self._index.sha256 != snapshot.pointer.sha256:
            self._index = RegistryIndex.build(snapshot.registry, snapshot.pointer.sha256)
            self.builds += 1
        return self._index


# --------------------------------------------------------------------------- forwards


@dataclass(frozen=True)
class KnownForward:
    """A forward observed for one underlying and expiry, and when (epoch seconds)."""

    forward: float
    as_of: float


class ForwardMemory:
    """Last future/parity forward per (underlying, expiry) in this execution environment.

    Lambda keeps module state between invocations of one environment, and
    the stream is partitioned by underlying, so the environment reading a
    shard usually sees a chain's future or parity pairs again soon. Expired
    contracts are dropped as they expire, which bounds the memory.
    """

    def __init__(self, max_age_s: float) -> None:
        if not max_age_s >= 0:
            raise ValueError("max_age_s must be >= 0")
        self.max_age_s = max_age_s
        self._known: dict[tuple[str, date], KnownForward] = {}

    def __len__(self) -> int:
        return len(self._known)

    def get(self, key: tuple[str, date], at: float) -> float | None:
        """The remembered forward if it is at most ``max_age_s`` older than ``at``."""
        known = self._known.get(key)
        if known is None or at - known.as_of > self.max_age_s:
            return None
        return known.forward

    def remember(self, key: tuple[str, date], forward: float, as_of: float) -> None:
        """Keep ``forward`` unless a newer one is already known."""
        known = self._known.get(key)
        if known is None or as_of >= known.as_of:
            self._known[key] = KnownForward(forward, as_of)

    def prune(self, now_epoch: float) -> None:
        """Forget contracts that expired before ``now_epoch``."""
        days = [key[1] for key in self._known]
        if not days:
            return
        expiry = expiry_epoch_seconds(np.array(days, dtype="datetime64[D]"))
        for key, expires in zip(list(self._known), expiry.tolist(), strict=True):
            if expires < now_epoch:
                del self._known[key]


SOURCE_FUTURE, SOURCE_PARITY, SOURCE_CARRIED, SOURCE_NONE = 0, 1, 2, 3
FORWARD_SOURCES = ("future", "parity", "carried", "none")


def _futures_as_of(
    group: IntArray, is_future: npt.NDArray[np.bool_], prices: FloatArray, wanted: IntArray
) -> FloatArray:
    """For each tick position in ``wanted``: its group's future price as of that tick.

    The latest future tick of the same group at or before it in stream order,
    else the first one after it; NaN when the batch has none for the group.
    """
    out = np.full(wanted.size, np.nan)
    usable = is_future & np.isfinite(prices) & (prices > 0)
    fut_pos = np.flatnonzero(usable)
    if fut_pos.size == 0 or wanted.size == 0:
        return out
    span = np.int64(group.size + 1)
    keys = np.sort(group[fut_pos] * span + fut_pos)
    key_group = keys // span
    query = group[wanted] * span + wanted
    before = np.searchsorted(keys, query, side="right") - 1
    after = before + 1
    has_before = before >= 0
    has_before[has_before] &= key_group[before[has_before]] == group[wanted][has_before]
    after_ok = after < keys.size
    after_ok[after_ok] &= key_group[after[after_ok]] == group[wanted][after_ok]
    pick = np.where(has_before, before, np.where(after_ok, after, -1))
    found = pick >= 0
    out[found] = prices[keys[pick[found]] % span]
    return out


def _latest_per_key(keys: IntArray) -> IntArray:
    """Positions of the last occurrence of each distinct key (in key order)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    last = np.ones(order.size, dtype=bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    return order[last]


# --------------------------------------------------------------------------- the batch


@dataclass(frozen=True)
class GreeksBatch:
    """The option rows of one batch, as columns (row ``i`` is option tick ``tick_pos[i]``)."""

    tick_pos: IntArray
    inst_pos: IntArray
    price: FloatArray
    forward: FloatArray
    forward_source: npt.NDArray[np.int8]
    t_years: FloatArray
    iv: FloatArray
    greeks: Greeks
    """At ``iv``; its own ``reason`` is superseded by :attr:`reason`."""
    reason: npt.NDArray[np.uint8]
    ticks: int
    unknown: int
    """Ticks whose token is not in the snapshot (no row)."""

    def __len__(self) -> int:
        return int(self.tick_pos.size)

    def source_counts(self) -> dict[str, int]:
        """Rows per forward source."""
        counts = np.bincount(self.forward_source, minlength=len(FORWARD_SOURCES))
        return {name: int(n) for name, n in zip(FORWARD_SOURCES, counts, strict=True) if n}

    def reason_counts(self) -> dict[str, int]:
        """Rows per reason (rows with values are not counted)."""
        return dict(Counter(r for r in reason_labels(self.reason) if r is not None))


def compute_greeks(
    ticks: TickColumns,
    index: RegistryIndex,
    memory: ForwardMemory,
    *,
    rate: float,
    parity_pairs: int = 2,
) -> GreeksBatch:
    """IV and Greeks of every option tick in ``ticks``; updates ``memory`` with new forwards."""
    n = len(ticks)
    tokens = np.array(ticks.tokens, dtype=np.int64)
    prices = np.array(ticks.prices, dtype=np.float64)
    epochs = np.array(ticks.epochs, dtype=np.float64)
    pos = index.positions(tokens)
    known = pos >= 0
    kind = np.where(known, index.kind[np.maximum(pos, 0)], KIND_OTHER)
    group = np.where(known, index.group[np.maximum(pos, 0)], -1)
    is_future = kind == KIND_FUTURE
    rows = np.flatnonzero((kind == KIND_CALL) | (kind == KIND_PUT))
    row_inst = pos[rows]
    row_group = group[rows]
    is_call = kind[rows] == KIND_CALL
    strike = index.strike[row_inst]
    t_years = year_fractions(epochs[rows], index.expiry_epoch[row_inst])

    forward = _futures_as_of(group, is_future, prices, rows)
    source = np.where(np.isfinite(forward), SOURCE_FUTURE, SOURCE_NONE).astype(np.int8)
    _fill_parity(forward, source, rows, row_group, strike, is_call, prices, t_years, epochs,
                 rate=rate, pairs=parity_pairs)  # fmt: skip
    _fill_carried(forward, source, rows, row_inst, epochs, index, memory)
    _remember(memory, index, pos, group, is_future, prices, epochs, rows, forward, source)
    if n:
        memory.prune(float(epochs.max()))

    price = prices[rows]
    vols = implied_vol(price, forward, strike, t_years, rate, is_call)
    g = greeks(forward, strike, t_years, rate, vols.iv, is_call)
    reason = np.where(vols.reason != OK, vols.reason, g.reason).astype(np.uint8)
    # Without a forward the math saw NaN; say why instead (an expired contract is expired).
    none = source == SOURCE_NONE
    reason[none] = np.where(t_years[none] > 0, _NO_FORWARD, _EXPIRED)
    return GreeksBatch(
        tick_pos=rows,
        inst_pos=row_inst,
        price=price,
        forward=forward,
        forward_source=source,
        t_years=t_years,
        iv=vols.iv,
        greeks=g,
        reason=reason,
        ticks=n,
        unknown=int(np.count_nonzero(~known)),
    )


def _fill_parity(
    forward: FloatArray,
    source: npt.NDArray[np.int8],
    rows: IntArray,
    row_group: IntArray,
    strike: FloatArray,
    is_call: npt.NDArray[np.bool_],
    prices: FloatArray,
    t_years: FloatArray,
    epochs: FloatArray,
    *,
    rate: float,
    pairs: int,
) -> None:
    """Parity forwards for the groups without a future in the batch."""
    lacking = np.flatnonzero(source == SOURCE_NONE)
    if lacking.size == 0:
        return
    # The latest price of each (group, strike, right) among those rows.
    strike_code = np.unique(strike[lacking], return_inverse=True)[1].astype(np.int64)
    keys = (row_group[lacking] * (strike_code.max() + 1) + strike_code) * 2 + is_call[lacking]
    latest = lacking[_latest_per_key(keys)]
    for g in np.unique(row_group[lacking]).tolist():
        in_group = latest[row_group[latest] == g]
        calls = in_group[is_call[in_group]]
        puts = in_group[~is_call[in_group]]
        common, ci, pi = np.intersect1d(strike[calls], strike[puts], return_indices=True)
        newest = lacking[row_group[lacking] == g]
        at = newest[np.argmax(epochs[rows[newest]])]
        estimate = forward_from_parity(
            common,
            prices[rows[calls[ci]]],
            prices[rows[puts[pi]]],
            float(t_years[at]),
            rate,
            pairs=pairs,
        )
        if math.isfinite(estimate.forward):
            members = lacking[row_group[lacking] == g]
            forward[members] = estimate.forward
            source[members] = SOURCE_PARITY


def _fill_carried(
    forward: FloatArray,
    source: npt.NDArray[np.int8],
    rows: IntArray,
    row_inst: IntArray,
    epochs: FloatArray,
    index: RegistryIndex,
    memory: ForwardMemory,
) -> None:
    """Remembered forwards for the rows still without one (age is checked per tick)."""
    if len(memory) == 0:
        return
    for i in np.flatnonzero(source == SOURCE_NONE).tolist():
        value = memory.get(_group_key(index.instruments[row_inst[i]]), float(epochs[rows[i]]))
        if value is not None:
            forward[i] = value
            source[i] = SOURCE_CARRIED


def _group_key(instrument: Instrument) -> tuple[str, date]:
    if instrument.expiry is None:  # pragma: no cover - the index groups derivatives only
        raise ValueError(f"{instrument.tradingsymbol} has no expiry")
    return (instrument.underlying, instrument.expiry)


def _remember(
    memory: ForwardMemory,
    index: RegistryIndex,
    pos: IntArray,
    group: IntArray,
    is_future: npt.NDArray[np.bool_],
    prices: FloatArray,
    epochs: FloatArray,
    rows: IntArray,
    forward: FloatArray,
    source: npt.NDArray[np.int8],
) -> None:
    """Keep each group's newest observed forward (a future's price, or parity) for later."""
    usable = np.flatnonzero(is_future & np.isfinite(prices) & (prices > 0))
    for p in usable[_latest_per_key(group[usable])].tolist():
        memory.remember(_group_key(index.instruments[pos[p]]), float(prices[p]), float(epochs[p]))
    parity = np.flatnonzero(source == SOURCE_PARITY)
    for i in parity[_latest_per_key(group[rows[parity]])].tolist():
        tick = int(rows[i])
        memory.remember(
            _group_key(index.instruments[pos[tick]]), float(forward[i]), float(epochs[tick])
        )


# --------------------------------------------------------------------------- rows


def greeks_rows(
    batch: GreeksBatch,
    ticks: TickColumns,
    index: RegistryIndex,
    *,
    rate: float,
    computed_at: datetime,
) -> Iterator[dict[str, Any]]:
    """The batch as ``greeks.v1.json`` rows (for :func:`encode_greeks`), in stream order."""
    columns = {
        name: getattr(batch, name).tolist() for name in ("price", "forward", "t_years", "iv")
    }
    columns.update(
        (name, getattr(batch.greeks, name).tolist())
        for name in ("delta", "gamma", "theta", "vega", "rho", "theta_raw", "vega_raw", "rho_raw")
    )
    reasons = reason_labels(batch.reason)
    sources = [FORWARD_SOURCES[s] for s in batch.forward_source.tolist()]
    for i, (tick, inst_pos) in enumerate(
        zip(batch.tick_pos.tolist(), batch.inst_pos.tolist(), strict=True)
    ):
        inst = index.instruments[inst_pos]
        yield {
            "instrument_token": inst.instrument_token,
            "tradingsymbol": inst.tradingsymbol,
            "underlying": inst.underlying,
            "expiry": inst.expiry,
            "strike": inst.strike,
            "option_type": inst.instrument_type.value,
            "price": columns["price"][i],
            "forward": columns["forward"][i],
            "forward_source": sources[i],
            "t_years": columns["t_years"][i],
            "rate": rate,
            "iv": columns["iv"][i],
            "delta": columns["delta"][i],
            "gamma": columns["gamma"][i],
            "theta": columns["theta"][i],
            "vega": columns["vega"][i],
            "rho": columns["rho"][i],
            "raw": {
                "theta": columns["theta_raw"][i],
                "vega": columns["vega_raw"][i],
                "rho": columns["rho_raw"][i],
            },
            "reason": reasons[i],
            "exchange_timestamp": ticks.exchange_timestamps[tick],
            "as_of": ticks.as_of[tick],
            "computed_at": computed_at,
            "source": ticks.sources[tick],
        }


# --------------------------------------------------------------------------- the event


class Publisher(Protocol):
    """Where the Greeks records go (the dal's Kinesis publisher, or a fake in tests)."""

    def publish(self, batches: list[PutRecordsBatch]) -> Any:
        """Write every batch, or raise."""
        ...


@dataclass(frozen=True)
class GreeksSettingsView:
    """What the computation needs from the function's settings."""

    rate: float
    parity_pairs: int = 2
    aggregate_bytes: int = DEFAULT_AGGREGATE_BYTES


@dataclass(frozen=True)
class GreeksOutcome:
    """What one invocation did: Lambda's partial batch response plus counts for metrics."""

    response: dict[str, Any]
    ticks: int
    rows: int
    unknown: int
    poison: Mapping[str, int]
    forward_sources: Mapping[str, int]
    reasons: Mapping[str, int]
    kinesis_records: int


def encode_batches(
    rows: Iterator[dict[str, Any]], aggregate_bytes: int = DEFAULT_AGGREGATE_BYTES
) -> list[PutRecordsBatch]:
    """Rows as KPL-aggregated PutRecords batches, partition key = underlying."""
    batcher = RecordBatcher(linger=0.0, aggregate_bytes=aggregate_bytes)
    for row in rows:
        batcher.add(row["underlying"], encode_greeks(row), 0.0)
    return batcher.flush()


def greeks_event(
    event: Mapping[str, Any],
    *,
    instruments: RegistryIndexCache,
    memory: ForwardMemory,
    publisher: Publisher,
    settings: GreeksSettingsView,
    computed_at: datetime,
) -> GreeksOutcome:
    """Decode a Kinesis batch of ticks, compute the option rows, publish them, report poison.

    A snapshot that cannot be read or a publication that fails propagates:
    the invocation fails and Kinesis delivers the batch again; the rows
    already written are recognised downstream by their ``source``.
    """
    ticks = TickColumns()
    response = consume_kinesis_event(event, ticks.add, ticks.poison)
    batch: GreeksBatch | None = None
    batches: list[PutRecordsBatch] = []
    if len(ticks):
        index = instruments.current()
        batch = compute_greeks(
            ticks, index, memory, rate=settings.rate, parity_pairs=settings.parity_pairs
        )
        rows = greeks_rows(batch, ticks, index, rate=settings.rate, computed_at=computed_at)
        batches = encode_batches(rows, settings.aggregate_bytes)
        if batches:
            publisher.publish(batches)
    return GreeksOutcome(
        response=response,
        ticks=len(ticks),
        rows=len(batch) if batch is not None else 0,
        unknown=batch.unknown if batch is not None else 0,
        poison=dict(ticks.poison),
        forward_sources=batch.source_counts() if batch is not None else {},
        reasons=batch.reason_counts() if batch is not None else {},
        kinesis_records=sum(len(b) for b in batches),
    )
