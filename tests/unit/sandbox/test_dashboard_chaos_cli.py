"""The dashboard's numbers, the chaos schedule and the command line."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from sandbox.__main__ import parse_args
from sandbox.chaos import ChaosEvent, ChaosSchedule
from sandbox.dashboard import Dashboard, Sample, by_label, derive, parse_prometheus, total
from sandbox.esm import MappingView, ShardStats, ShardView
from sandbox.lambda_runtime import FunctionStats
from tests.waiting import wait_until

PROMETHEUS = """\
# HELP feed_ticks_received_total Ticks decoded from Kite frames, per account
# TYPE feed_ticks_received_total counter
feed_ticks_received_total{account="SM1000"} 1500
feed_ticks_received_total{account="SM1001"} 500
feed_kinesis_records_acked_total 1900
feed_connections_open{account="SM1000",kind="ws"} 2
feed_connections_open{account="SM1001",kind="ws"} 1
feed_buffer_bytes 0
feed_watchdog_trips_total{account="SM1000"} 1
garbage line
feed_bad_value{a="b"} notanumber
"""


def mapping(name: str, invocations: int, age: float, errors: int = 0) -> MappingView:
    stats = ShardStats(invocations=invocations, function_errors=errors, iterator_age_ms=age)
    return MappingView(name, [ShardView("shardId-0", "9", 3, False, None, stats)])


def test_prometheus_text_is_parsed_by_name_and_labels() -> None:
    metrics = parse_prometheus(PROMETHEUS)
    assert total(metrics, "feed_ticks_received_total") == 2000
    assert by_label(metrics, "feed_connections_open", "account") == {"SM1000": 2, "SM1001": 1}
    assert total(metrics, "feed_absent") == 0
    assert "feed_bad_value" not in metrics


def test_two_samples_give_rates_connections_and_errors() -> None:
    feed = parse_prometheus(PROMETHEUS)
    before = Sample(
        elapsed_s=10.0,
        sim_sent=1000,
        mappings={"ticks->persist": mapping("ticks->persist", 10, 0)},
        functions={"persist": FunctionStats(metrics={"TicksInserted": 500.0})},
    )
    after = Sample(
        elapsed_s=12.0,
        sim_sent=3000,
        sim_connections={"SM1000": 2, "SM1001": 1},
        feed=feed,
        mappings={"ticks->persist": mapping("ticks->persist", 14, 250.0, errors=1)},
        functions={
            "persist": FunctionStats(errors=1, metrics={"TicksInserted": 1900.0}),
            "greeks": FunctionStats(metrics={"GreeksPublished": 800.0}),
        },
        on_failure=2,
        chaos=["12.0s connection drop: dropped 3"],
    )
    view = derive(before, after)
    assert view.sim_rate == 1000
    assert view.kinesis_acked == 1900
    assert view.kinesis_rate == 950  # nothing acked before: the feed was not up yet
    assert view.connections == {"SM1000": "2 at Kite, 2 in feed", "SM1001": "1 at Kite, 1 in feed"}
    [m] = view.mappings
    assert (m["invocations_per_s"], m["errors"], m["iterator_age_ms"], m["pending"]) == (
        2.0,
        1,
        250.0,
        3,
    )
    assert view.ticks_persisted == 1900
    assert view.greeks_published == 800
    assert view.errors == {"persist": 1, "watchdog_trips": 1, "on_failure_batches": 2}


def test_plain_output_logs_a_line_at_most_every_interval() -> None:
    out = io.StringIO()
    with Dashboard(out, live=False, log_every_s=5.0) as dashboard:
        for t in range(11):
            dashboard.update(Sample(elapsed_s=float(t), sim_sent=100 * t))
        dashboard.message("done")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # t = 0, 5, 10, and the message
    assert "sim 100/s (1,000)" in lines[2]
    assert lines[-1] == "done"


def test_the_live_table_renders() -> None:
    from rich.console import Console

    from sandbox.dashboard import rich_table

    view = derive(None, Sample(elapsed_s=1.0, sim_connections={"SM1000": 1}, chaos=["x"]))
    console = Console(file=io.StringIO(), width=140)
    console.print(rich_table(view))
    text = console.file.getvalue()
    assert "simulator ticks" in text
    assert "connections SM1000" in text
    assert "chaos" in text
    out = io.StringIO()
    with Dashboard(out, live=True) as dashboard:
        dashboard.update(Sample(elapsed_s=1.0))
        dashboard.message("hello")
    assert "hello" in out.getvalue()


def test_chaos_events_fire_in_order_at_their_times_and_failures_are_recorded() -> None:
    fired: list[tuple[str, float]] = []
    start = time.monotonic()

    def action(name: str):
        def run() -> str:
            fired.append((name, time.monotonic() - start))
            if name == "b":
                raise RuntimeError("cannot")
            return f"{name} done"

        return run

    schedule = ChaosSchedule(
        [ChaosEvent("b", 0.5, action("b")), ChaosEvent("a", 0.1, action("a"))], duration_s=0.4
    )
    schedule.start()
    wait_until(lambda: len(schedule.records), lambda fired: fired >= 2, within=5, what="2 events")
    schedule.stop()
    assert [name for name, _ in fired] == ["a", "b"]
    assert fired[1][1] >= 0.19
    assert [(r.name, r.ok) for r in schedule.records] == [("a", True), ("b", False)]
    assert "not injected" in schedule.lines()[1]
    assert schedule.lines()[1].endswith("(FAILED)")


def test_a_stopped_schedule_fires_nothing_more() -> None:
    called = threading.Event()
    schedule = ChaosSchedule([ChaosEvent("late", 1.0, lambda: called.set() or "x")], 60.0)
    schedule.start()
    schedule.stop()
    assert not called.is_set()
    assert schedule.records == []


def test_the_command_line() -> None:
    options = parse_args(
        ["--duration", "30", "--accounts", "3", "--rate", "20000", "--chaos", "--keep", "--plain",
         "--run-dir", "/tmp/x", "--database-url", "postgresql://u:p@127.0.0.1:5/d"]
    )  # fmt: skip
    assert (options.duration_s, options.accounts, options.rate) == (30, 3, 20000)
    assert options.chaos
    assert options.keep
    assert options.live is False
    assert options.run_dir == Path("/tmp/x")
    assert options.database_url == "postgresql://u:p@127.0.0.1:5/d"
    assert parse_args([]).live is None
    with pytest.raises(SystemExit):
        parse_args(["--accounts", "0"])
