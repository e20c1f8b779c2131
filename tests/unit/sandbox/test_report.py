"""The consistency report names exactly what is lost or duplicated, and nothing else."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

from sandbox.report import GreeksScan, TableScan, TickScan, build_report, render
from testkit.factories import tick_record

OPTION = 5000
STOCK = 738561
T0 = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def tick(token: int, n: int) -> bytes:
    return json.dumps(tick_record(token, 100.0 + n, T0 + timedelta(seconds=n))).encode()


def greek(source: tuple[str, int, int], token: int = OPTION) -> bytes:
    shard, seq, sub = source
    return json.dumps(
        {
            "schema": "greeks/1",
            "instrument_token": token,
            "source": {"shard_id": shard, "sequence_number": str(seq), "sub_sequence_number": sub},
        }
    ).encode()


class World:
    """A consistent run: two Kinesis records of ticks, Greeks for each option tick, rows for all."""

    def __init__(self) -> None:
        self.sent = Counter({OPTION: 3, STOCK: 2})
        self.ticks = TickScan()
        self.ticks.add(
            ("shardId-0", 1), [tick(OPTION, 0), tick(STOCK, 1), tick(OPTION, 2)], {OPTION}
        )
        self.ticks.add(("shardId-1", 7), [tick(STOCK, 3), tick(OPTION, 4)], {OPTION})
        self.tick_rows = TableScan(
            rows=5,
            per_token=Counter({OPTION: 3, STOCK: 2}),
            groups={("shardId-0", 1): [0, 1, 2], ("shardId-1", 7): [0, 1]},
        )
        sources = [("shardId-0", 1, 0), ("shardId-0", 1, 2), ("shardId-1", 7, 1)]
        self.greeks = GreeksScan()
        self.greeks.add([greek(s) for s in sources])
        self.greeks_rows = TableScan(
            rows=3,
            per_token=Counter({OPTION: 3}),
            groups={("shardId-0", 1): [0, 2], ("shardId-1", 7): [1]},
        )

    def report(self, **kwargs):
        return build_report(
            sent_per_token=self.sent,
            ticks=self.ticks,
            tick_rows=self.tick_rows,
            greeks=self.greeks,
            greeks_rows=self.greeks_rows,
            labels={OPTION: "NIFTY26DEC24000CE", STOCK: "RELIANCE"},
            **kwargs,
        )


def test_a_consistent_run_is_complete() -> None:
    report = World().report()
    assert report.complete, report.problems
    assert report.problems == []
    t = report.totals
    assert (t.ticks_sent_by_simulator, t.ticks_in_kinesis, t.tick_rows_in_postgres) == (5, 5, 5)
    assert (t.option_ticks_in_kinesis, t.distinct_greeks_in_kinesis, t.greeks_rows_in_postgres) == (
        3,
        3,
        3,
    )
    assert "COMPLETE" in render(report, "x.json")


def test_ticks_the_simulator_sent_but_kinesis_lacks_are_named_per_instrument() -> None:
    world = World()
    world.sent[STOCK] += 4
    report = world.report()
    assert not report.complete
    [problem] = report.problems
    assert "4 sent by the simulator are not in Kinesis" in problem
    assert "RELIANCE (738561): 4" in problem
    assert report.details["ticks_not_in_kinesis"] == {str(STOCK): 4}


def test_a_tick_put_twice_is_a_duplicate_not_a_new_tick() -> None:
    world = World()
    world.ticks.add(("shardId-1", 8), [tick(STOCK, 3)], {OPTION})  # same bytes again
    world.tick_rows.groups[("shardId-1", 8)] = [0]
    world.tick_rows.rows += 1
    report = world.report()
    assert report.problems == ["ticks: 1 duplicated in Kinesis: RELIANCE (738561): 1"]
    assert report.totals.ticks_in_kinesis == 6
    assert report.totals.distinct_ticks_in_kinesis == 5


def test_ticks_beyond_what_was_sent_are_reported() -> None:
    world = World()
    world.sent[OPTION] -= 1
    assert "1 in Kinesis beyond what the simulator sent" in world.report().problems[0]


def test_missing_and_unexpected_tick_rows_are_named_by_identity() -> None:
    world = World()
    world.tick_rows.groups[("shardId-0", 1)] = [0, 2]
    world.tick_rows.groups[("shardId-9", 3)] = [0]
    report = world.report()
    assert report.details["tick_rows_missing"] == {"count": 1, "examples": ["shardId-0:1#1"]}
    assert report.details["tick_rows_unexpected"] == {"count": 1, "examples": ["shardId-9:3#0"]}
    assert len(report.problems) == 2


def test_a_row_stored_twice_for_one_identity_is_unexpected() -> None:
    world = World()
    world.tick_rows.groups[("shardId-1", 7)] = [0, 1, 1]
    report = world.report()
    assert report.details["tick_rows_unexpected"]["examples"] == ["shardId-1:7#1"]


def test_republished_greeks_are_deduplicated_by_source_and_are_no_problem() -> None:
    world = World()
    world.greeks.add([greek(("shardId-0", 1, 0))])  # a retried Greeks batch
    report = world.report()
    assert report.complete, report.problems
    assert report.details["greeks_republished"] == 1
    assert report.totals.greeks_in_kinesis == 4
    assert report.totals.distinct_greeks_in_kinesis == 3


def test_greeks_missing_from_postgresql_and_option_ticks_without_greeks_are_named() -> None:
    world = World()
    world.greeks_rows.groups[("shardId-1", 7)] = []
    world.greeks = GreeksScan()
    world.greeks.add([greek(("shardId-0", 1, 0)), greek(("shardId-0", 1, 2))])
    world.greeks_rows.groups = {("shardId-0", 1): [0]}
    report = world.report()
    assert report.details["greeks_rows_missing"]["examples"] == ["shardId-0:1#2"]
    assert report.details["option_ticks_without_greeks"]["examples"] == ["shardId-1:7#1"]
    # Unless the run does not expect Greeks for every option tick
    relaxed = world.report(greeks_for_every_option_tick=False)
    assert relaxed.details["option_ticks_without_greeks"]["count"] == 0


def test_greeks_of_a_source_that_is_no_option_tick_are_reported() -> None:
    world = World()
    world.greeks.add([greek(("shardId-0", 1, 1), STOCK)])
    world.greeks_rows.groups[("shardId-0", 1)] = [0, 1, 2]
    problems = world.report().problems
    assert any("no option tick" in p for p in problems)


def test_discarded_batches_and_an_empty_run_are_not_complete() -> None:
    world = World()
    assert "2 batches were discarded" in world.report(on_failure_batches=2).problems[0]
    empty = build_report(
        sent_per_token={},
        ticks=TickScan(),
        tick_rows=TableScan(),
        greeks=GreeksScan(),
        greeks_rows=TableScan(),
    )
    assert not empty.complete
    assert "sent nothing" in empty.problems[0]
    assert "INCOMPLETE" in render(empty)


def test_a_run_problem_such_as_a_drain_timeout_makes_the_verdict_incomplete() -> None:
    report = World().report(run_problems=["drain timed out waiting for the feed"])
    assert report.problems == ["drain timed out waiting for the feed"]
    report.run = {"notes": ["feed settled short"]}
    assert "note: feed settled short" in render(report)


def test_the_websocket_witness_is_summarised() -> None:
    report = World().report()
    witness = {"messages": 331, "tick_records": 18_576, "greeks_records": 5_939,
               "instruments_subscribed": 122}  # fmt: skip
    report.run = {"websocket": {"chain": "NIFTY:2026-12-08", "witness": witness}}
    line = next(x for x in render(report).splitlines() if x.startswith("WebSocket"))
    assert "331" in line
    assert "18,576 ticks, 5,939 Greeks of 122 instruments" in line


def test_unreadable_user_records_are_counted() -> None:
    world = World()
    world.ticks.add(("shardId-2", 1), [b"not json"], {OPTION})
    world.greeks.add([b"{}"])
    world.tick_rows.groups[("shardId-2", 1)] = [0]
    problems = world.report().problems
    assert any("name no instrument" in p for p in problems)
    assert any("unreadable" in p for p in problems)


def test_api_calls_are_listed_by_route_with_each_status() -> None:
    # Given the gateway's counts by (method, resource, status)
    from sandbox.report import api_call_lines

    calls = {
        "POST /accounts/{account_id}/orders 200": 12,
        "POST /accounts/{account_id}/orders 409": 3,
        "GET /market/option-chain/{underlying} 200": 2,
        "GET /kite/login/callback 200": 2,
    }
    # When they are rendered, Then each route is one line with its statuses, and the total
    lines = api_call_lines(calls)
    assert lines[0].split()[-1] == "19"
    assert any(
        "POST /accounts/{account_id}/orders" in line and "200: 12, 409: 3" in line for line in lines
    )
    assert sum("GET /market/option-chain/{underlying}" in line for line in lines) == 1
    assert api_call_lines({}) == []


def test_the_option_chain_read_at_the_end_is_one_line() -> None:
    from sandbox.report import market_lines

    (line,) = market_lines(
        {"option_chain_status": 200, "underlying": "NIFTY", "expiry": "2026-12-10", "strikes": 22,
         "options_priced": 40, "options_with_iv": 38, "forward": 24012.5,
         "forward_source": "parity", "atm_strike": 24000.0}
    )  # fmt: skip
    assert "NIFTY 2026-12-10" in line
    assert "38 with IV" in line
    assert "from parity" in line
    assert market_lines({"option_chain_status": 503, "option_chain_code": "x"}) == [
        "option chain through the API    HTTP 503 x"
    ]
    assert market_lines({}) == []
