"""Bringing every component up on 127.0.0.1, in order, and down again in reverse.

Start order (each step needs the ones before it): PostgreSQL (embedded, or a
fresh database on ``DATABASE_URL``'s server), moto's server, the AWS
resources, the migrations, the Kite simulator, the desired subscriptions,
the Lambda functions, the API (its functions behind the local API Gateway),
the accounts (registered and logged in through the API: the administrator's
token, Kite's login redirect, the API's callback, which stores each session
encrypted in the vault), the instruments snapshot (fetched with a session),
the event source mappings (``ticks`` -> greeks, ``ticks`` -> persist,
``greeks`` -> persist, a fan-out per stream, and the order-updates queue ->
``api-order-updates``), the WebSocket API behind its local gateway, and last
the feed container, as the same entrypoint the Dockerfile runs.

Every step that starts something registers how to stop it; :meth:`Stack.stop`
runs those last started first, each child's whole process group, whether the
start-up finished or not.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from infra.definitions import load_queue_mappings
from infra.limits import API_GATEWAY_INTEGRATION_TIMEOUT_S
from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations
from sandbox.accounts import register_and_login
from sandbox.dashboard import by_label
from sandbox.environments import (
    api_env,
    fanout_env,
    feed_env,
    greeks_env,
    instruments_env,
    login_check_env,
    market_env,
    order_updates_env,
    persist_env,
    ws_authorizer_env,
    ws_routes_env,
)
from sandbox.esm import EventSourceMapping, MappingTarget, load_mapping_definitions
from sandbox.kinesis_proxy import KinesisFaultProxy
from sandbox.kite import SimAccount, SimAdmin
from sandbox.lambda_runtime import REPO_ROOT, LambdaFunction
from sandbox.moto_server import AwsEndpoint, MotoServer
from sandbox.observe import Metrics, read_feed_metrics
from sandbox.options import Options, RunPaths
from sandbox.postgres import ConnectionInfo, EmbeddedPostgres, free_port
from sandbox.processes import ManagedProcess
from sandbox.provision import Resources, client, provision
from sandbox.sqs_esm import SqsEventSourceMapping, SqsMappingConfig, SqsMappingTarget
from sandbox.subscriptions import SubscriptionPlan, plan_subscriptions, write_plan
from sandbox.trading import ApiSandbox, start_api
from sandbox.websocket_api import (
    AUTHORIZER,
    FANOUTS,
    ROUTES,
    client_command,
    nearest_chain,
    start_websocket_api,
)
from sandbox.websocket_api import endpoints as websocket_endpoints
from sandbox.ws_gateway import LocalWebSocketGateway
from ticker_adapters.subscription_store import SubscriptionStore
from ticker_core.instruments import InstrumentRegistry, parse_instruments
from ticker_core.tz import IST

SIM_TICK_INTERVAL_S = 0.1  # one frame per connection per 100 ms, as Kite's ticker batches
MAX_TICKS_PER_INSTRUMENT = 1 / SIM_TICK_INTERVAL_S
FEED_START_TIMEOUT_S = 60.0
FEED_STOP_TIMEOUT_S = 70.0  # the feed's own flush budget (60 s) and some
API_ENVIRONMENTS = 4  # the API function's concurrency, all initialised before the run
MARKET_ENVIRONMENTS = 2  # the market-data function's
LOGIN_CALLBACK_PATH = "/kite/login/callback"  # the apps' redirect URL, on the local gateway
# The order-updates queue's mapping, as deployed (lambdas/event_source_mappings.toml); two
# pollers at most here, where Lambda scales up to the mapping's maximum concurrency.
ORDER_UPDATES_QUEUE = load_queue_mappings()["order-updates"]
ORDER_UPDATES_FUNCTION = ORDER_UPDATES_QUEUE.function
ORDER_UPDATES_MAPPING = SqsMappingConfig(
    batch_size=ORDER_UPDATES_QUEUE.batch_size,
    maximum_batching_window_s=ORDER_UPDATES_QUEUE.maximum_batching_window_seconds,
    report_batch_item_failures=ORDER_UPDATES_QUEUE.report_batch_item_failures,
    pollers=min(2, ORDER_UPDATES_QUEUE.maximum_concurrency),
)

T = TypeVar("T")


class SandboxError(RuntimeError):
    """A component could not be started or the run could not be completed."""


def need(value: T | None, what: str) -> T:
    """``value``, or :class:`SandboxError` if the component it comes from is not running."""
    if value is None:
        raise SandboxError(f"{what} is not running")
    return value


def database_settings(info: ConnectionInfo) -> DatabaseSettings:
    """The Lambdas' database settings for ``info`` (what ``DB_*`` would say)."""
    values: dict[str, Any] = {k[3:].lower(): v for k, v in info.db_env().items()}
    return DatabaseSettings(**values)


