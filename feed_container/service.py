"""The feed service: every part wired together, started, and stopped within the stop timeout.

Start: health server, sender lanes (which first replay any spill a previous
run left), instruments, the connection pool and the reconciler. Run: until
the stop event (SIGTERM). Stop, within ``stop_timeout_seconds``:

1. ``/healthz`` turns 503; the reconciler stops;
2. every WebSocket is closed cleanly (frames already on the way are still
   read and processed: nothing received is dropped);
3. the batchers flush; the lanes deliver what they hold (spill included)
   until ``stop_timeout - put_timeout - 1.5`` s; so, meanwhile, does the
   order-update forwarder (Kite's order messages to SQS), and what it could
   not send by then is counted as dropped;
4. what Kinesis did not take by then (it is down, or slow) is written in
   front of the disk spill, in order, and replays when the process restarts on
   the same storage (a plain process or the sandbox; Fargate's ephemeral
   storage does not survive the task, so there it is counted as lost in the
   final log line).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import boto3
from websockets.asyncio.client import connect

from feed_container.connection import (
    Connect,
    ConnectionSettings,
    KeyLimiter,
    KiteConnection,
    TokenProvider,
    VaultTokens,
    max_frame_bytes,
)
from feed_container.encoder import FORMATTER
from feed_container.health import HealthServer
from feed_container.instruments import InstrumentSource, load_registry, source_from_setting
from feed_container.kinesis import KinesisWriter
from feed_container.logs import LogLimiter
from feed_container.metrics import Metrics
from feed_container.order_updates import BatchSender, OrderUpdateForwarder, OrderUpdateQueue
from feed_container.pauses import GcWatch, settle_heap, watch_loop_lag
from feed_container.pipeline import Bounds, Pipeline
from feed_container.planner import AssignmentPlanner, SlotId
from feed_container.pool import FeedPool
from feed_container.sender import CircuitBreaker, SendLane
from feed_container.settings import FeedEnvironment
from feed_container.spill import FileSystem, SpillStore, usable_budget
from feed_container.sqs import SqsBatchSender
from feed_container.status import StatusSink, StatusWriter, feed_status, utc_now
from feed_container.subscriptions import DesiredSource, Reconciler
from feed_container.supervision import Supervisor
from ticker_adapters.feed_status import FeedStatus
from ticker_adapters.retry import exponential_backoff, exponential_backoff_delays
from ticker_core.records import RecordBatcher

log = logging.getLogger("feed_container.service")


def _by_error(counts: Iterable[Mapping[str, int]]) -> dict[tuple[tuple[str, str], ...], float]:
    total: dict[tuple[tuple[str, str], ...], float] = {}
    for count in counts:
        for error, n in count.items():
            key = (("error", error),)
            total[key] = total.get(key, 0.0) + n
    return total


@dataclass
class Dependencies:
    """What the service talks to; anything left None is built from settings and the AWS SDK."""

    #: Where PutRecords goes (default: where boto3 would send Kinesis calls).
    kinesis_endpoint_url: str | None = None
    tokens: TokenProvider | None = None
    accounts: tuple[str, ...] | None = None
    subscriptions: DesiredSource | None = None
    instruments: InstrumentSource | None = None
    connect_fn: Connect = connect
    emf_stream: TextIO = field(default_factory=lambda: sys.stdout)
    #: botocore credentials for PutRecords (default: the SDK's chain, e.g. the task role).
    kinesis_credentials: Any = None
    #: The disk under the spill (default: the local file system).
    spill_fs: FileSystem | None = None
    #: Where the status record goes (default: the subscriptions table, unless the
    #: subscriptions themselves were injected).
    status: StatusSink | None = None
    #: Where SendMessageBatch goes (default: where boto3 would send SQS calls).
    sqs_endpoint_url: str | None = None
    #: The order messages' SendMessageBatch (default: botocore's SQS client, to
    #: ``ORDER_UPDATES_QUEUE_URL``); used only when that is set.
    order_updates_sender: BatchSender | None = None


class FeedService:
    """One process's feed: build with its environment, ``await run(stop)``."""

    def __init__(self, environment: FeedEnvironment, deps: Dependencies | None = None) -> None:
        self.environment = environment
        self.settings = s = environment.feed
        self.deps = deps or Dependencies()
        self.metrics = Metrics(lag_window=s.emf_interval_seconds > 0)
        self.supervisor = Supervisor(
            self.metrics, restart_delays=lambda: exponential_backoff(0.1, 2.0, 10.0)
        )
        self.writer = KinesisWriter.from_session(
            boto3.Session(),
            environment.ticks.name,
            timeout=s.put_timeout_seconds,
            endpoint_url=self.deps.kinesis_endpoint_url,
            credentials=self.deps.kinesis_credentials,
        )
        self.breaker = CircuitBreaker(
            s.breaker_failures,
            s.breaker_open_seconds,
            s.breaker_max_open_seconds,
            metrics=self.metrics,
        )
        spill_budget = usable_budget(Path(s.spill_dir), s.spill_max_bytes, fs=self.deps.spill_fs)
        self.lanes = [self._lane(i, spill_budget) for i in range(s.sender_lanes)]
        self.order_updates = self._order_update_forwarder()
        self.pipeline = Pipeline(
            self.lanes,
            self.metrics,
            bounds=Bounds(s.max_abs_price, s.max_future_skew_seconds),
            order_updates=self.order_updates.submit if self.order_updates else None,
        )
        self.health = HealthServer(self.metrics, self.readiness)
        self.pool: FeedPool | None = None
        self.reconciler: Reconciler | None = None
        self.instruments_loaded = False
        self.accounts: tuple[str, ...] = ()
        #: Accounts in the vault that have not logged in yet (no live session).
        self.accounts_waiting: tuple[str, ...] = ()
        self._tasks: list[asyncio.Task[Any]] = []
        self._loaded = asyncio.Event()
        self._account_log = LogLimiter(60.0)
        self._gc_watch: GcWatch | None = None
        self.metrics.gauge_callback(
            "feed_accounts_waiting_for_login",
            lambda: {(("account", a),): 1.0 for a in self.accounts_waiting},
        )
        self.metrics.gauge_callback(
            "feed_buffer_bytes", lambda: {(): float(sum(lane.memory_bytes for lane in self.lanes))}
        )
        self.metrics.gauge_callback(
            "feed_spill_bytes",
            lambda: {(): float(sum(lane.spill.bytes_on_disk for lane in self.lanes))},
        )
        self.metrics.gauge_callback(
            "feed_spill_write_errors_total",
            lambda: _by_error(lane.spill.write_errors for lane in self.lanes),
        )
        self.metrics.gauge_callback(
            "feed_spill_corrupt_bytes_total",
            lambda: {(): float(sum(lane.spill.corrupt_bytes for lane in self.lanes))},
        )

    def _lane(self, index: int, spill_budget: int) -> SendLane:
        s = self.settings
        lanes = s.sender_lanes
        directory = Path(s.spill_dir) / f"lane-{index}-of-{lanes}"
        spill = SpillStore(
            directory,
            max_bytes=spill_budget // lanes,
            segment_bytes=s.spill_segment_bytes,
            fs=self.deps.spill_fs,
        )
        batcher = RecordBatcher(
            linger=s.linger_seconds,
            aggregate_bytes=s.aggregate_bytes,
            request_records=s.request_records,
            request_bytes=s.request_bytes,
        )
        return SendLane(
            index,
            writer=self.writer,
            breaker=self.breaker,
            spill=spill,
            metrics=self.metrics,
            batcher=batcher,
            high_bytes=max(1, s.memory_high_bytes // lanes),
            low_bytes=s.memory_low_bytes // lanes,
            max_bytes=s.memory_max_bytes // lanes,
            retry_delays=lambda: exponential_backoff(
                s.retry_initial_seconds, 2.0, s.retry_max_seconds
            ),
            supervisor=self.supervisor,
        )

    def _order_update_forwarder(self) -> OrderUpdateForwarder | None:
        """Kite's order messages to ``ORDER_UPDATES_QUEUE_URL``; None when it is not set."""
        s = self.settings
        queue_url = self.environment.order_updates_queue_url
        if queue_url is None:
            return None
        sender = self.deps.order_updates_sender or SqsBatchSender.from_session(
            boto3.Session(),
            queue_url,
            timeout=s.put_timeout_seconds,
            endpoint_url=self.deps.sqs_endpoint_url,
        )
        return OrderUpdateForwarder(
            OrderUpdateQueue(s.order_updates_buffer),
            sender,
            self.metrics,
            retry_delays=lambda: exponential_backoff(
                s.retry_initial_seconds, 2.0, s.retry_max_seconds
            ),
        )

    # -- readiness ------------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Reasons not to route traffic here (empty: ready)."""
        reasons = []
        if not self.instruments_loaded:
            reasons.append("instruments not loaded")
        if self.reconciler is None or not self.reconciler.reconciled.is_set():
            reasons.append("subscriptions not reconciled")
        elif self.pool is not None and self.pool.connections and self.pool.open_connections == 0:
            reasons.append("no connection is streaming")
        if self.breaker.is_open:
            reasons.append("kinesis circuit breaker open")
        reasons += [f"task {name} failed recently" for name in self.supervisor.failing()]
        if not self.health.alive:
            reasons.append("stopping")
        return reasons

    # -- wiring ---------------------------------------------------------------------------

    def _aws(self, service: str) -> Any:
        return boto3.client(service)

    def _tokens(self) -> TokenProvider:
        if self.deps.tokens is not None:
            return self.deps.tokens
        return VaultTokens(self._vault(), self.metrics)

    def _vault(self) -> Any:
        from ticker_adapters.credentials import CredentialVault

        if not hasattr(self, "_vault_instance"):
            self._vault_instance = CredentialVault.from_settings(
                self.environment.vault,
                secretsmanager=self._aws("secretsmanager"),
                kms=self._aws("kms"),
            )
        return self._vault_instance

    async def _accounts(self) -> tuple[str, ...]:
        if self.deps.accounts is not None:
            return self.deps.accounts
        if self.settings.accounts:
            return self.settings.accounts
        return tuple(await asyncio.to_thread(self._vault().accounts))

    def _subscriptions(self) -> DesiredSource:
        if self.deps.subscriptions is not None:
            return self.deps.subscriptions
        from ticker_adapters.subscription_store import SubscriptionStore

        return SubscriptionStore(self._aws("dynamodb"), self.environment.subscriptions.name)

    def _instrument_source(self) -> InstrumentSource:
        if self.deps.instruments is not None:
            return self.deps.instruments
        environment = self.environment
        return source_from_setting(
            environment.feed.instruments_source,
            kite_rest_url=environment.kite.rest_url,
            plaintext_hosts=environment.kite.plaintext_hosts,
            snapshot=environment.snapshot,
            s3_client=self._aws("s3") if environment.snapshot is not None else None,
        )

    def _make_connection(
        self, tokens: TokenProvider, limiter: KeyLimiter
    ) -> Callable[[SlotId], KiteConnection]:
        s = self.settings
        settings = ConnectionSettings(
            watchdog=s.watchdog_seconds,
            connect_timeout=s.connect_timeout_seconds,
            close_timeout=s.close_timeout_seconds,
            reset_after=s.backoff_reset_after_seconds,
            rate_limited_delay=s.rate_limited_delay_seconds,
            max_frame_bytes=max_frame_bytes(s.max_instruments_per_connection),
        )
        backoff = exponential_backoff_delays(
            s.backoff_initial_seconds, s.backoff_factor, s.backoff_max_seconds
        )

        def make(slot: SlotId) -> KiteConnection:
            return KiteConnection(
                slot,
                url=self.environment.kite.ws_url,
                tokens=tokens,
                limiter=limiter,
                on_frame=self.pipeline.on_frame,
                on_text=self.pipeline.on_text,
                metrics=self.metrics,
                backoff=backoff,
                settings=settings,
                connect_fn=self.deps.connect_fn,
                supervisor=self.supervisor,
            )

        return make

    # -- running ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> bool:
        """Run until ``stop`` is set, then shut down; True when everything reached Kinesis
        (and every order message SQS)."""
        s = self.settings
        await self.health.start(s.health_host, s.health_port)
        for lane in self.lanes:
            lane.start()
        self.accounts = await self._accounts()
        if not self.accounts:
            log.error(
                "no accounts yet: set FEED_ACCOUNTS or store API credentials in the vault",
                extra={"discovering": self._discovers_accounts()},
            )
        tokens = self._tokens()
        planner = AssignmentPlanner(
            self.accounts,
            connections_per_account=s.max_connections_per_key,
            capacity=s.max_instruments_per_connection,
        )
        self.pool = FeedPool(
            planner,
            self._make_connection(tokens, KeyLimiter(s.max_connections_per_key)),
            self.metrics,
            # Kite's order messages come only on an account's own connections.
            every_account=self.order_updates is not None,
        )
        self.reconciler = Reconciler(
            self._subscriptions(),
            self.pool.apply,
            prices=self.pipeline.prices,
            watch=self.pipeline.watch,
            poll_seconds=s.subscription_poll_seconds,
            recentre_seconds=s.atm_recentre_seconds,
            hysteresis_steps=s.atm_hysteresis_steps,
        )
        spawn = self.supervisor.spawn
        if self.order_updates is not None:
            # Not in self._tasks: it keeps sending while the connections close, then flushes.
            self.order_updates.start(self.supervisor)
            log.info("order updates forwarded to SQS (ORDER_UPDATES_QUEUE_URL)")
        else:
            log.info(
                "order updates not forwarded: ORDER_UPDATES_QUEUE_URL is not set; "
                "Kite's order messages are counted and dropped"
            )
        self._gc_watch = GcWatch(self.metrics)
        self._tasks.append(spawn("loop-lag", lambda: watch_loop_lag(self.metrics)))
        self._tasks.append(spawn("instruments", lambda: self._instruments_loop(stop)))
        self._tasks.append(spawn("subscriptions", self._start_reconciler))
        self._tasks.append(spawn("heap", self._settle_heap_once_streaming))
        if self._discovers_accounts():
            self._tasks.append(spawn("accounts", self._accounts_loop))
        if s.emf_interval_seconds > 0:
            self._tasks.append(spawn("emf", self._emf_loop))
        status = self._status_writer()
        if status is not None:
            self._tasks.append(spawn("status", status.run))
        log.info(
            "feed started",
            extra={
                "accounts": list(self.accounts),
                "port": self.health.port,
                "lanes": len(self.lanes),
                "record_formatter": FORMATTER,
            },
        )
        if FORMATTER != "c":
            log.warning(
                "record formatter not compiled (feed_container._recordfmt): encoding ticks "
                "in Python takes about 1.7x the CPU per tick; build the package with a C compiler"
            )
        await stop.wait()
        return await self.shutdown()

    async def _instruments_loop(self, stop: asyncio.Event) -> None:
        source = self._instrument_source()
        delays = exponential_backoff(1.0, 2.0, 60.0)
        while not stop.is_set():
            try:
                registry = await load_registry(source)
            except Exception as exc:  # unreachable or a bad dump: keep the old one, retry
                log.error("instruments load failed", extra={"error": repr(exc)})
                await asyncio.sleep(next(delays))
                continue
            delays = exponential_backoff(1.0, 2.0, 60.0)
            self.pipeline.set_registry(registry)
            if self.reconciler is not None:
                self.reconciler.set_registry(registry)
            self.instruments_loaded = True
            self._loaded.set()
            settle_heap()  # the new registry lives all day; the old one is garbage now
            await asyncio.sleep(self.settings.instruments_refresh_seconds)

    async def _start_reconciler(self) -> None:
        # Windows need the instruments; explicit subscriptions do not, but the
        # partition keys do, so the first reconcile waits for them.
        await self._loaded.wait()
        assert self.reconciler is not None  # nosec B101 # set in run()
        await self.reconciler.run()

    async def _settle_heap_once_streaming(self) -> None:
        """Freeze the start-up heap once the caches a stream fills (routes, record prefixes,
        connections) exist: a while after the first subscriptions are applied."""
        assert self.reconciler is not None  # nosec B101 # set in run()
        await self.reconciler.reconciled.wait()
        await asyncio.sleep(self.settings.heap_settle_seconds)
        settle_heap()

    def _status_writer(self) -> StatusWriter | None:
        s = self.settings
        sink = self.deps.status
        if sink is None and self.deps.subscriptions is None:
            from ticker_adapters.feed_status import FeedStatusStore

            sink = FeedStatusStore(self._aws("dynamodb"), self.environment.subscriptions.name)
        if sink is None or s.status_interval_seconds <= 0:
            return None
        started_at = utc_now()

        def read() -> FeedStatus:
            assert self.pool is not None  # nosec B101 # set in run() before this task starts
            return feed_status(
                instance=s.instance_id,
                written_at=utc_now(),
                started_at=started_at,
                interval_seconds=s.status_interval_seconds,
                generation=self.reconciler.applied_generation if self.reconciler else None,
                desired=self.pool.desired_count,
                slots=self.pool.slot_states(),
                unassigned=self.pool.unassigned,
                accounts_waiting=self.accounts_waiting,
            )

        return StatusWriter(sink, read, interval=s.status_interval_seconds, metrics=self.metrics)

    def _discovers_accounts(self) -> bool:
        """True when the accounts are the vault's (neither injected nor FEED_ACCOUNTS)."""
        return self.deps.accounts is None and not self.settings.accounts

    async def _accounts_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.accounts_refresh_seconds)
            await self.discover_accounts()

    async def discover_accounts(self) -> tuple[str, ...]:
        """Follow the vault's accounts without a restart: add new ones, drop retired ones.

        Returns the accounts added. An account joins once it has API
        credentials *and* a live session: new instruments go to the
        least-loaded slots, so an account that has not logged in yet would take
        instruments it cannot stream. Each account is checked on its own: one
        whose session cannot be read (tampered, its KMS context refused, a
        throttled read) waits, counted in ``feed_account_session_errors_total``
        and logged, and never keeps the others out. An account retired (its
        API credentials deleted from the vault) is dropped: its instruments move
        to the other accounts' connections, then its own connections close
        (:meth:`FeedPool.remove_accounts`).
        """
        try:
            found = await self._accounts()
        except Exception as exc:  # the vault is unreachable: keep the accounts we have
            log.error("listing accounts failed", extra={"error": repr(exc)})
            return ()
        try:
            gone = [
                a
                for a in self.accounts
                if a not in found and await asyncio.to_thread(self._is_retired, a)
            ]
        except Exception as exc:  # cannot tell: keep every account we have
            log.error("checking retired accounts failed", extra={"error": repr(exc)})
            gone = []
        if gone:
            await self.retire_accounts(gone)
        new = [a for a in found if a not in self.accounts]
        ready = []
        for account in new:
            try:
                live = await asyncio.to_thread(self._has_live_session, account)
            except Exception as exc:  # see the docstring: this account waits, alone
                live = False
                error = type(exc).__name__
                self.metrics.inc("feed_account_session_errors_total", account=account, error=error)
                if self._account_log.allow(account) is not None:
                    log.warning(
                        "cannot read the session of a new account; it waits",
                        extra={"account": account, "error": error},
                    )
            if live:
                ready.append(account)
        self.accounts_waiting = tuple(a for a in new if a not in ready)
        assert self.pool is not None  # nosec B101 # set in run() before this task starts
        added = self.pool.add_accounts(ready)
        if added:
            self.accounts = (*self.accounts, *added)
            log.info("accounts added", extra={"accounts": list(added)})
        return added

    async def retire_accounts(self, accounts: list[str]) -> None:
        """Drop ``accounts`` from the pool (see :meth:`_accounts_loop`)."""
        assert self.pool is not None  # nosec B101 # set in run() before this task starts
        moved = await self.pool.remove_accounts(accounts)
        self.accounts = tuple(a for a in self.accounts if a not in accounts)
        for account in accounts:
            self.metrics.inc("feed_accounts_retired_total", account=account)
        log.info(
            "accounts retired: connections closed, instruments moved",
            extra={"accounts": accounts, "instruments_moved": len(moved)},
        )

    def _is_retired(self, account: str) -> bool:
        """Whether the vault no longer holds the account's API credentials.

        Asked of the account's own secret (its metadata: the feed never reads
        API secrets), not inferred from the listing alone: a listing that
        misses an account for a moment must not drop it.
        """
        return not self._vault().has_api_credentials(account)

    def _has_live_session(self, account: str) -> bool:
        from ticker_adapters.credentials import CredentialNotFoundError

        try:
            session = self._vault().session(account)
        except CredentialNotFoundError:  # no login yet: not yet
            return False
        return not session.is_expired(datetime.now(UTC))

    async def _emf_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.emf_interval_seconds)
            self.emit_emf()

    def emit_emf(self) -> None:
        """Write the EMF documents for the interval to the EMF stream (stdout)."""
        lines = self.metrics.emf_lines(self.settings.emf_namespace, int(time.time() * 1000))
        stream = self.deps.emf_stream
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()

    async def shutdown(self) -> bool:
        """Stop reading, flush, deliver or persist; see the module docstring."""
        s = self.settings
        started = time.monotonic()
        final = started + s.stop_timeout_seconds - 1.0
        # The last moment a new PutRecords may start and still end (by its timeout) in time.
        drain_deadline = final - s.put_timeout_seconds - 0.5
        self.health.alive = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pool is not None:
            # The close handshake gets its close_timeout (websockets aborts the socket
            # itself after that): cutting it short would cancel readers with frames still
            # on the wire, which the exchange has sent and we would miss. The settings
            # make room for it (stop_timeout >= close + put timeouts + 3 s), so the lanes
            # still have at least half a second after it to deliver the last frames.
            close_budget = max(
                0.0,
                min(s.close_timeout_seconds + 1.0, drain_deadline - time.monotonic() - 0.5),
            )
            try:
                await asyncio.wait_for(self.pool.stop(), close_budget)
            except TimeoutError:
                self.metrics.inc("feed_stop_close_timeouts_total")
                log.warning(
                    "connections did not finish closing; frames still on the wire are lost",
                    extra={"budget_seconds": round(close_budget, 3)},
                )
        closed = time.monotonic()
        forwarded = (
            self.order_updates.close(drain_deadline, final)
            if self.order_updates is not None
            else _nothing_to_forward()
        )
        *results, forwarded_all = await asyncio.gather(
            *(lane.close(drain_deadline, final) for lane in self.lanes),
            forwarded,
            return_exceptions=True,
        )
        for lane, result in zip(self.lanes, results, strict=True):
            if isinstance(result, BaseException):  # never expected: say so, finish the stop
                log.error("lane close failed", exc_info=result, extra={"lane": lane.index})
        if isinstance(forwarded_all, BaseException):  # never expected either
            log.error("order updates close failed", exc_info=forwarded_all)
        await self.writer.close()
        if self._gc_watch is not None:
            self._gc_watch.close()
        if self.settings.emf_interval_seconds > 0:
            self.emit_emf()
        await self.health.stop()
        delivered = all(result is True for result in (*results, forwarded_all))
        log.info(
            "feed stopped",
            extra={
                "delivered_everything": delivered,
                "seconds": round(time.monotonic() - started, 3),
                "close_seconds": round(closed - started, 3),
                "drain_deadline_seconds": round(drain_deadline - started, 3),
                "received": self.metrics.total("feed_ticks_received_total"),
                "acked": self.metrics.total("feed_kinesis_records_acked_total"),
                "spill_bytes_left": sum(lane.spill.bytes_on_disk for lane in self.lanes),
                "dropped": self.metrics.total("feed_dropped_records_total"),
                "order_updates_forwarded": self.metrics.total("feed_order_updates_forwarded_total"),
                "order_updates_dropped": self.metrics.total("feed_order_updates_dropped_total"),
            },
        )
        return delivered


async def _nothing_to_forward() -> bool:
    return True
