"""The run's pure parts: the children's environments, the run directory, the report's run facts."""

from __future__ import annotations

import importlib
import json
import secrets
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lambdas.ws.protocol import Channel
from sandbox.chaos import ChaosRecord
from sandbox.environments import (
    FEED_WATCHDOG_S,
    FUNCTION_ENV,
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
from sandbox.esm import MappingView, ShardStats, ShardView
from sandbox.lambda_runtime import FunctionStats
from sandbox.moto_server import AwsEndpoint
from sandbox.options import Options, RunPaths
from sandbox.postgres import ConnectionInfo
from sandbox.provision import OrderUpdatesQueue, ResourceNames, Resources, UserPool
from sandbox.run_report import order_updates_problems, run_facts
from sandbox.stack import RunNotes, sim_rates
from ticker_adapters.settings import Environment

AWS = AwsEndpoint(
    "http://127.0.0.1:5000", "ap-south-1", "AKID" + secrets.token_hex(8), secrets.token_hex(20)
)
DB = ConnectionInfo("127.0.0.1", 5432, "ticker", secrets.token_hex(8), "ticker", None)
RESOURCES = Resources(
    names=ResourceNames(),
    shards=4,
    ticks_stream_arn="arn:aws:kinesis:ap-south-1:123456789012:stream/ticks",
    greeks_stream_arn="arn:aws:kinesis:ap-south-1:123456789012:stream/greeks",
    kms_key_arn="arn:aws:kms:ap-south-1:123456789012:key/k",
    persist_failures_url="http://127.0.0.1:5000/q/persist",
    greeks_failures_url="http://127.0.0.1:5000/q/greeks",
    login_state_secret_arn=f"arn:aws:secretsmanager:ap-south-1:123456789012:secret:{secrets.token_hex(4)}",
    order_updates=OrderUpdatesQueue(
        url="http://127.0.0.1:5000/123456789012/ticker-order-updates",
        arn="arn:aws:sqs:ap-south-1:123456789012:ticker-order-updates",
        dlq_url="http://127.0.0.1:5000/123456789012/ticker-order-updates-dlq",
    ),
)
PROXY = "http://127.0.0.1:6000"
PYPROJECT_FUNCTIONS = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())[
    "tool"
]["ticker-service"]["functions"]


def test_the_feed_gets_its_settings_and_nothing_of_the_parents_feed_or_aws_variables() -> None:
    # Given a parent environment with stray settings the feed would read
    parent = {
        "PATH": "/bin",
        "TICKS_STREAM_NAME": "prod",
        "KITE_CREDENTIALS_PREFIX": "prod/kite",
        "AWS_PROFILE": "prod",
        "ORDER_UPDATES_QUEUE_URL": "https://sqs.ap-south-1.amazonaws.com/1/prod",
    }
    # When the feed's environment is built, writing to Kinesis through the proxy
    env = feed_env(
        parent,
        AWS,
        RESOURCES,
        kinesis_url=PROXY,
        kite_ws_url="ws://127.0.0.1:1/",
        kite_rest_url="http://127.0.0.1:1",
        health_port=9100,
        spill_dir=Path("/tmp/spill"),
    )
    # Then the parent's PATH passes, its values the feed reads do not
    assert env["PATH"] == "/bin"
    assert "AWS_PROFILE" not in env
    assert env["TICKS_STREAM_NAME"] == "ticks"
    assert env["KITE_CREDENTIALS_PREFIX"] == RESOURCES.names.secrets_prefix
    assert env["ORDER_UPDATES_QUEUE_URL"] == RESOURCES.order_updates.url
    # And Kinesis goes through the proxy, everything else to moto
    assert env["AWS_ENDPOINT_URL_KINESIS"] == PROXY
    assert env["AWS_ENDPOINT_URL"] == AWS.url
    assert env["KITE_CREDENTIALS_KMS_KEY_ARN"] == RESOURCES.kms_key_arn
    assert env["FEED_WATCHDOG_SECONDS"] == str(FEED_WATCHDOG_S)
    assert env["FEED_HEALTH_PORT"] == "9100"