def sim_rates(target_rate: float, instruments: int) -> tuple[float, float]:
    """The simulator's ticks/s per instrument and its overall cap for ``target_rate``."""
    per_instrument = min(target_rate / max(instruments, 1), MAX_TICKS_PER_INSTRUMENT)
    return per_instrument, target_rate


@dataclass
class RunNotes:
    """What the run observed about itself, for the dashboard and the report.

    ``problems`` are the notes that make the verdict incomplete (a drain that
    gave up); the others only explain.
    """

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        """An observation."""
        self.lines.append(text)

    def problem(self, text: str) -> None:
        """An observation that the verdict must count against the run."""
        self.problems.append(text)
        self.lines.append(text)


@dataclass
class Children:
    """Every process the run started, for the report and the no-leftovers check."""

    started: dict[str, list[int]] = field(default_factory=dict)

    def add(self, name: str, pid: int | None) -> None:
        """Remember ``pid`` under ``name`` (a restarted component adds its new pid)."""
        if pid is not None:
            self.started.setdefault(name, []).append(pid)


class Stack:
    """The running components; :meth:`start` brings them up, :meth:`stop` down."""

    def __init__(
        self, options: Options, paths: RunPaths, say: Callable[[str], None], notes: RunNotes
    ) -> None:
        self.options = options
        self.paths = paths
        self.say = say
        self.notes = notes
        self.children = Children()
        self._cleanups: list[tuple[str, Callable[[], Any]]] = []
        # Filled in as the stack starts.
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
        self.registry: InstrumentRegistry | None = None
        self.plan: SubscriptionPlan | None = None
        self.functions: dict[str, LambdaFunction] = {}
        self.mappings: dict[str, EventSourceMapping] = {}
        self.order_updates_mapping: SqsEventSourceMapping | None = None
        self.feed: ManagedProcess | None = None
        self.feed_port = 0
        self.proxy: KinesisFaultProxy | None = None
        # The API's port is chosen first: the simulator posts order postbacks to it.
        self.api_port = free_port()
        self.api: ApiSandbox | None = None
        self.ws_gateway: LocalWebSocketGateway | None = None
        self.ws_chain: str | None = None
        """``UNDERLYING:EXPIRY`` of the chain the printed command (and the witness) watch."""

    # -- up and down ------------------------------------------------------------------------

    def start(self) -> None:
        """Every component, in dependency order; raises on the first that fails."""
        self._start_postgres()
        self._start_moto()
        self._provision()
        self._migrate()
        self._start_simulator()
        self._subscribe()
        self._start_functions()
        self._start_api()
        self._login_accounts()
        self._publish_instruments()
        self._start_websocket()
        self._start_mappings()
        self._start_feed()

    def stop(self) -> None:
        """Stop every component, last started first; failures are reported, not raised."""
        for name, action in reversed(self._cleanups):
            try:
                action()
            except Exception as exc:
                self.say(f"stopping {name} failed: {exc!r}")
        self._cleanups.clear()

    def stop_feed(self) -> None:
        """SIGTERM the feed (it flushes what it holds) and forget it; its exit code is noted."""
        if self.feed is not None:
            code = self.feed.stop(timeout=FEED_STOP_TIMEOUT_S)
            if code not in (0, None, -signal.SIGTERM):
                self.notes.add(f"feed container exited with {code}")
            self.feed = None

    def check_children(self) -> None:
        """Raise if the simulator or the feed has exited on its own."""
        for process in (self.sim_process, self.feed):
            if process is not None:
                process.check_running()

    def feed_metrics(self) -> Metrics | None:
        """The feed's /metrics, parsed (None when it does not answer)."""
        return read_feed_metrics(self.feed_port) if self.feed_port else None

    def db_settings(self) -> DatabaseSettings:
        """The Lambdas' settings for the run's database."""
        return database_settings(need(self.db, "PostgreSQL"))

    def processes(self) -> dict[str, list[int]]:
        """Every pid the run started, by component (the Lambda environments included)."""
        return {
            **self.children.started,
            **{f"lambda {n}": f.started_pids for n, f in self.functions.items()},
        }

    def _on_exit(self, name: str, action: Callable[[], Any]) -> None:
        self._cleanups.append((name, action))

    # -- components -------------------------------------------------------------------------

    def _start_postgres(self) -> None:
        url = self.options.database_url
        if url:
            server = ConnectionInfo.from_url(url)
            name = f"ticker_sandbox_{secrets.token_hex(4)}"
            asyncio.run(_admin_sql(server, f'create database "{name}"'))
            self.db = ConnectionInfo(
                server.host, server.port, server.user, server.password, name, server.ca_file
            )
            if not self.options.keep:
                self._on_exit(
                    "database",
                    lambda: asyncio.run(
                        _admin_sql(server, f'drop database if exists "{name}" with (force)')
                    ),
                )
            self.say(f"PostgreSQL: database {name} on {server.host}:{server.port} (DATABASE_URL)")
            return
        base = self.paths.postgres if self.options.keep else None
        self.pg = EmbeddedPostgres(base_dir=base)
        self.db = self.pg.start()
        self._on_exit("postgres", self.pg.close)
        self.children.add("postgres", self.pg.pid)
        self.say(f"PostgreSQL: embedded, TLS on 127.0.0.1:{self.db.port}")

    def _start_moto(self) -> None:
        self.moto = MotoServer()
        self.aws = self.moto.start()
        self._on_exit("moto", self.moto.stop)
        self.children.add("moto", self.moto.pid)
        self.say(f"moto: {self.aws.url} (Kinesis, DynamoDB, KMS, Secrets Manager, SQS, S3)")

    def _provision(self) -> None:
        aws = need(self.aws, "moto")
        self.resources = provision(aws, shards=self.options.shards)
        r = self.resources
        self.say(
            f"provisioned: streams {r.names.ticks_stream}/{r.names.greeks_stream} x{r.shards} "
            f"shards, table {r.names.subscriptions_table}, KMS key, on-failure queues, "
            f"bucket {r.names.instruments_bucket}"
        )

    def _migrate(self) -> None:
        async def apply() -> list[str]:
            conn = await asyncpg.connect(**connection_parameters(self.db_settings()))
            try:
                return [
                    f"{m.version:04d}_{m.name}" for m in await migrate(conn, bundled_migrations())
                ]
            finally:
                await conn.close()

        applied = asyncio.run(apply())
        self.say(f"migrations applied: {', '.join(applied) or 'none pending'}")

    def _target_instruments(self) -> int:
        return math.ceil(self.options.rate / self.options.ticks_per_instrument)

    def _start_simulator(self) -> None:
        o = self.options
        admin_token = secrets.token_urlsafe(24)
        per_instrument, cap = sim_rates(o.rate, max(self._target_instruments(), 1))
        args = [
            "--json",
            "--accounts", str(o.accounts),
            "--seed", str(o.seed),
            "--tick-interval", str(SIM_TICK_INTERVAL_S),
            "--tick-rate", f"{per_instrument:.4f}",
            "--max-ticks-per-second", f"{cap:.0f}",
            "--redirect-url", f"http://127.0.0.1:{self.api_port}{LOGIN_CALLBACK_PATH}",
            "--postback-url", f"http://127.0.0.1:{self.api_port}/postbacks",
            "--no-ip-check",
        ]  # fmt: skip
        env = {**os.environ, "KITE_SIM_ADMIN_TOKEN": admin_token}
        self.sim_process = ManagedProcess.python(
            "kite_sim", "kite_sim", args, env=env, log_path=self.paths.logs / "kite_sim.log"
        ).start()
        self._on_exit("kite_sim", self.sim_process.stop)
        self.children.add("kite_sim", self.sim_process.pid)
        info = self.sim_process.wait_for_json_line("rest_url", timeout=90)
        self.rest_url, self.ws_url = info["rest_url"], info["ws_url"]
        self.sim = SimAdmin(self.rest_url, admin_token)
        self.accounts = self.sim.accounts()
        self.say(
            f"kite_sim: {self.rest_url} ({info['instruments']:,} instruments, market time "
            f"{info['market_time']})"
        )

    def _login_accounts(self) -> None:
        """Each simulated account registered and logged in through the API, as operations do.

        The administrator's token registers the app (its secret goes to the vault
        through the API) and starts the login; kite_sim's login page redirects to
        the API's callback, which exchanges the request token and stores the session.
        """
        api = need(self.api, "the API")
        ids = register_and_login(api.url, api.admin.id_token, self.accounts)
        self.say(
            f"accounts: {', '.join(ids)} registered and logged in through the API "
            "(admin token, Kite's redirect, the callback); secrets and sessions in the vault"
        )

    def _subscribe(self) -> None:
        aws, r = need(self.aws, "moto"), need(self.resources, "AWS")
        sim = need(self.sim, "kite_sim")
        self.registry = InstrumentRegistry(parse_instruments(sim.instruments_csv()).instruments)
        self.plan = plan_subscriptions(self.registry, target_instruments=self._target_instruments())
        store = SubscriptionStore(client(aws, "dynamodb"), r.names.subscriptions_table)
        write_plan(store, self.plan)
        # The per-instrument rate follows the plan's actual size.
        per_instrument, cap = sim_rates(self.options.rate, self.plan.estimated_instruments)
        defaults = dict.fromkeys(("NSE", "INDICES", "NFO-FUT", "NFO-OPT"), per_instrument)
        sim.tick_rates(defaults, cap)
        self.say(f"subscriptions (~{self.plan.estimated_instruments:,} instruments):")
        for line in self.plan.describe():
            self.say(f"  {line}")

    def _function(self, name: str, env: dict[str, str], **settings: Any) -> None:
        """Start function ``name`` (its handler as pyproject declares it) with ``env``."""
        function = LambdaFunction.declared(name, env=env, log_dir=self.paths.logs, **settings)
        self.functions[name] = function
        self._on_exit(f"function {name}", function.kill_all)

    def _start_functions(self) -> None:
        aws, r = need(self.aws, "moto"), need(self.resources, "AWS")
        db = need(self.db, "PostgreSQL")
        if self.options.chaos:
            self.proxy = KinesisFaultProxy(aws.url)
            self.proxy.start()
            self._on_exit("kinesis proxy", self.proxy.close)
        kinesis_url = self.proxy.url if self.proxy is not None else None
        self._function(
            "persist",
            persist_env(aws, db),
            timeout_s=60,
            memory_mb=1024,
            max_concurrency=2 * r.shards,
        )
        self._function(
            "greeks",
            greeks_env(aws, r, kinesis_url),
            timeout_s=60,
            memory_mb=1024,
            max_concurrency=r.shards,
        )
        self._function(
            "instruments",
            instruments_env(aws, db, r, self.rest_url),
            timeout_s=120,
            max_concurrency=1,
        )

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

    def _start_api(self) -> None:
        """The API function behind the local API Gateway, its users, and endpoints.json."""
        aws, r = need(self.aws, "moto"), need(self.resources, "AWS")
        self._function(
            "api",
            api_env(aws, need(self.db, "PostgreSQL"), r, self.rest_url),
            timeout_s=API_GATEWAY_INTEGRATION_TIMEOUT_S,
            max_concurrency=API_ENVIRONMENTS,
        )
        self._function(
            "api-market",
            market_env(aws, need(self.db, "PostgreSQL"), r, self.rest_url),
            timeout_s=API_GATEWAY_INTEGRATION_TIMEOUT_S,
            memory_mb=1024,
            max_concurrency=MARKET_ENVIRONMENTS,
        )
        self._function(
            ORDER_UPDATES_FUNCTION,
            order_updates_env(aws, need(self.db, "PostgreSQL"), r),
            timeout_s=20,
            max_concurrency=ORDER_UPDATES_MAPPING.pollers,
        )
        self._function("api-login-check", login_check_env(aws, r), timeout_s=60, max_concurrency=1)
        self.api = start_api(
            aws=aws,
            invoke={
                "api": self.functions["api"].invoke,
                "market": self.functions["api-market"].invoke,
            },
            port=self.api_port,
            accounts=[a.user_id for a in self.accounts],
            pool_name=r.names.user_pool,
            environments=API_ENVIRONMENTS,
        )
        self._on_exit("api gateway", self.api.server.stop)
        endpoints = self.paths.endpoints
        endpoints.write_text(json.dumps(self.api.endpoints(self.paths.run_dir), indent=2) + "\n")
        self.say(
            f"API: {self.api.url} (local API Gateway, Cognito pool {self.api.pool.pool_id}; "
            f"users sandbox-admin, sandbox-trader; {endpoints})"
        )
        self.say("  place a paper order:")
        self.say("  " + self.api.curl(endpoints, self.accounts[0].user_id, "INFY"))
        self.say("  read NIFTY's option chain (Greeks on the stored ticks):")
        self.say("  " + self.api.option_chain_curl(endpoints, "NIFTY"))

    def _start_websocket(self) -> None:
        """The WebSocket API: its functions behind the local gateway, endpoints.json, a command."""
        aws, r = need(self.aws, "moto"), need(self.resources, "AWS")
        api = need(self.api, "the API")
        self._function(AUTHORIZER, ws_authorizer_env(api.pool), timeout_s=10, max_concurrency=2)
        self._function(
            ROUTES,
            ws_routes_env(aws, r),
            timeout_s=API_GATEWAY_INTEGRATION_TIMEOUT_S,
            max_concurrency=2,
        )
        self.ws_gateway = gateway = start_websocket_api(
            authorizer=self.functions[AUTHORIZER].invoke,
            integration=self.functions[ROUTES].invoke,
            region=aws.region,
        )
        self._on_exit("websocket gateway", gateway.stop)
        for channel, name in FANOUTS.items():
            env = fanout_env(aws, r, channel, gateway.management_url)
            self._function(name, env, timeout_s=60, max_concurrency=r.shards)
        endpoints = self.paths.endpoints
        document = {**api.endpoints(self.paths.run_dir), **websocket_endpoints(gateway)}
        endpoints.write_text(json.dumps(document, indent=2) + "\n")
        registry = need(self.registry, "the instruments")
        self.ws_chain = nearest_chain(registry, "NIFTY", datetime.now(IST).date())
        self.say(f"WebSocket API: {gateway.url} (local API Gateway; a fan-out per stream)")
        if self.ws_chain:
            self.say("  watch an option chain's live ticks and Greeks:")
            self.say("  " + client_command(endpoints, self.ws_chain, python=sys.executable))

    def _start_mappings(self) -> None:
        aws, r = need(self.aws, "moto"), need(self.resources, "AWS")
        # Event source mappings exactly as the CDK stack deploys them (one shared definition).
        failure_queues = {"greeks": r.greeks_failures_url, "persist": r.persist_failures_url}
        pairs = [
            (d.stream, d.function, d.config, failure_queues[d.on_failure] if d.on_failure else None)
            for d in load_mapping_definitions()
        ]
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
        self._start_order_updates_mapping()
        self.say(f"event source mappings: {', '.join(self.mappings)}, order-updates queue")

    def _start_order_updates_mapping(self) -> None:
        """The queue the feed forwards Kite's order messages to -> ``api-order-updates``."""
        aws, r = need(self.aws, "moto"), need(self.resources, "AWS")
        queue = r.order_updates
        mapping = SqsEventSourceMapping(
            f"{r.names.order_updates_queue}->{ORDER_UPDATES_FUNCTION}",
            ORDER_UPDATES_MAPPING,
            SqsMappingTarget(queue.url, queue.arn, aws.region),
            self.functions[ORDER_UPDATES_FUNCTION],
            lambda service: client(aws, service),
        )
        mapping.start()
        self.order_updates_mapping = mapping
        self._on_exit(f"mapping {mapping.name}", mapping.stop)

    def _start_feed(self) -> None:
        aws, r = need(self.aws, "moto"), need(self.resources, "AWS")
        self.feed_port = free_port()
        env = feed_env(
            os.environ,
            aws,
            r,
            kinesis_url=self.proxy.url if self.proxy is not None else None,
            kite_ws_url=self.ws_url,
            kite_rest_url=self.rest_url,
            health_port=self.feed_port,
            spill_dir=self.paths.feed_spill,
        )
        self.feed = feed = ManagedProcess.python(
            "feed_container",
            "feed_container",
            [],
            env=env,
            log_path=self.paths.logs / "feed_container.log",
            cwd=REPO_ROOT,
        ).start()
        self._on_exit("feed_container", self.stop_feed)
        self.children.add("feed_container", feed.pid)
        deadline = time.monotonic() + FEED_START_TIMEOUT_S
        # The run starts once every account streams: an order placed before its account's
        # connections are up would reach the store by postback only (Kite does not replay
        # order messages to a connection that opens later).
        while not self._feed_streaming():
            feed.check_running()
            if time.monotonic() > deadline:
                raise SandboxError(f"feed container not streaming every account:\n{feed.tail()}")
            time.sleep(0.2)
        self.say(f"feed container: python -m feed_container, metrics on 127.0.0.1:{self.feed_port}")

    def _feed_streaming(self) -> bool:
        """The feed answers /metrics with an open connection for every account."""
        metrics = self.feed_metrics()
        if metrics is None:
            return False
        open_connections = by_label(metrics, "feed_connections_open", "account")
        return all(open_connections.get(a.user_id, 0) >= 1 for a in self.accounts)


async def _admin_sql(server: ConnectionInfo, sql: str) -> None:
    conn = await asyncpg.connect(**connection_parameters(database_settings(server)))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
