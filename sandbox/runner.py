"""The sandbox run: start everything on 127.0.0.1, run, drain, report, stop everything.

Start order (each step needs the ones before it): PostgreSQL (embedded, or a
fresh database on ``DATABASE_URL``'s server), moto's server, the AWS
resources, the migrations, the Kite simulator, the accounts (a real login
each, stored encrypted in the vault), the desired subscriptions, the
Lambda functions with their event source mappings (``ticks`` -> greeks,
``ticks`` -> persist, ``greeks`` -> persist), the instruments snapshot, and
last the feed container, as the same entrypoint the Dockerfile runs.

The run ends at ``--duration`` or on Ctrl-C. Then the drain: the simulator's
market closes (no new ticks), the feed is waited for until it has received
everything the simulator sent and Kinesis acknowledged everything, then it is
stopped (it flushes on SIGTERM); the mappings are waited for until every shard
of both streams is processed; then the report compares the witnesses. A
second Ctrl-C skips the drain. Everything is stopped in reverse order, each
child's whole process group, and temporary data is removed unless ``--keep``
(or the run failed, when the logs are worth reading).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import asyncpg

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations
from sandbox.chaos import ChaosEvent, ChaosSchedule
from sandbox.dashboard import Dashboard, Sample, parse_prometheus, total
from sandbox.esm import EventSourceMapping, MappingConfig, MappingTarget
from sandbox.kinesis_proxy import KinesisFaultProxy
from sandbox.kite import SimAccount, SimAdmin, register_accounts, rotate_session
from sandbox.lambda_runtime import REPO_ROOT, LambdaFunction
from sandbox.moto_server import AwsEndpoint, MotoServer
from sandbox.postgres import ConnectionInfo, EmbeddedPostgres, free_port
from sandbox.processes import ManagedProcess, ProcessError
from sandbox.provision import Resources, client, provision, queue_depth
from sandbox.report import Report, build_report, render, scan_greeks, scan_table, scan_ticks
from sandbox.subscriptions import SubscriptionPlan, plan_subscriptions, write_plan
from sandbox.trading import ApiSandbox, OrderDriver, order_facts, start_api, trading_rows
from sandbox.websocket_api import (
    AUTHORIZER,
    FANOUT_HANDLER,
    FANOUT_MAPPING,
    FANOUTS,
    ROUTES,
    Witness,
    authorizer_env,
    client_command,
    fanout_env,
    nearest_chain,
    routes_env,
    start_websocket_api,
)
from sandbox.websocket_api import endpoints as websocket_endpoints
from sandbox.ws_gateway import LocalWebSocketGateway
from ticker_adapters.credentials import CredentialVault
from ticker_adapters.envelope import KmsEnvelopeCipher
from ticker_adapters.subscription_store import SubscriptionStore
from ticker_core.instruments import InstrumentRegistry, parse_instruments
from ticker_core.tz import IST

SIM_TICK_INTERVAL_S = 0.1  # one frame per connection per 100 ms, as Kite's ticker batches
MAX_TICKS_PER_INSTRUMENT = 1 / SIM_TICK_INTERVAL_S
FEED_WATCHDOG_S = 5.0
FEED_SETTLE_S = 15.0  # drain: nothing moving for this long means nothing more will come
API_ENVIRONMENTS = 4  # the API function's concurrency, all initialised before the run


T = TypeVar("T")


def database_settings(info: ConnectionInfo) -> DatabaseSettings:
    """The Lambdas' database settings for ``info`` (what ``DB_*`` would say)."""
    values: dict[str, Any] = {k[3:].lower(): v for k, v in info.db_env().items()}
    return DatabaseSettings(**values)


class SandboxError(RuntimeError):
    """A component could not be started or the run could not be completed."""


@dataclass
class Options:
    """``python -m sandbox`` options (see ``__main__``)."""

    duration_s: float = 60.0
    accounts: int = 2
    rate: float = 1000.0
    shards: int = 4
    chaos: bool = False
    keep: bool = False
    seed: int = 1
    run_dir: Path | None = None
    report_path: Path | None = None
    database_url: str | None = None
    live: bool | None = None
    drain_timeout_s: float = 120.0
    ticks_per_instrument: float = 4.0


# What every function's environment has besides its own settings.
FUNCTION_ENV = {"POWERTOOLS_METRICS_NAMESPACE": "TickerService", "LOG_LEVEL": "WARNING"}
# Event source mappings as the CDK stack configures them.
GREEKS_MAPPING = MappingConfig(
    batch_size=500,
    maximum_batching_window_s=0.5,
    maximum_retry_attempts=10,
    bisect_batch_on_function_error=True,
    report_batch_item_failures=True,
)
PERSIST_MAPPING = MappingConfig(
    batch_size=1000,
    maximum_batching_window_s=1.0,
    maximum_retry_attempts=10,
    bisect_batch_on_function_error=True,
    report_batch_item_failures=True,
)


