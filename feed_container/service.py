"""The feed service: every part wired together, started, and stopped within the stop timeout.

Start: health server, sender lanes (which first replay any spill a previous
run left), instruments, the connection pool and the reconciler. Run: until
the stop event (SIGTERM). Stop, within ``stop_timeout_seconds``:

1. ``/healthz`` turns 503; the reconciler stops;
2. every WebSocket is closed cleanly (frames already on the way are still
   read and processed: nothing received is dropped);
3. the batchers flush; the lanes deliver what they hold (spill included)
   until ``stop_timeout - put_timeout - 1.5`` s;
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import boto3
from websockets.asyncio.client import connect

from feed_container.backoff import backoff_factory, exponential_backoff
from feed_container.connection import (
    Connect,
    ConnectionSettings,
    KeyLimiter,
    KiteConnection,
    TokenProvider,
    VaultTokens,
)
from feed_container.health import HealthServer
from feed_container.instruments import InstrumentSource, load_registry, source_from_setting
from feed_container.kinesis import KinesisWriter
from feed_container.metrics import Metrics
from feed_container.pipeline import Bounds, Pipeline
from feed_container.planner import AssignmentPlanner, SlotId
from feed_container.pool import FeedPool
from feed_container.sender import CircuitBreaker, SendLane
from feed_container.settings import FeedSettings
from feed_container.spill import SpillStore
from feed_container.status import StatusSink, StatusWriter, feed_status, utc_now
from feed_container.subscriptions import DesiredSource, Reconciler
from ticker_adapters.feed_status import FeedStatus
from ticker_core.records import RecordBatcher

log = logging.getLogger("feed_container.service")


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
    #: Where the status record goes (default: the subscriptions table, unless the
    #: subscriptions themselves were injected).
    status: StatusSink | None = None


class FeedService:
    """One process's feed: build with settings, ``await run(stop)``."""

    def __init__(self, settings: FeedSettings, deps: Dependencies | None = None) -> None:
        self.settings = s = settings
        self.deps = deps or Dependencies()
        self.metrics = Metrics()
        self.writer = KinesisWriter.from_session(
            boto3.Session(),
            s.stream_name,
            timeout=s.put_timeout_seconds,
            endpoint_url=self.deps.kinesis_endpoint_url,
        )
        self.breaker = CircuitBreaker(
            s.breaker_failures,
            s.breaker_open_seconds,
            s.breaker_max_open_seconds,
            metrics=self.metrics,
        )
        self.lanes = [self._lane(i) for i in range(s.sender_lanes)]
        self.pipeline = Pipeline(
            self.lanes,
            self.metrics,
            bounds=Bounds(s.max_abs_price, s.max_future_skew_seconds),
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
            "feed_spill_corrupt_bytes_total",
            lambda: {(): float(sum(lane.spill.corrupt_bytes for lane in self.lanes))},
        )

    def _lane(self, index: int) -> SendLane:
        s = self.settings
        lanes = s.sender_lanes
        directory = Path(s.spill_dir) / f"lane-{index}-of-{lanes}"
        spill = SpillStore(
            directory, max_bytes=s.spill_max_bytes // lanes, segment_bytes=s.spill_segment_bytes
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
        from ticker_adapters.envelope import KmsEnvelopeCipher

        if not hasattr(self, "_vault_instance"):
            cipher = KmsEnvelopeCipher(self._aws("kms"), self.settings.kms_key_id)
            self._vault_instance = CredentialVault(
                self._aws("secretsmanager"),
                cipher,
                prefix=self.settings.secrets_prefix,
                cache_seconds=self.settings.credential_cache_seconds,
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

        return SubscriptionStore(self._aws("dynamodb"), self.settings.subscriptions_table)

    def _instrument_source(self) -> InstrumentSource:
        if self.deps.instruments is not None:
            return self.deps.instruments
        source = self.settings.instruments_source
        s3 = self._aws("s3") if source.startswith("s3://") else None
        return source_from_setting(source, kite_rest_url=self.settings.kite_rest_url, s3_client=s3)

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
        )
        backoff = backoff_factory(
            s.backoff_initial_seconds, s.backoff_factor, s.backoff_max_seconds
        )

        def make(slot: SlotId) -> KiteConnection:
            return KiteConnection(
                slot,
                url=s.kite_ws_url,
                tokens=tokens,
                limiter=limiter,
                on_frame=self.pipeline.on_frame,
                on_text=self.pipeline.on_text,
                metrics=self.metrics,
                backoff=backoff,
                settings=settings,
                connect_fn=self.deps.connect_fn,
            )

        return make

    # -- running ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> bool:
        """Run until ``stop`` is set, then shut down; True when everything reached Kinesis."""
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
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._instruments_loop(stop)))
        self._tasks.append(loop.create_task(self._start_reconciler()))
        if self._discovers_accounts():
            self._tasks.append(loop.create_task(self._accounts_loop()))
        if s.emf_interval_seconds > 0:
            self._tasks.append(loop.create_task(self._emf_loop()))
        status = self._status_writer()
        if status is not None:
            self._tasks.append(loop.create_task(status.run()))
        log.info(
            "feed started",
            extra={
                "accounts": list(self.accounts),
                "port": self.health.port,
                "lanes": len(self.lanes),
            },
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
            await asyncio.sleep(self.settings.instruments_refresh_seconds)

    async def _start_reconciler(self) -> None:
        # Windows need the instruments; explicit subscriptions do not, but the
        # partition keys do, so the first reconcile waits for them.
        await self._loaded.wait()
        assert self.reconciler is not None  # nosec B101 # set in run()
        await self.reconciler.run()

    def _status_writer(self) -> StatusWriter | None:
        s = self.settings
        sink = self.deps.status
        if sink is None and self.deps.subscriptions is None:
            from ticker_adapters.feed_status import FeedStatusStore

            sink = FeedStatusStore(self._aws("dynamodb"), s.subscriptions_table)
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
        """Follow the vault's accounts without a restart: add new ones, drop retired ones.

        An account joins once it has API credentials *and* a live session: new
        instruments go to the least-loaded slots, so an account that has not
        logged in yet would take instruments it cannot stream. An account
        retired (its API credentials deleted from the vault) is dropped: its
        instruments move to the other accounts' connections, then its own
        connections close (:meth:`FeedPool.remove_accounts`).
        """
        while True:
            await asyncio.sleep(self.settings.accounts_refresh_seconds)
            try:
                found = await self._accounts()
                new = [a for a in found if a not in self.accounts]
                ready = [a for a in new if await asyncio.to_thread(self._has_live_session, a)]
                gone = [
                    a
                    for a in self.accounts
                    if a not in found and await asyncio.to_thread(self._is_retired, a)
                ]
            except Exception as exc:  # the vault is unreachable: keep the accounts we have
                log.error("listing accounts failed", extra={"error": repr(exc)})
                continue
            if gone:
                await self.retire_accounts(gone)
            self.accounts_waiting = tuple(a for a in new if a not in ready)
            assert self.pool is not None  # nosec B101 # set in run() before this task starts
            added = self.pool.add_accounts(ready)
            if added:
                self.accounts = (*self.accounts, *added)
                log.info("accounts added", extra={"accounts": list(added)})

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
        from ticker_adapters.credentials import CredentialError

        try:
            session = self._vault().session(account)
        except CredentialError:  # no login yet (or an unreadable one): not yet
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
        drain_deadline = max(started + 0.5, final - s.put_timeout_seconds - 0.5)
        self.health.alive = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pool is not None:
            # The close handshake gets its full close_timeout (websockets aborts the
            # socket itself after that): cutting it short would cancel readers with
            # frames still on the wire, which the exchange has sent and we would miss.
            close_budget = max(drain_deadline - time.monotonic(), s.close_timeout_seconds + 1.0)
            try:
                await asyncio.wait_for(
                    self.pool.stop(), min(close_budget, final - time.monotonic() - 0.5)
                )
            except TimeoutError:
                self.metrics.inc("feed_unclean_closes_total")
                log.warning(
                    "connections did not finish closing; frames still on the wire are lost",
                    extra={"budget_seconds": round(close_budget, 3)},
                )
        results = await asyncio.gather(*(lane.close(drain_deadline, final) for lane in self.lanes))
        await self.writer.close()
        if self.settings.emf_interval_seconds > 0:
            self.emit_emf()
        await self.health.stop()
        delivered = all(results)
        log.info(
            "feed stopped",
            extra={
                "delivered_everything": delivered,
                "seconds": round(time.monotonic() - started, 3),
                "received": self.metrics.total("feed_ticks_received_total"),
                "acked": self.metrics.total("feed_kinesis_records_acked_total"),
                "spill_bytes_left": sum(lane.spill.bytes_on_disk for lane in self.lanes),
                "dropped": self.metrics.total("feed_dropped_records_total"),
            },
        )
        return delivered
