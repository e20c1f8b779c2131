"""Ticks on a stream -> greeks and persist through their mappings -> a complete report.

The same chain ``make run`` runs, minus the feed: kite_sim's ticks (through
the feed's encoding) are put on ``ticks`` directly, the real greeks and
persist functions consume both streams through the event source mapping
emulator, and the consistency report compares what was put with what the
streams and PostgreSQL hold.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from lambdas.common.db import connection_parameters
from lambdas.instruments.dal import S3SnapshotStore
from sandbox.esm import EventSourceMapping, MappingTarget, load_mapping_definitions
from sandbox.lambda_runtime import LambdaFunction
from sandbox.moto_server import AwsEndpoint
from sandbox.postgres import ConnectionInfo
from sandbox.provision import Resources, client, provision
from sandbox.report import build_report, scan_greeks, scan_table, scan_ticks
from sandbox.stack import database_settings
from testkit.factories import publish_snapshot
from tests.integration.sandbox.test_esm_persist import migrate_database, wait_caught_up
from tests.integration.test_greeks_function import kite_ticks, market  # noqa: F401 # fixture
from ticker_core.instruments import write_instruments_csv
from ticker_core.records import Aggregator

pytestmark = pytest.mark.integration
BUCKET = "ticker-instruments"


def put_ticks(aws: AwsEndpoint, resources: Resources, ticks: list[tuple[str, bytes]]) -> Counter:
    """One aggregate per 40 ticks of an underlying; returns ticks put per instrument token."""
    kinesis = client(aws, "kinesis")
    by_key: dict[str, list[bytes]] = {}
    for key, data in ticks:
        by_key.setdefault(key, []).append(data)
    entries = []
    for key, datas in by_key.items():
        for i in range(0, len(datas), 40):
            aggregator = Aggregator()
            for data in datas[i : i + 40]:
                assert aggregator.try_add(key, data)
            entries.append({"Data": aggregator.build(), "PartitionKey": key})
    for i in range(0, len(entries), 100):
        response = kinesis.put_records(
            StreamName=resources.names.ticks_stream, Records=entries[i : i + 100]
        )
        assert response["FailedRecordCount"] == 0
    return Counter(int(re.search(rb'"instrument_token":(\d+)', d).group(1)) for _, d in ticks)


@pytest.fixture
def functions(
    aws: AwsEndpoint, fresh_database: ConnectionInfo, tmp_path: Path
) -> Iterator[dict[str, LambdaFunction]]:
    made = {
        "greeks": LambdaFunction(
            "greeks",
            "lambdas.greeks.handler.handler",
            env={**aws.env(), "GREEKS_STREAM_NAME": "greeks", "INSTRUMENTS_BUCKET": BUCKET},
            log_dir=tmp_path,
        ),
        "persist": LambdaFunction(
            "persist", "lambdas.persist.handler.handler",
            env={**aws.env(), **fresh_database.db_env()}, log_dir=tmp_path,
        ),
    }  # fmt: skip
    yield made
    for function in made.values():
        function.kill_all()


async def test_every_tick_and_its_greeks_reach_postgresql_and_the_report_is_complete(
    request: pytest.FixtureRequest,
    aws: AwsEndpoint,
    fresh_database: ConnectionInfo,
    functions: dict[str, LambdaFunction],
) -> None:
    # Given the day's instruments snapshot, a migrated database and the simulator's ticks
    sim_market = request.getfixturevalue("market")
    resources = provision(aws, shards=4)
    csv = write_instruments_csv(sim_market.universe.instruments).encode()
    publish_snapshot(
        S3SnapshotStore(client(aws, "s3"), "ticker-instruments", "instruments/"), csv, date.today()
    )
    await migrate_database(fresh_database)
    ticks = kite_ticks(sim_market, model_prices=False)
    sent = put_ticks(aws, resources, ticks)
    # When the three mappings, as the stack deploys them, run the real functions
    mappings = []
    r = resources
    arns = {"ticks": r.ticks_stream_arn, "greeks": r.greeks_stream_arn}
    queues = {"greeks": r.greeks_failures_url, "persist": r.persist_failures_url}
    for definition in load_mapping_definitions():
        stream, name, config = definition.stream, definition.function, definition.config
        if name not in functions:
            continue  # the WebSocket fan-outs: live data, not the data path under test
        arn, dlq = arns[stream], queues[definition.on_failure]
        function = functions[name]
        target = MappingTarget(
            name, function.arn, stream, arn, resources.role_arn(name), on_failure_queue_url=dlq
        )
        mapping = EventSourceMapping(
            f"{stream}->{name}", config, target, function, lambda s: client(aws, s),
            poll_interval_s=0.2,
        )  # fmt: skip
        mapping.start()
        mappings.append(mapping)
    try:
        started = time.time()
        for mapping in mappings:
            wait_caught_up(mapping, started, timeout=120)
            started = time.time()
    finally:
        for mapping in mappings:
            mapping.stop()
    # Then the report finds every tick once in Kinesis and PostgreSQL, and Greeks for every option
    kinesis = client(aws, "kinesis")
    options = {i.instrument_token for i in sim_market.universe.instruments if i.is_option}
    tick_scan = scan_ticks(kinesis, "ticks", options)
    greeks_scan = scan_greeks(kinesis, "greeks")
    conn = await asyncpg.connect(**connection_parameters(database_settings(fresh_database)))
    try:
        tick_rows, greeks_rows = await scan_table(conn, "ticks"), await scan_table(conn, "greeks")
    finally:
        await conn.close()
    report = build_report(
        sent_per_token=sent, ticks=tick_scan, tick_rows=tick_rows, greeks=greeks_scan,
        greeks_rows=greeks_rows,
    )  # fmt: skip
    assert report.complete, "\n".join(report.problems)
    assert report.totals.option_ticks_in_kinesis == report.totals.greeks_rows_in_postgres > 100
    assert (
        functions["greeks"].stats().metrics["GreeksPublished"]
        >= report.totals.greeks_rows_in_postgres
    )