def test_only_the_greeks_function_writes_kinesis_through_the_proxy() -> None:
    persist = persist_env(AWS, DB)
    greeks = greeks_env(AWS, RESOURCES, PROXY)
    instruments = instruments_env(AWS, DB, RESOURCES, "http://127.0.0.1:1")
    # Every function has the shared settings
    for env in (persist, greeks, instruments):
        assert env.items() >= FUNCTION_ENV.items()
    assert greeks["AWS_ENDPOINT_URL_KINESIS"] == PROXY
    assert "AWS_ENDPOINT_URL_KINESIS" not in persist
    assert "AWS_ENDPOINT_URL_KINESIS" not in instruments
    # And the database functions get the DB_* settings
    assert persist["DB_HOST"] == instruments["DB_HOST"] == "127.0.0.1"
    assert "DB_HOST" not in greeks
    assert instruments["KITE_CREDENTIALS_PREFIX"] == RESOURCES.names.secrets_prefix


def test_simulator_rates_are_capped_per_instrument() -> None:
    # A few instruments at a high rate: each at most 10 ticks/s (one per 100 ms frame)
    assert sim_rates(1000, 10) == (10.0, 1000)
    # Many instruments: the rate is shared
    assert sim_rates(1000, 400) == (2.5, 1000)
    assert sim_rates(1000, 0) == (10.0, 1000)


