"""The end-of-run report: read every witness, compare them, add what the run itself saw.

The witnesses (the simulator's sent counts, both streams from
``TRIM_HORIZON``, both tables, the on-failure queues) are read here; the
comparison is :func:`sandbox.report.build_report`; the run's own facts
(options, faults, functions, mappings, processes, notes) are
:func:`run_facts`, pure.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from lambdas.common.db import connection_parameters
from sandbox.chaos import ChaosRecord
from sandbox.esm import MappingView
from sandbox.lambda_runtime import FunctionStats
from sandbox.options import Options
from sandbox.provision import client, queue_depth
from sandbox.report import Report, build_report, scan_greeks, scan_table, scan_ticks
from sandbox.stack import ORDER_UPDATES_FUNCTION, RunNotes, Stack, need
from sandbox.trading import OrderDriver, market_facts, order_facts, trading_rows
from sandbox.websocket_api import Witness, websocket_facts


def make_report(
    stack: Stack,
    notes: RunNotes,
    *,
    chaos: list[ChaosRecord],
    elapsed_s: float,
    report_path: Path,
    driver: OrderDriver | None = None,
    witness: Witness | None = None,
) -> Report:
    """Read the witnesses, build the report, write it as JSON to ``report_path``."""
    aws = need(stack.aws, "moto")
    r = need(stack.resources, "AWS")
    sim = need(stack.sim, "kite_sim")
    registry = need(stack.registry, "the instruments")
    stack.say("report: reading both streams from TRIM_HORIZON and PostgreSQL")
    counters = sim.counters()
    sent = {int(t): int(n) for t, n in counters["feed"].get("per_instrument", {}).items()}
    option_tokens = {i.instrument_token for i in registry.instruments if i.is_option}
    kinesis = client(aws, "kinesis")
    ticks = scan_ticks(kinesis, r.names.ticks_stream, option_tokens)
    greeks = scan_greeks(kinesis, r.names.greeks_stream)

    async def tables() -> tuple[Any, Any, dict[str, int]]:
        conn = await asyncpg.connect(**connection_parameters(stack.db_settings()))
        try:
            return (
                await scan_table(conn, "ticks"),
                await scan_table(conn, "greeks"),
                await trading_rows(conn),
            )
        finally:
            await conn.close()

    tick_rows, greeks_rows, trading = asyncio.run(tables())
    market = market_facts(stack.api)  # first: the gateway's counts below include it
    orders = order_facts(driver, trading, stack.api.server.gateway if stack.api else None)
    if orders["duplicate_orders"]:
        notes.problem(f"{orders['duplicate_orders']} duplicate order(s) from one Idempotency-Key")
    queue = order_updates_queue_facts(stack)
    if queue is not None:
        orders["order_updates_queue"] = queue
        for problem in order_updates_problems(queue, orders_placed=orders["orders_placed"]):
            notes.problem(problem)
    websocket = websocket_facts(stack.ws_gateway, stack.ws_chain, witness)
    if witness is not None and not (witness.counts.ticks and witness.counts.greeks):
        notes.problem(f"the WebSocket client on {stack.ws_chain} received no ticks or no Greeks")
    on_failure = queue_depth(aws, r.persist_failures_url) + queue_depth(aws, r.greeks_failures_url)
    labels = {i.instrument_token: i.tradingsymbol for i in registry.instruments}
    report = build_report(
        sent_per_token=sent,
        ticks=ticks,
        tick_rows=tick_rows,
        greeks=greeks,
        greeks_rows=greeks_rows,
        on_failure_batches=on_failure,
        labels=labels,
        run_problems=list(notes.problems),
    )
    report.run = run_facts(
        stack.options,
        elapsed_s=elapsed_s,
        accounts=[a.user_id for a in stack.accounts],
        subscriptions=stack.plan.describe() if stack.plan else [],
        chaos=chaos,
        functions={name: f.stats() for name, f in stack.functions.items()},
        mappings={name: m.view() for name, m in stack.mappings.items()},
        sim_counters=counters,
        proxy_refusals=(
            (stack.proxy.calls_refused, stack.proxy.entries_refused) if stack.proxy else None
        ),
        processes=stack.processes(),
        notes=notes.lines,
    )
    report.run["orders"] = orders
    report.run["market"] = market
    report.run["websocket"] = websocket
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    return report


def order_updates_queue_facts(stack: Stack) -> dict[str, Any] | None:
    """The WebSocket path of order updates: the queue's mapping, its function, what is left."""
    mapping = stack.order_updates_mapping
    if mapping is None:
        return None
    aws, queue = need(stack.aws, "moto"), need(stack.resources, "AWS").order_updates
    stats = mapping.stats()
    function = stack.functions[ORDER_UPDATES_FUNCTION].stats()
    return {
        "received": stats.messages_received,
        "consumed": stats.messages_deleted,
        "invocations": stats.invocations,
        "function_errors": stats.function_errors,
        "stored": function.metrics.get("OrderUpdatesStored", 0.0),
        "duplicates": function.metrics.get("OrderUpdatesDuplicate", 0.0),
        "rejected": function.metrics.get("OrderUpdatesRejected", 0.0),
        "left_on_queue": queue_depth(aws, queue.url),
        "dead_letters": queue_depth(aws, queue.dlq_url),
    }


def order_updates_problems(queue: dict[str, Any], *, orders_placed: int) -> list[str]:
    """What the WebSocket path of order updates says against the run (pure)."""
    problems = []
    if queue["dead_letters"]:
        problems.append(f"{queue['dead_letters']} order update(s) in the dead-letter queue")
    if queue["left_on_queue"]:
        problems.append(f"{queue['left_on_queue']} order update(s) left on the queue")
    if orders_placed and not queue["consumed"]:
        problems.append("orders were placed but no WebSocket order message reached the store")
    return problems


def run_facts(
    options: Options,
    *,
    elapsed_s: float,
    accounts: list[str],
    subscriptions: list[str],
    chaos: list[ChaosRecord],
    functions: dict[str, FunctionStats],
    mappings: dict[str, MappingView],
    sim_counters: dict[str, Any],
    proxy_refusals: tuple[int, int] | None,
    processes: dict[str, list[int]],
    notes: list[str],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The report's ``run`` section: what was asked, what happened, what was started."""
    return {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "finished_at": (now or datetime.now(UTC)).isoformat(),
        "elapsed_s": round(elapsed_s, 1),
        "accounts": accounts,
        "subscriptions": subscriptions,
        "chaos": [asdict(r) for r in chaos],
        "functions": {name: asdict(stats) for name, stats in functions.items()},
        "mappings": {name: _mapping_facts(view) for name, view in mappings.items()},
        "simulator": {
            "faults_fired": sim_counters.get("faults"),
            "refused_connections": sim_counters["feed"].get("refused_connections"),
            "closed_connections": sim_counters["feed"].get("closed_connections"),
        },
        "kinesis_proxy": (
            None
            if proxy_refusals is None
            else {"calls_refused": proxy_refusals[0], "entries_refused": proxy_refusals[1]}
        ),
        "processes": processes,
        "notes": list(notes),
    }


def _mapping_facts(view: MappingView) -> dict[str, float]:
    return {
        "invocations": view.total("invocations"),
        "function_errors": view.total("function_errors"),
        "partial_failures": view.total("partial_failures"),
        "bisections": view.total("bisections"),
        "retries": view.total("retries"),
        "records_discarded": view.total("records_discarded"),
        "max_iterator_age_ms": max((s.stats.max_iterator_age_ms for s in view.shards), default=0.0),
    }