@dataclass
class Children:
    """Every process the run started, for the report and the no-leftovers check."""

    started: dict[str, list[int]] = field(default_factory=dict)

    def add(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.started.setdefault(name, []).append(pid)


class Sandbox:
    """One ``make run``."""

    def __init__(self, options: Options, out: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_dir = (options.run_dir or REPO_ROOT / ".run" / stamp).resolve()
        self.logs = self.run_dir / "logs"
        self.report_path = (options.report_path or self.run_dir / "report.json").resolve()
        self.interrupts = 0
        self._stop = threading.Event()
        self._cleanups: list[tuple[str, Callable[[], Any]]] = []
        self.children = Children()
        self.started_at = time.monotonic()
        self.notes: list[str] = []
        # Filled in as the run starts.
        self.pg: EmbeddedPostgres | None = None
        self.db: ConnectionInfo | None = None
        self.moto: MotoServer | None = None
        self.aws: AwsEndpoint | None = None
        self.resources: Resources | None = None
        self.sim_process: ManagedProcess | None = None
        self.sim: SimAdmin | None = None
        self.rest_url = ""
        self.ws_url = ""
        self.accounts: list[SimAccount] = []
        self.vault: CredentialVault | None = None
        self.registry: InstrumentRegistry | None = None
        self.plan: SubscriptionPlan | None = None
        self.functions: dict[str, LambdaFunction] = {}
        self.mappings: dict[str, EventSourceMapping] = {}
        self.feed: ManagedProcess | None = None
        self.feed_port = 0
        self.proxy: KinesisFaultProxy | None = None
        self.chaos: ChaosSchedule | None = None
        self.api_port = free_port()
        self.api: ApiSandbox | None = None
        self.driver: OrderDriver | None = None
        self.ws_gateway: LocalWebSocketGateway | None = None
        self.ws_chain: str | None = None
        self.witness: Witness | None = None
        self._feed_state: tuple[float, ...] = ()
        self._last_feed_metrics: dict[str, dict[Any, float]] = {}
        self._feed_state_since = 0.0

    # -- helpers ----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _on_exit(self, name: str, action: Callable[[], Any]) -> None:
        self._cleanups.append((name, action))

    def _elapsed(self) -> float:
        return time.monotonic() - self.started_at

    @staticmethod
    def _need(value: T | None, what: str) -> T:
        if value is None:
            raise SandboxError(f"{what} is not running")
        return value

    def interrupt(self, signum: int = signal.SIGINT, frame: Any = None) -> None:
        """Ctrl-C: the first ends the run (drain and report), the second skips the drain."""
        self.interrupts += 1
        self._stop.set()
        if self.interrupts == 1:
            self.say(
                "\ninterrupted: stopping the run, draining and reporting (Ctrl-C again to skip)"
            )
        else:
            self.say("\ninterrupted again: skipping the drain")

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start, run, drain, report, stop. Returns the exit code (0 only if complete)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        report: Report | None = None
        error: BaseException | None = None
        try:
            self.start()
            self.serve()
            if self.interrupts < 2:
                self.drain()
                report = self.make_report()
        except (Exception, KeyboardInterrupt) as exc:
            error = exc
            self.say(f"sandbox failed: {exc!r}")
        finally:
            self.stop_all()
        complete = report is not None and report.complete and error is None
        self.cleanup_files(keep_logs=not complete)
        if report is not None:
            self.say(render(report, str(self.report_path)))
        if self.interrupts >= 2 and report is None:
            return 130
        return 0 if complete else 1

    def start(self) -> None:
        o = self.options
        self.say(f"ticker-service sandbox: run directory {self.run_dir}")
        self._start_postgres()
        self._start_moto()
        self._provision()
        self._migrate()
        self._start_simulator()
        self._register_accounts()
        self._subscribe()
        self._start_functions()
        self._publish_instruments()
        self._start_api()
        self._start_websocket()
        self._start_mappings()
        self._start_feed()
        self.say(
            f"running for {o.duration_s:g}s: {o.accounts} accounts, target {o.rate:,.0f} ticks/s, "
            f"{o.shards} shards per stream{', chaos on' if o.chaos else ''} (Ctrl-C ends the run)"
        )

    # -- components -------------------------------------------------------------------------

    def _start_postgres(self) -> None:
        url = self.options.database_url
        if url:
            server = ConnectionInfo.from_url(url)
            name = f"ticker_sandbox_{secrets.token_hex(4)}"
            asyncio.run(self._admin_sql(server, f'create database "{name}"'))
            self.db = ConnectionInfo(
                server.host, server.port, server.user, server.password, name, server.ca_file
            )
            if not self.options.keep:
                self._on_exit(
                    "database",
                    lambda: asyncio.run(
                        self._admin_sql(server, f'drop database if exists "{name}" with (force)')
                    ),
                )
            self.say(f"PostgreSQL: database {name} on {server.host}:{server.port} (DATABASE_URL)")
            return
        base = self.run_dir / "postgres" if self.options.keep else None
        self.pg = EmbeddedPostgres(base_dir=base)
        self.db = self.pg.start()
        self._on_exit("postgres", self.pg.close)
        self.children.add("postgres", self.pg.pid)
        self.say(f"PostgreSQL: embedded, TLS on 127.0.0.1:{self.db.port}")

    @staticmethod
    async def _admin_sql(server: ConnectionInfo, sql: str) -> None:
        conn = await asyncpg.connect(**connection_parameters(database_settings(server)))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def _db_settings(self) -> DatabaseSettings:
        return database_settings(self._need(self.db, "PostgreSQL"))

    def _start_moto(self) -> None:
        self.moto = MotoServer()
        self.aws = self.moto.start()
        self._on_exit("moto", self.moto.stop)
        self.children.add("moto", self.moto.pid)
        self.say(f"moto: {self.aws.url} (Kinesis, DynamoDB, KMS, Secrets Manager, SQS, S3)")

    def _provision(self) -> None:
        aws = self._need(self.aws, "moto")
        self.resources = provision(aws, shards=self.options.shards)
        r = self.resources
        self.say(
            f"provisioned: streams {r.names.ticks_stream}/{r.names.greeks_stream} x{r.shards} "
            f"shards, table {r.names.subscriptions_table}, KMS key, on-failure queues, "
            f"bucket {r.names.instruments_bucket}"
        )

    def _migrate(self) -> None:
        async def apply() -> list[str]:
            conn = await asyncpg.connect(**connection_parameters(self._db_settings()))
            try:
                return [
                    f"{m.version:04d}_{m.name}" for m in await migrate(conn, bundled_migrations())
                ]
            finally:
                await conn.close()

        applied = asyncio.run(apply())
        self.say(f"migrations applied: {', '.join(applied) or 'none pending'}")

    def _sim_rates(self, instruments: int) -> tuple[float, float]:
        per_instrument = min(self.options.rate / max(instruments, 1), MAX_TICKS_PER_INSTRUMENT)
        return per_instrument, self.options.rate

    def _start_simulator(self) -> None:
        o = self.options
        admin_token = secrets.token_urlsafe(24)
        target = math.ceil(o.rate / o.ticks_per_instrument)
        per_instrument, cap = self._sim_rates(max(target, 1))
        args = [
            "--json",
            "--accounts", str(o.accounts),
            "--seed", str(o.seed),
            "--tick-interval", str(SIM_TICK_INTERVAL_S),
            "--tick-rate", f"{per_instrument:.4f}",
            "--max-ticks-per-second", f"{cap:.0f}",
            "--redirect-url", "http://127.0.0.1:9/kite/callback",
            "--postback-url", f"http://127.0.0.1:{self.api_port}/postbacks",
            "--no-ip-check",
        ]  # fmt: skip
        env = {**os.environ, "KITE_SIM_ADMIN_TOKEN": admin_token}
        self.sim_process = ManagedProcess.python(
            "kite_sim", "kite_sim", args, env=env, log_path=self.logs / "kite_sim.log"
        ).start()
        self._on_exit("kite_sim", self.sim_process.stop)
        self.children.add("kite_sim", self.sim_process.pid)
        info = self.sim_process.wait_for_json_line("rest_url", timeout=90)
        self.rest_url, self.ws_url = info["rest_url"], info["ws_url"]
        self.sim = SimAdmin(self.rest_url, admin_token)
        self.say(
            f"kite_sim: {self.rest_url} ({info['instruments']:,} instruments, market time "
            f"{info['market_time']})"
        )

    def _register_accounts(self) -> None:
        aws, r, sim = (
            self._need(self.aws, "moto"),
            self._need(self.resources, "AWS"),
            self._need(self.sim, "kite_sim"),
        )
        self.vault = CredentialVault(
            client(aws, "secretsmanager"),
            KmsEnvelopeCipher(client(aws, "kms"), r.kms_key_arn),
            prefix=r.names.secrets_prefix,
            kms_key_id=r.kms_key_arn,
        )
        self.accounts = sim.accounts()
        ids = register_accounts(self.vault, self.rest_url, self.accounts)
        self.say(f"accounts: {', '.join(ids)} logged in; API secrets and tokens in the vault (KMS)")

    def _subscribe(self) -> None:
        aws, r, sim = (
            self._need(self.aws, "moto"),
            self._need(self.resources, "AWS"),
            self._need(self.sim, "kite_sim"),
        )
        self.registry = InstrumentRegistry(parse_instruments(sim.instruments_csv()).instruments)
        target = math.ceil(self.options.rate / self.options.ticks_per_instrument)
        self.plan = plan_subscriptions(self.registry, target_instruments=target)
        store = SubscriptionStore(client(aws, "dynamodb"), r.names.subscriptions_table)
        write_plan(store, self.plan)
        # The per-instrument rate follows the plan's actual size.
        per_instrument, cap = self._sim_rates(self.plan.estimated_instruments)
        defaults = dict.fromkeys(("NSE", "INDICES", "NFO-FUT", "NFO-OPT"), per_instrument)
        sim.tick_rates(defaults, cap)
        self.say(f"subscriptions (~{self.plan.estimated_instruments:,} instruments):")
        for line in self.plan.describe():
            self.say(f"  {line}")

    def _aws_env(self, *, kinesis_via_proxy: bool) -> dict[str, str]:
        aws = self._need(self.aws, "moto")
        env = aws.env()
        if kinesis_via_proxy and self.proxy is not None:
            env["AWS_ENDPOINT_URL_KINESIS"] = self.proxy.url
        return env

    def _function(
        self, name: str, handler: str, env: dict[str, str], **settings: Any
    ) -> LambdaFunction:
        function = LambdaFunction(
            name, handler, env={**FUNCTION_ENV, **env}, log_dir=self.logs, **settings
        )
        self.functions[name] = function
        self._on_exit(f"function {name}", function.kill_all)
        return function

    def _start_functions(self) -> None:
        r = self._need(self.resources, "AWS")
        db = self._need(self.db, "PostgreSQL")
        if self.options.chaos:
            self.proxy = KinesisFaultProxy(self._need(self.aws, "moto").url)
            self.proxy.start()
            self._on_exit("kinesis proxy", self.proxy.close)
        self._function(
            "persist",
            "lambdas.persist.handler.handler",
            {**self._aws_env(kinesis_via_proxy=False), **db.db_env()},
            timeout_s=60,
            memory_mb=1024,
            max_concurrency=2 * r.shards,
        )
        snapshot = {"INSTRUMENTS_BUCKET": r.names.instruments_bucket}
        self._function(
            "greeks",
            "lambdas.greeks.handler.handler",
            {
                **self._aws_env(kinesis_via_proxy=True),
                **snapshot,
                "GREEKS_OUTPUT_STREAM": r.names.greeks_stream,
            },
            timeout_s=60,
            memory_mb=1024,
            max_concurrency=r.shards,
        )
        self._function(
            "instruments",
            "lambdas.instruments.handler.handler",
            {
                **self._aws_env(kinesis_via_proxy=False),
                **db.db_env(),
                **snapshot,
                "INSTRUMENTS_KITE_ROOT": self.rest_url,
                "KITE_CREDENTIALS_KMS_KEY_ARN": r.kms_key_arn,
                "KITE_CREDENTIALS_PREFIX": r.names.secrets_prefix,
            },
            timeout_s=120,
            max_concurrency=1,
        )

    def _api_env(self) -> dict[str, str]:
        r = self._need(self.resources, "AWS")
        db = self._need(self.db, "PostgreSQL")
        return {
            **self._aws_env(kinesis_via_proxy=False),
            **db.db_env(),
            "API_GRANTS_TABLE": r.names.grants_table,
            "API_IDEMPOTENCY_TABLE": r.names.idempotency_table,
            "API_LIMITER_TABLE": r.names.limiter_table,
            "API_EVENT_BUS": r.names.event_bus,
            "API_KITE_ROOT": self.rest_url,
            "API_CORS_ORIGINS": "http://127.0.0.1:8000",
            "INSTRUMENTS_BUCKET": r.names.instruments_bucket,
            "KITE_CREDENTIALS_KMS_KEY_ARN": r.kms_key_arn,
            "KITE_CREDENTIALS_PREFIX": r.names.secrets_prefix,
        }

    def _start_api(self) -> None:
        """The API function behind the local API Gateway, its users, and endpoints.json."""
        r = self._need(self.resources, "AWS")
        function = self._function(
            "api",
            "lambdas.api.handler.handler",
            self._api_env(),
            timeout_s=29,
            max_concurrency=API_ENVIRONMENTS,
        )
        self.api = start_api(
            aws=self._need(self.aws, "moto"),
            invoke=function.invoke,
            port=self.api_port,
            accounts=[a.user_id for a in self.accounts],
            pool_name=r.names.user_pool,
            environments=API_ENVIRONMENTS,
        )
        self._on_exit("api gateway", self.api.server.stop)
        endpoints = self.run_dir / "endpoints.json"
        endpoints.write_text(json.dumps(self.api.endpoints(self.run_dir), indent=2) + "\n")
        self.say(
            f"API: {self.api.url} (local API Gateway, Cognito pool {self.api.pool.pool_id}; "
            f"users sandbox-admin, sandbox-trader; {endpoints})"
        )
        self.say("  place a paper order:")
        self.say("  " + self.api.curl(endpoints, self.accounts[0].user_id, "INFY"))

    def _start_websocket(self) -> None:
        """The WebSocket API's functions behind the local gateway; endpoints.json; the command."""
        r = self._need(self.resources, "AWS")
        api = self._need(self.api, "the API")
        aws_env = self._aws_env(kinesis_via_proxy=False)
        authorizer = self._function(
            *AUTHORIZER, authorizer_env(api.pool), timeout_s=10, max_concurrency=2
        )
        routes = self._function(
            *ROUTES, {**aws_env, **routes_env(r)}, timeout_s=29, max_concurrency=2
        )
        gateway = start_websocket_api(
            authorizer=authorizer.invoke, integration=routes.invoke, region=api.pool.region
        )
        self.ws_gateway = gateway
        self._on_exit("websocket gateway", gateway.stop)
        for channel, name in FANOUTS.items():
            env = {**aws_env, **fanout_env(r, channel, gateway.management_url)}
            self._function(name, FANOUT_HANDLER, env, timeout_s=60, max_concurrency=r.shards)
        endpoints = self.run_dir / "endpoints.json"
        document = {**api.endpoints(self.run_dir), **websocket_endpoints(gateway)}
        endpoints.write_text(json.dumps(document, indent=2) + "\n")
        registry = self._need(self.registry, "the instruments")
        self.ws_chain = nearest_chain(registry, "NIFTY", datetime.now(IST).date())
        self.say(f"WebSocket API: {gateway.url} (local API Gateway; a fan-out per stream)")
        if self.ws_chain:
            self.say("  watch an option chain's live ticks and Greeks:")
            self.say("  " + client_command(endpoints, self.ws_chain, python=sys.executable))

    def _publish_instruments(self) -> None:
        """The day's snapshot the Greeks function reads, published as the schedule would."""
        function = self.functions["instruments"]
        result = function.invoke({})
        if result.failed:
            raise SandboxError(
                f"instruments snapshot not published: {result.error_type}: {result.error_message}"
            )
        payload = result.payload or {}
        self.say(f"instruments snapshot: {payload.get('status', 'published')} to S3 and PostgreSQL")
        function.close()

    def _start_mappings(self) -> None:
        aws = self._need(self.aws, "moto")
        r = self._need(self.resources, "AWS")
        pairs: list[tuple[str, str, MappingConfig, str | None]] = [
            ("ticks", "greeks", GREEKS_MAPPING, r.greeks_failures_url),
            ("ticks", "persist", PERSIST_MAPPING, r.persist_failures_url),
            ("greeks", "persist", PERSIST_MAPPING, r.persist_failures_url),
        ]
        pairs += [(c.value, name, FANOUT_MAPPING, None) for c, name in FANOUTS.items()]
        for stream, function_name, config, dlq in pairs:
            function = self.functions[function_name]
            stream_name = r.names.ticks_stream if stream == "ticks" else r.names.greeks_stream
            arn = r.ticks_stream_arn if stream == "ticks" else r.greeks_stream_arn
            target = MappingTarget(
                function_name=function.name,
                function_arn=function.arn,
                stream_name=stream_name,
                stream_arn=arn,
                role_arn=r.role_arn(function.name),
                on_failure_queue_url=dlq,
            )
            mapping = EventSourceMapping(
                f"{stream}->{function_name}",
                config,
                target,
                function,
                lambda service: client(aws, service),
                poll_interval_s=1.0,
            )
            mapping.start()
            self.mappings[mapping.name] = mapping
            self._on_exit(f"mapping {mapping.name}", mapping.stop)
        self.say(f"event source mappings: {', '.join(self.mappings)}")

    def _feed_env(self) -> dict[str, str]:
        r = self._need(self.resources, "AWS")
        spill = self.run_dir / "feed-spill"
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FEED_", "AWS_"))},
            **self._aws_env(kinesis_via_proxy=True),
            "FEED_KITE_WS_URL": self.ws_url,
            "FEED_KITE_REST_URL": self.rest_url,
            "FEED_SECRETS_PREFIX": r.names.secrets_prefix,
            "FEED_KMS_KEY_ID": r.kms_key_arn,
            "FEED_SUBSCRIPTIONS_TABLE": r.names.subscriptions_table,
            "FEED_STREAM_NAME": r.names.ticks_stream,
            # The snapshot the instruments function published, as the Greeks function reads it.
            "FEED_INSTRUMENTS_SOURCE": f"s3://{r.names.instruments_bucket}/instruments/",
            "FEED_HEALTH_HOST": "127.0.0.1",
            "FEED_HEALTH_PORT": str(self.feed_port),
            "FEED_SPILL_DIR": str(spill),
            "FEED_WATCHDOG_SECONDS": str(FEED_WATCHDOG_S),
            "FEED_BACKOFF_INITIAL_SECONDS": "0.5",
            "FEED_BACKOFF_MAX_SECONDS": "5",
            "FEED_CREDENTIAL_CACHE_SECONDS": "5",
            "FEED_EMF_INTERVAL_SECONDS": "0",
            "FEED_STOP_TIMEOUT_SECONDS": "60",
        }

    def _start_feed(self) -> None:
        self.feed_port = free_port()
        self.feed = ManagedProcess.python(
            "feed_container",
            "feed_container",
            [],
            env=self._feed_env(),
            log_path=self.logs / "feed_container.log",
            cwd=REPO_ROOT,
        ).start()
        self._on_exit("feed_container", self._stop_feed)
        self.children.add("feed_container", self.feed.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.feed.check_running()
            if self.feed_metrics() is not None:
                break
            time.sleep(0.2)
        else:
            raise SandboxError(f"feed container not serving /metrics:\n{self.feed.tail()}")
        self.say(f"feed container: python -m feed_container, metrics on 127.0.0.1:{self.feed_port}")

    def _stop_feed(self) -> None:
        if self.feed is not None:
            code = self.feed.stop(timeout=70)
            if code not in (0, None, -signal.SIGTERM):
                self.notes.append(f"feed container exited with {code}")

    # -- observing --------------------------------------------------------------------------

    def feed_metrics(self) -> dict[str, dict[Any, float]] | None:
        """The feed's /metrics, parsed (None when it does not answer)."""
        if not self.feed_port:
            return None
        url = f"http://127.0.0.1:{self.feed_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # nosec B310 # loopback
                return parse_prometheus(response.read().decode())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def sample(self, phase: str) -> Sample:
        """Everything the dashboard shows, now."""
        sample = Sample(elapsed_s=self._elapsed(), phase=phase)
        if self.sim is not None:
            with contextlib.suppress(Exception):
                counters = self.sim.counters(per_instrument=False)["feed"]
                sample.sim_sent = int(counters["packets_sent"])
                by_key = {a.api_key: a.user_id for a in self.accounts}
                for conn in counters["connections"].values():
                    user = by_key.get(conn["api_key"], conn["api_key"])
                    sample.sim_connections[user] = sample.sim_connections.get(user, 0) + 1
                for account in self.accounts:
                    sample.sim_connections.setdefault(account.user_id, 0)
        metrics = self.feed_metrics()
        if metrics is not None:
            self._last_feed_metrics = metrics  # once the feed has stopped, its last word stands
        sample.feed = self._last_feed_metrics
        sample.mappings = {name: m.view() for name, m in self.mappings.items()}
        sample.functions = {name: f.stats() for name, f in self.functions.items()}
        sample.on_failure = int(sum(view.on_failure_sent for view in sample.mappings.values()))
        sample.chaos = self.chaos.lines() if self.chaos else []
        sample.notes = list(self.notes)
        return sample

    def _check_children(self) -> None:
        for process in (self.sim_process, self.feed):
            if process is not None:
                process.check_running()

    # -- phases -----------------------------------------------------------------------------

    def serve(self) -> None:
        """The run: the dashboard until the duration ends or Ctrl-C."""
        o = self.options
        if o.chaos:
            self.chaos = ChaosSchedule(self._chaos_events(), o.duration_s or 60.0)
            self.chaos.start()
        if self.api is not None:
            self.driver = OrderDriver(self.api, ["INFY", "RELIANCE", "TCS", "SBIN", "HDFCBANK"])
            self.driver.start()
        if self.ws_gateway is not None and self.api is not None and self.ws_chain:
            self.witness = Witness(self.ws_gateway.url, self.api.trader.id_token, self.ws_chain)
            self.witness.start()
        started = time.monotonic()
        with Dashboard(self.out, live=o.live) as dashboard:
            while not self._stop.is_set():
                if o.duration_s and time.monotonic() - started >= o.duration_s:
                    break
                self._check_children()
                dashboard.update(self.sample("running"))
                self._stop.wait(1.0)
            dashboard.update(self.sample("run over"), force_line=True)
        if self.chaos is not None:
            self.chaos.stop()
        if self.driver is not None:
            self.driver.stop()
        if self.witness is not None:
            self.witness.stop()

    def drain(self) -> None:
        """Stop new ticks, let everything in flight reach PostgreSQL."""
        sim = self._need(self.sim, "kite_sim")
        self.say("draining: market closed at the simulator; waiting for the pipeline to catch up")
        sim.close_market()
        with Dashboard(self.out, live=self.options.live, log_every_s=5.0) as dashboard:
            if self.feed is not None:
                self._wait(
                    "the feed to receive and deliver every tick",
                    self._feed_caught_up,
                    dashboard,
                )
                self._stop_feed()
                self.feed = None
            sent_before = sim.counters(per_instrument=False)["feed"]["packets_sent"]
            since = time.time()
            order = [m for m in self.mappings if m.startswith("ticks")] + [
                m for m in self.mappings if m.startswith("greeks")
            ]
            for name in order:
                self._wait(
                    f"{name} to process every record",
                    _caught_up(self.mappings[name], since),
                    dashboard,
                )
                since = time.time()
            if sim.counters(per_instrument=False)["feed"]["packets_sent"] != sent_before:
                self.notes.append("the simulator sent ticks after the feed stopped")
            dashboard.update(self.sample("drained"), force_line=True)

    def _feed_caught_up(self) -> bool:
        """Everything the simulator sent was received, and Kinesis acknowledged all of it.

        If the feed lost or gained ticks the counts never meet; once nothing has
        moved for ``FEED_SETTLE_S`` the drain goes on and the report says what.
        (What the feed still buffers is flushed when it is stopped.)
        """
        metrics = self.feed_metrics()
        sim = self._need(self.sim, "kite_sim")
        if metrics is None:
            return False
        sent = int(sim.counters(per_instrument=False)["feed"]["packets_sent"])
        received = total(metrics, "feed_ticks_received_total")
        accepted = total(metrics, "feed_ticks_accepted_total")
        acked = total(metrics, "feed_kinesis_records_acked_total")
        buffered = total(metrics, "feed_buffer_bytes") + total(metrics, "feed_spill_bytes")
        if received >= sent and acked >= accepted:
            return True
        state = (sent, received, accepted, acked, buffered)
        now = time.monotonic()
        if state != self._feed_state:
            self._feed_state, self._feed_state_since = state, now
        elif now - self._feed_state_since >= FEED_SETTLE_S:
            self.notes.append(
                f"feed settled: simulator sent {sent:,}, feed received {received:,.0f}, "
                f"accepted {accepted:,.0f}, Kinesis acknowledged {acked:,.0f}, "
                f"{buffered:,.0f} bytes buffered"
            )
            return True
        return False

    def _progress(self) -> tuple[float, ...]:
        """Counters that move while the pipeline still works through a backlog."""
        metrics = self.feed_metrics() or {}
        moving = [
            total(metrics, "feed_ticks_received_total"),
            total(metrics, "feed_kinesis_records_acked_total"),
        ]
        for mapping in self.mappings.values():
            view = mapping.view()
            moving += [view.total("invocations"), view.total("records_succeeded")]
        return tuple(moving)

    def _wait(self, what: str, done: Callable[[], bool], dashboard: Dashboard) -> None:
        """Wait for ``done`` while anything makes progress; a stall past the timeout is noted.

        A big backlog (a high ``--rate`` on a small machine) drains slowly but
        surely, so only a drain that stops moving for ``--drain-timeout``
        seconds gives up; the report then says what did not arrive.
        """
        progress, moved_at = self._progress(), time.monotonic()
        while not done():
            if self.interrupts >= 2:
                raise SandboxError("drain skipped")
            now = time.monotonic()
            current = self._progress()
            if current != progress:
                progress, moved_at = current, now
            elif now - moved_at > self.options.drain_timeout_s:
                self.notes.append(f"drain timed out waiting for {what}")
                self.say(
                    f"drain: nothing moved for {self.options.drain_timeout_s:g}s waiting for "
                    f"{what}; reporting what there is"
                )
                return
            dashboard.update(self.sample(f"draining: {what}"))
            time.sleep(0.5)

    # -- chaos ------------------------------------------------------------------------------

    def _chaos_events(self) -> list[ChaosEvent]:
        sim = self._need(self.sim, "kite_sim")
        vault = self._need(self.vault, "the vault")
        accounts = self.accounts
        silent = accounts[0]
        rotated = accounts[-1]

        def feed(name: str) -> float:
            return total(self.feed_metrics() or {}, name)

        def connections(api_key: str | None = None) -> int:
            live = sim.counters(per_instrument=False)["feed"]["connections"].values()
            return sum(1 for c in live if api_key is None or c["api_key"] == api_key)

        def back_up(count: int, api_key: str | None = None, timeout: float = 20.0) -> str:
            began = time.monotonic()
            while time.monotonic() - began < timeout and not self._stop.is_set():
                if connections(api_key) >= count:
                    return f"all {count} back in {time.monotonic() - began:.1f}s"
                time.sleep(0.1)
            return f"{connections(api_key)} of {count} back after {timeout:g}s"

        def drop() -> str:
            live = connections()
            sim.fault({"kind": "drop"})
            time.sleep(0.5)
            return f"dropped {live} live connections; {back_up(live)}"

        def silence() -> str:
            seconds = FEED_WATCHDOG_S + 4
            trips = feed("feed_watchdog_trips_total")
            sim.fault({"kind": "silence", "seconds": seconds, "api_key": silent.api_key})
            self._stop.wait(seconds + 1)
            return (
                f"{silent.user_id}'s connections silent for {seconds:g}s: the watchdog "
                f"({FEED_WATCHDOG_S:g}s) closed {feed('feed_watchdog_trips_total') - trips:.0f}"
            )

        def expire_and_rotate() -> str:
            live = connections(rotated.api_key)
            refused = feed("feed_handshake_refusals_total")
            expired = sim.expire_tokens(rotated.api_key)
            sim.fault({"kind": "drop", "api_key": rotated.api_key})
            if self._stop.wait(3.0):
                return "interrupted"
            rotate_session(vault, self.rest_url, rotated)
            return (
                f"{rotated.user_id}: {expired} token(s) expired and connections dropped; "
                f"{feed('feed_handshake_refusals_total') - refused:.0f} handshakes refused "
                f"(403) until a new login reached the vault 3s later; "
                f"{back_up(live, rotated.api_key)}"
            )

        def throttle() -> str:
            proxy = self._need(self.proxy, "the Kinesis proxy")
            before = (proxy.calls_refused, proxy.entries_refused)
            proxy.throttle(6.0)
            self._stop.wait(6.5)
            return (
                f"Kinesis writes throttled for 6s: {proxy.calls_refused - before[0]} calls and "
                f"{proxy.entries_refused - before[1]} entries refused"
            )

        def crash() -> str:
            pid = self.functions["persist"].kill_busy(wait_s=20)
            return (
                f"persist environment pid {pid} killed mid-invocation"
                if pid
                else "no invocation to kill"
            )

        def restart_postgres() -> str:
            if self.pg is None:
                return "skipped: DATABASE_URL's server is not ours to restart"
            began = time.monotonic()
            self.pg.restart(mode="immediate")
            self.children.add("postgres", self.pg.pid)
            return f"PostgreSQL crashed and restarted in {time.monotonic() - began:.1f}s"

        return [
            ChaosEvent("connection drop", 0.12, drop),
            ChaosEvent("silent connection", 0.22, silence),
            ChaosEvent("token expiry + rotation", 0.38, expire_and_rotate),
            ChaosEvent("Kinesis throttling", 0.50, throttle),
            ChaosEvent("Lambda crash mid-batch", 0.64, crash),
            ChaosEvent("PostgreSQL restart", 0.76, restart_postgres),
        ]

    # -- the report -------------------------------------------------------------------------

    def make_report(self) -> Report:
        aws = self._need(self.aws, "moto")
        r = self._need(self.resources, "AWS")
        sim = self._need(self.sim, "kite_sim")
        registry = self._need(self.registry, "the instruments")
        self.say("report: reading both streams from TRIM_HORIZON and PostgreSQL")
        counters = sim.counters()
        sent = {int(t): int(n) for t, n in counters["feed"].get("per_instrument", {}).items()}
        option_tokens = {i.instrument_token for i in registry.instruments if i.is_option}
        kinesis = client(aws, "kinesis")
        ticks = scan_ticks(kinesis, r.names.ticks_stream, option_tokens)
        greeks = scan_greeks(kinesis, r.names.greeks_stream)

        async def tables() -> tuple[Any, Any, dict[str, int]]:
            conn = await asyncpg.connect(**connection_parameters(self._db_settings()))
            try:
                return (
                    await scan_table(conn, "ticks"),
                    await scan_table(conn, "greeks"),
                    await trading_rows(conn),
                )
            finally:
                await conn.close()

        tick_rows, greeks_rows, trading = asyncio.run(tables())
        orders = order_facts(self.driver, trading, self.api.server.gateway if self.api else None)
        api_problems = (
            [f"{orders['duplicate_orders']} duplicate order(s) from one Idempotency-Key"]
            if orders["duplicate_orders"]
            else []
        )
        if self.witness is not None and not (
            self.witness.counts.ticks and self.witness.counts.greeks
        ):
            api_problems.append(
                f"the WebSocket witness on {self.ws_chain} received no ticks or no Greeks"
            )
        on_failure = queue_depth(aws, r.persist_failures_url) + queue_depth(
            aws, r.greeks_failures_url
        )
        labels = {i.instrument_token: i.tradingsymbol for i in registry.instruments}
        report = build_report(
            sent_per_token=sent,
            ticks=ticks,
            tick_rows=tick_rows,
            greeks=greeks,
            greeks_rows=greeks_rows,
            on_failure_batches=on_failure,
            labels=labels,
            run_problems=[n for n in self.notes if n.startswith("drain timed out")] + api_problems,
        )
        report.run = self._run_facts(counters)
        report.run["orders"] = orders
        report.run["websocket"] = self._websocket_facts()
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        self.report_path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
        return report

    def _run_facts(self, counters: dict[str, Any]) -> dict[str, Any]:
        o = self.options
        return {
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
            "finished_at": datetime.now(UTC).isoformat(),
            "elapsed_s": round(self._elapsed(), 1),
            "accounts": [a.user_id for a in self.accounts],
            "subscriptions": self.plan.describe() if self.plan else [],
            "chaos": [asdict(r) for r in self.chaos.records] if self.chaos else [],
            "functions": {name: asdict(f.stats()) for name, f in self.functions.items()},
            "mappings": {
                name: {
                    "invocations": m.view().total("invocations"),
                    "function_errors": m.view().total("function_errors"),
                    "partial_failures": m.view().total("partial_failures"),
                    "bisections": m.view().total("bisections"),
                    "retries": m.view().total("retries"),
                    "records_discarded": m.view().total("records_discarded"),
                    "max_iterator_age_ms": max(
                        (s.stats.max_iterator_age_ms for s in m.view().shards), default=0.0
                    ),
                }
                for name, m in self.mappings.items()
            },
            "simulator": {
                "faults_fired": counters.get("faults"),
                "refused_connections": counters["feed"].get("refused_connections"),
                "closed_connections": counters["feed"].get("closed_connections"),
            },
            "kinesis_proxy": (
                {
                    "calls_refused": self.proxy.calls_refused,
                    "entries_refused": self.proxy.entries_refused,
                }
                if self.proxy
                else None
            ),
            "processes": {
                **self.children.started,
                **{f"lambda {n}": f.started_pids for n, f in self.functions.items()},
            },
            "notes": self.notes,
        }

    def _websocket_facts(self) -> dict[str, Any]:
        gateway = self.ws_gateway
        return {
            "chain": self.ws_chain,
            "witness": self.witness.counts.facts() if self.witness else None,
            "gateway": (
                {
                    "connections": gateway.stats.connections,
                    "refused": dict(gateway.stats.refused),
                    "posts": gateway.stats.posts,
                    "gone": sum(gateway.stats.gone.values()),
                    "messages_in": gateway.stats.messages_in,
                }
                if gateway
                else None
            ),
        }

    # -- shutdown ---------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Stop every component, last started first; failures are reported, not raised."""
        if self.chaos is not None:
            self.chaos.stop()
        for name, action in reversed(self._cleanups):
            try:
                action()
            except Exception as exc:
                self.say(f"stopping {name} failed: {exc!r}")
        self._cleanups.clear()

    def cleanup_files(self, *, keep_logs: bool) -> None:
        """Remove temporary data unless asked to keep it; the report always stays."""
        if self.options.keep:
            self.say(f"kept: {self.run_dir}")
            return
        if keep_logs:
            self.say(f"logs kept for inspection: {self.logs}")
            shutil.rmtree(self.run_dir / "feed-spill", ignore_errors=True)
            return
        for path in (self.logs, self.run_dir / "feed-spill", self.run_dir / "postgres"):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            if not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()


def _caught_up(mapping: EventSourceMapping, since: float) -> Callable[[], bool]:
    return lambda: mapping.view().caught_up_since(since)


def main_run(options: Options, out: TextIO | None = None) -> int:
    """Run with SIGINT/SIGTERM handled (the first ends the run, the second skips the drain)."""
    sandbox = Sandbox(options, out)
    previous = {
        sig: signal.signal(sig, sandbox.interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return sandbox.run()
    except ProcessError as exc:
        print(f"sandbox failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