def test_run_paths_default_to_a_timestamped_directory_and_keep_the_report(tmp_path: Path) -> None:
    # Given default options, the run directory is named by the start time
    paths = RunPaths.for_options(Options(), now=datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    assert paths.run_dir.name == "20261201T093000Z"
    assert paths.report_path == paths.run_dir / "report.json"
    # Given a run directory with logs, spill, database and the report
    paths = RunPaths.for_options(Options(run_dir=tmp_path / "run"))
    paths.create()
    for directory in (paths.logs, paths.feed_spill, paths.postgres):
        directory.mkdir(exist_ok=True)
        (directory / "x").write_text("x")
    paths.report_path.write_text("{}")
    # When a failed run keeps its logs, only the spill goes
    paths.remove_temporary(keep_logs=True)
    assert sorted(p.name for p in paths.run_dir.iterdir()) == ["logs", "postgres", "report.json"]
    # When a complete run cleans up, only the report stays
    paths.remove_temporary(keep_logs=False)
    assert [p.name for p in paths.run_dir.iterdir()] == ["report.json"]


def test_problems_are_notes_that_count_against_the_verdict() -> None:
    notes = RunNotes()
    notes.add("the simulator sent ticks after the feed stopped")
    notes.problem("drain timed out waiting for ticks->persist to process every record")
    assert notes.problems == ["drain timed out waiting for ticks->persist to process every record"]
    assert len(notes.lines) == 2


def test_run_facts_say_what_was_asked_what_happened_and_what_was_started() -> None:
    view = MappingView(
        "ticks->persist",
        [
            ShardView("shardId-0", "9", 0, True, 1.0, ShardStats(invocations=3, retries=1)),
            ShardView("shardId-1", "7", 0, True, 1.0, ShardStats(invocations=2, bisections=1)),
        ],
    )
    view.shards[1].stats.max_iterator_age_ms = 850.0
    facts = run_facts(
        Options(run_dir=Path("/tmp/run"), chaos=True),
        elapsed_s=61.26,
        accounts=["SM1000"],
        subscriptions=["stocks: 5, full"],
        chaos=[ChaosRecord("connection drop", 7.2, "dropped 3", True)],
        functions={"persist": FunctionStats(invocations=5, crashes=1)},
        mappings={view.name: view},
        sim_counters={"faults": {"drop": 2}, "feed": {"closed_connections": 3}},
        proxy_refusals=(4, 17),
        processes={"moto": [10], "lambda persist": [11, 12]},
        notes=["feed settled"],
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )
    # Then the section is JSON as it is written, with each fact in its place
    assert json.loads(json.dumps(facts)) == facts
    assert facts["options"]["run_dir"] == "/tmp/run"
    assert facts["elapsed_s"] == 61.3
    assert facts["mappings"]["ticks->persist"] == {
        "invocations": 5.0,
        "function_errors": 0.0,
        "partial_failures": 0.0,
        "bisections": 1.0,
        "retries": 1.0,
        "records_discarded": 0.0,
        "max_iterator_age_ms": 850.0,
    }
    assert facts["chaos"][0]["name"] == "connection drop"
    assert facts["functions"]["persist"]["crashes"] == 1
    assert facts["simulator"]["closed_connections"] == 3
    assert facts["kinesis_proxy"] == {"calls_refused": 4, "entries_refused": 17}
    assert facts["processes"]["lambda persist"] == [11, 12]
    no_proxy = run_facts(
        Options(),
        elapsed_s=1,
        accounts=[],
        subscriptions=[],
        chaos=[],
        functions={},
        mappings={},
        sim_counters={"feed": {}},
        proxy_refusals=None,
        processes={},
        notes=[],
    )
    assert no_proxy["kinesis_proxy"] is None


KITE = "http://127.0.0.1:7000"
POOL = UserPool("ap-south-1_x", "client", "ap-south-1", "http://127.0.0.1:5000/jwks.json")
SANDBOX_ENVIRONMENTS = {
    "persist": persist_env(AWS, DB),
    "persist-maintenance": persist_env(AWS, DB),
    "greeks": greeks_env(AWS, RESOURCES),
    "instruments": instruments_env(AWS, DB, RESOURCES, KITE),
    "migrate": persist_env(AWS, DB),
    "api": api_env(AWS, DB, RESOURCES, KITE),
    "api-order-updates": order_updates_env(AWS, DB, RESOURCES),
    "api-login-check": login_check_env(AWS, RESOURCES),
    "api-market": market_env(AWS, DB, RESOURCES, KITE),
    "ws-authorizer": ws_authorizer_env(POOL),
    "ws": ws_routes_env(AWS, RESOURCES),
    "fanout-ticks": fanout_env(AWS, RESOURCES, Channel.TICKS, "http://127.0.0.1:5001/v1"),
    "fanout-greeks": fanout_env(AWS, RESOURCES, Channel.GREEKS, "http://127.0.0.1:5001/v1"),
}
PLATFORM = ("AWS_", "POWERTOOLS_", "LOG_LEVEL")


def environment_model(function: str) -> type[Environment]:
    module, _, name = PYPROJECT_FUNCTIONS[function]["settings"].rpartition(".")
    model: type[Environment] = getattr(importlib.import_module(module), name)
    return model


@pytest.mark.parametrize("function", sorted(SANDBOX_ENVIRONMENTS))
def test_each_function_reads_what_the_sandbox_gives_it_through_its_model(
    function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the environment the sandbox starts a function with, and nothing else of ours
    env = SANDBOX_ENVIRONMENTS[function]
    model = environment_model(function)
    for name in [*model.variables(), *env]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # When its declared environment model reads it, Then it validates
    model.from_env()
    # And every variable the sandbox sets is one the model reads (no misspelled name)
    unread = {k for k in env if k not in model.variables() and not k.startswith(PLATFORM)}
    assert not unread, sorted(unread)


def test_every_declared_function_has_a_sandbox_environment() -> None:
    assert set(SANDBOX_ENVIRONMENTS) == set(PYPROJECT_FUNCTIONS)


def test_the_market_function_holds_none_of_the_trading_functions_tables() -> None:
    market = SANDBOX_ENVIRONMENTS["api-market"]
    assert not {"GRANTS_TABLE_NAME", "IDEMPOTENCY_TABLE_NAME", "ORDER_LIMITER_TABLE_NAME"} & set(
        market
    )
    assert not {k for k in market if k.startswith("API_")} - {"API_CORS_ORIGINS"}
    # and its Kite is the sandbox's simulator, its login page unused
    assert market["KITE_REST_URL"] == KITE


QUEUE = {"consumed": 12, "left_on_queue": 0, "dead_letters": 0}


def test_the_order_updates_queue_drained_clean_is_no_problem() -> None:
    assert order_updates_problems(QUEUE, orders_placed=5) == []


def test_dead_letters_leftovers_or_a_silent_websocket_path_are_problems() -> None:
    assert order_updates_problems({**QUEUE, "dead_letters": 2}, orders_placed=5) == [
        "2 order update(s) in the dead-letter queue"
    ]
    assert order_updates_problems({**QUEUE, "left_on_queue": 1}, orders_placed=5) == [
        "1 order update(s) left on the queue"
    ]
    assert order_updates_problems({**QUEUE, "consumed": 0}, orders_placed=5) == [
        "orders were placed but no WebSocket order message reached the store"
    ]
    assert order_updates_problems({**QUEUE, "consumed": 0}, orders_placed=0) == []
