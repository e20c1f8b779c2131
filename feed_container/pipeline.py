"""Frames to user records: columnar decode, validation, JSON encoding, lanes.

Called by every connection for every frame it reads, on the event loop, so
it does no I/O and nothing per tick in Python beyond building the record
and handing it to its lane's batcher. A frame never raises out of here:

* heartbeat (1 byte): counted;
* text (order updates, errors): parsed, counted, errors logged; order
  updates handed to the order-updates sink (``feed_container/order_updates.py``:
  it queues and returns), or dropped when there is none (forwarding off);
* broken structure (truncated, count mismatch, trailing bytes): the intact
  packets before the fault are kept, the rest is counted as lost;
* unknown packet lengths: skipped by the decoder and counted;
* sanity bounds (``validate``): rows outside them are dropped and counted
  by reason, the rest go on;
* a record the batcher refuses (too large, a partition key Kinesis rejects):
  counted, skipped;
* anything else (a bug): the frame's packets are counted as lost
  (``feed_frames_failed_total``), the connection reads on.

Every counted loss also gets a WARNING log line with its reason, at most one
per reason and account every 10 s (saying how many were held back), so a
counter that moves can be explained from the logs.

``received_at`` is the frame's receive time, made strictly increasing per
process (at least 1 us apart), so (account, instrument_token, received_at)
identifies a tick; the same instant on the monotonic clock is the batcher's
``now``, from which linger and the end-to-end lag are measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from feed_container.encoder import ColumnarTickEncoder
from feed_container.logs import LogLimiter
from feed_container.metrics import Metrics
from feed_container.sender import SendLane, lane_of
from ticker_core.instruments import InstrumentRegistry
from ticker_core.kite_wire import (
    DecodedFrame,
    DecodeStats,
    ErrorMessage,
    FrameError,
    OrderUpdate,
    PacketBatch,
    decode_frame,
    parse_text,
)

log = logging.getLogger("feed_container.pipeline")

_PRICE_COLUMNS = ("last_price", "average_traded_price", "open", "high", "low", "close")
_TIME_COLUMNS = ("exchange_timestamp", "last_trade_time")


@dataclass(frozen=True)
class Bounds:
    """Sanity bounds: a tick outside them is corrupt and dropped (counted)."""

    max_abs_price: float = 1e8
    max_future_skew_seconds: float = 7 * 86400.0


def validate(
    batch: PacketBatch, now_seconds: float, bounds: Bounds
) -> tuple[PacketBatch, dict[str, int]]:
    """The rows of ``batch`` within ``bounds``, and how many failed each check."""
    rows = len(batch)
    keep = np.ones(rows, dtype=np.bool_)
    dropped: dict[str, int] = {}

    def check(reason: str, bad: Any) -> None:
        fresh = np.asarray(bad, dtype=np.bool_) & keep
        count = int(fresh.sum())
        if count:
            dropped[reason] = dropped.get(reason, 0) + count
            keep[fresh] = False

    check("token", batch["instrument_token"] <= 0)
    for name in _PRICE_COLUMNS:
        if name in batch.columns:
            check("price", np.abs(batch[name]) > bounds.max_abs_price)
    if "depth_price" in batch.columns:
        depth = np.abs(batch["depth_price"]).reshape(rows, -1)
        check("price", (depth > bounds.max_abs_price).any(axis=1))
    limit = now_seconds + bounds.max_future_skew_seconds
    for name in _TIME_COLUMNS:
        if name in batch.columns:
            check("timestamp", batch[name] > limit)
    if not dropped:
        return batch, dropped
    return batch.select(keep), dropped


#: Where Kite's order messages go: ``(account, update)``; must return at once and never raise.
OrderUpdateSink = Callable[[str, OrderUpdate], None]


class Pipeline:
    """Decode, validate, encode and route every frame of every connection."""

    def __init__(
        self,
        lanes: list[SendLane],
        metrics: Metrics,
        *,
        bounds: Bounds | None = None,
        order_updates: OrderUpdateSink | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lanes:
            raise ValueError("at least one lane is needed")
        self._lanes = lanes
        self._metrics = metrics
        self._bounds = bounds or Bounds()
        self._order_updates = order_updates
        self._wall_ns = wall_clock_ns
        self._monotonic = monotonic
        self._last_us = 0
        self._encoder = ColumnarTickEncoder(None)
        self._reset_routes()
        self._stats: dict[str, DecodeStats] = {}
        self._watched = np.empty(0, dtype=np.int64)
        #: Last traded price of every watched token (the ATM windows' underlyings).
        self.prices: dict[int, float] = {}
        self._log_limiter = LogLimiter(10.0, clock=monotonic)

    def _warn(self, reason: str, account: str, message: str, **fields: Any) -> None:
        """A rate-limited WARNING for a counted loss (see the module docstring)."""
        held_back = self._log_limiter.allow((reason, account))
        if held_back is not None:
            log.warning(
                message,
                extra={"account": account, "reason": reason, "held_back": held_back, **fields},
            )

    def set_registry(self, registry: InstrumentRegistry | None) -> None:
        """Use a new day's instruments (partition keys, exchange, tradingsymbol)."""
        self._encoder = ColumnarTickEncoder(registry)
        self._reset_routes()

    def _reset_routes(self) -> None:
        """Forget every token's route (a new registry may move a token to another key)."""
        #: (partition key, lane) per route id; tokens map to route ids through two sorted
        #: arrays, so a frame's rows are routed with one vectorized lookup.
        self._route_table: list[tuple[str, SendLane]] = []
        self._route_tokens = np.empty(0, dtype=np.int64)
        self._route_of_token = np.empty(0, dtype=np.int64)

    def watch(self, tokens: Iterable[int]) -> None:
        """Track the last price of ``tokens`` in :attr:`prices`."""
        self._watched = np.array(sorted(set(tokens)), dtype=np.int64)

    def stats(self, account: str) -> DecodeStats:
        """Decode counters of one account's connections."""
        return self._stats.setdefault(account, DecodeStats())

    # -- the hot path -------------------------------------------------------------------

    def on_text(self, account: str, text: str) -> None:
        """A text message from Kite (order update, error, notice)."""
        message = parse_text(text)
        kind = type(message).__name__
        self._metrics.inc("feed_text_messages_total", account=account, type=kind)
        if isinstance(message, OrderUpdate):
            if self._order_updates is not None:
                self._order_updates(account, message)
        elif isinstance(message, ErrorMessage):
            log.warning("kite error message", extra={"account": account, "kite": message.message})

    def on_frame(self, account: str, frame: bytes) -> int:
        """One binary frame as received; returns the ticks handed to the lanes. Never raises."""
        started = time.perf_counter()
        try:
            handed = self._on_frame(account, frame)
            self._metrics.observe("feed_frame_seconds", time.perf_counter() - started)
            return handed
        except Exception as exc:  # a bug: count what the frame held, keep the connection
            declared = int.from_bytes(frame[:2], "big") if len(frame) >= 2 else 0
            error = type(exc).__name__
            self._metrics.inc("feed_frames_failed_total", account=account, error=error)
            self._metrics.inc("feed_packets_lost_total", declared, account=account)
            held_back = self._log_limiter.allow(("failed", account))
            if held_back is not None:
                log.error(
                    "frame processing failed; its packets are counted as lost",
                    exc_info=exc,
                    extra={"account": account, "packets": declared, "held_back": held_back},
                )
            return 0

    def _on_frame(self, account: str, frame: bytes) -> int:
        received_mono = self._monotonic()
        us = self._wall_ns() // 1000
        if us <= self._last_us:
            us = self._last_us + 1
        self._last_us = us
        self._metrics.inc("feed_frames_total", account=account)
        stats = self.stats(account)
        try:
            decoded = decode_frame(frame, stats=stats)
        except FrameError as exc:
            self._metrics.inc("feed_frames_malformed_total", account=account)
            self._metrics.inc("feed_packets_lost_total", exc.missing, account=account)
            self._warn(
                "malformed",
                account,
                "malformed frame: intact packets kept, the rest counted as lost",
                error=type(exc).__name__,
                intact=exc.intact,
                missing=exc.missing,
            )
            decoded = decode_frame(exc.salvage, stats=stats)
        if decoded.skipped:
            self._metrics.inc("feed_packets_lost_total", decoded.skipped, account=account)
            self._warn(
                "unknown_packet",
                account,
                "packets of an unknown length skipped",
                skipped=decoded.skipped,
            )
        if not decoded.batches:
            return 0
        return self._process(account, decoded, us, received_mono)

    def _process(self, account: str, decoded: DecodedFrame, us: int, mono: float) -> int:
        received_at = datetime.fromtimestamp(us // 1_000_000, UTC).replace(
            microsecond=us % 1_000_000
        )
        suffix = self._encoder.suffix(received_at, account)
        now_seconds = us / 1e6
        total = 0
        # Grouped by partition key, each group in packet-type then wire order: per-key
        # order is what Kinesis keeps, and one batcher call per key is far cheaper.
        # Rows are sorted by route (stable: wire order within a key) *before* encoding,
        # so each key's records come out as one slice: no per-tick Python routing.
        groups: dict[int, list[bytes]] = {}
        for raw in decoded.batches:
            self._metrics.inc("feed_ticks_received_total", len(raw), account=account)
            batch, dropped = validate(raw, now_seconds, self._bounds)
            for reason, count in dropped.items():
                self._metrics.inc("feed_ticks_invalid_total", count, account=account, reason=reason)
                self._warn(
                    f"invalid_{reason}",
                    account,
                    "ticks outside the sanity bounds dropped",
                    check=reason,
                    dropped=count,
                )
            if not len(batch):
                continue
            tokens_array = batch["instrument_token"]
            if self._watched.size:
                self._note_prices(tokens_array, batch["last_price"])
            routes = self._route_ids(tokens_array)
            if routes.size > 1 and (routes[1:] < routes[:-1]).any():
                order = np.argsort(routes, kind="stable")
                routes = routes[order]
                batch = batch.select(order)
            records = self._encoder.encode(batch, suffix)
            cuts = (np.flatnonzero(routes[1:] != routes[:-1]) + 1).tolist()
            starts = [0, *cuts]
            for start, end, route in zip(
                starts, [*cuts, len(records)], routes[starts].tolist(), strict=True
            ):
                group = groups.get(route)
                if group is None:
                    groups[route] = records[start:end]
                else:
                    group += records[start:end]
        for route, datas in groups.items():
            key, lane = self._route_table[route]
            total += self._hand_over(lane, key, datas, mono, account)
        self._metrics.inc("feed_ticks_accepted_total", total, account=account)
        return total

    def _route_ids(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The route (partition key and lane) of each token, as an index into the table."""
        known = self._route_tokens
        at = np.searchsorted(known, tokens)
        if known.size:
            found = known[np.minimum(at, known.size - 1)] == tokens
        else:
            found = np.zeros(tokens.size, dtype=np.bool_)
        if not found.all():
            self._add_routes(np.unique(tokens[~found]).tolist())
            return self._route_ids(tokens)
        ids: npt.NDArray[np.int64] = self._route_of_token[at]
        return ids

    def _add_routes(self, tokens: list[int]) -> None:
        """Route tokens seen for the first time (their underlying: the partition key)."""
        index = {key: n for n, (key, _) in enumerate(self._route_table)}
        new_tokens, new_ids = [], []
        for token in tokens:
            key = self._encoder.meta(token).underlying
            route = index.get(key)
            if route is None:
                route = index[key] = len(self._route_table)
                self._route_table.append((key, self._lanes[lane_of(key, len(self._lanes))]))
            new_tokens.append(token)
            new_ids.append(route)
        all_tokens = np.concatenate([self._route_tokens, np.array(new_tokens, dtype=np.int64)])
        all_ids = np.concatenate([self._route_of_token, np.array(new_ids, dtype=np.int64)])
        order = np.argsort(all_tokens)
        self._route_tokens, self._route_of_token = all_tokens[order], all_ids[order]

    def _hand_over(
        self, lane: SendLane, key: str, datas: list[bytes], mono: float, account: str
    ) -> int:
        """Add one key's records to its lane; a record the batcher refuses is counted, skipped."""
        handed = 0
        while datas:
            before = lane.batcher.pending_user_records
            try:
                lane.add_many(key, datas, mono)
            except ValueError as exc:  # RecordTooLargeError, InvalidKeyError: counted, not fatal
                done = lane.batcher.pending_user_records - before
                handed += done
                self._metrics.inc("feed_encode_errors_total", account=account)
                self._warn(
                    "encode",
                    account,
                    "record refused by the batcher, skipped",
                    error=type(exc).__name__,
                    partition_key=key,
                    detail=str(exc),
                )
                datas = datas[done + 1 :]
                continue
            return handed + len(datas)
        return handed

    def _note_prices(self, tokens: npt.NDArray[np.int64], prices: npt.NDArray[np.float64]) -> None:
        hit = np.isin(tokens, self._watched)
        if hit.any():
            for token, price in zip(tokens[hit].tolist(), prices[hit].tolist(), strict=True):
                self.prices[token] = price
