"""api: placing orders through the local API Gateway, against Kite's own client direct.

Three measurements on one loopback stack (``sandbox.api_stack``: moto,
PostgreSQL, kite_sim, the function's execution environments behind the
gateway):

1. **Place-order latency.** The same resting LIMIT order placed through the
   API (gateway, Cognito token check, grant, idempotency record, intent,
   limiter slot, Kite call, settle) and, as the anchor in the same rounds,
   with the official ``kiteconnect`` client calling kite_sim directly, on
   another account. Both are paced under Kite's 10 orders/s so neither meets
   a rate limit; p50 and p99 of each, and their ratios (target: API p99 at
   most 2x direct: ``direct / API >= 0.5``).
2. **Cold import.** ``import lambdas.api.handler`` in a fresh interpreter
   that holds exactly the function's asset: its packages and the wheels of
   ``fn-api`` built as ``make synth`` builds them, for this machine's
   platform (``bench_lambda_assets``'s twin), imported with ``-I -S`` (no
   site-packages) and timed inside the interpreter, median of interleaved
   rounds (target <= 0.5 s). Also timed: the same import with no ``.pyc``
   (``-B`` on a copy without bytecode: what a read-only ``/var/task`` without
   compiled files pays), and the build of the function's dependencies from a
   stage-like environment (what the first invocation adds before serving).
3. **Burst.** 200 place requests, 20 per account over 10 accounts, all at
   once: every request answered, each order placed once (one per tag in the
   book), and no account over Kite's 10 orders/s at kite_sim (its sliding
   window refused nothing).
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from tools.benchmarking import Comparison, Figure, Result, benchmark

ORDERS_PER_SIDE = 60
WARMUP_ORDERS = 5  # each side's first calls (connections, caches) are not timed
PACE_S = 0.12  # < 10 orders/s per account
BURST_ACCOUNTS = 10
BURST_PER_ACCOUNT = 20
IMPORT_ROUNDS = 7
ROUND_TRIPS = 50
# The deployed defaults (the test stack turns both caches off so tests see changes at once).
DEPLOYED_CACHES = {"KITE_CREDENTIALS_CACHE_SECONDS": "60", "API_GRANTS_CACHE_SECONDS": "10"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# The API function's first invocation builds its dependencies from a stage-like environment
# (nothing is called: clients and the pool are created, not used).
BUILD = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); import lambdas.api.handler as h; "
    "t = time.perf_counter(); h.environment(); print(time.perf_counter() - t)"
)
STATE_KEY_ARN = "arn:aws:secretsmanager:ap-south-1:123456789012:" + "secret:k"  # a made-up ARN
API_STAGE_ENV = {
    "GRANTS_TABLE_NAME": "g", "IDEMPOTENCY_TABLE_NAME": "i", "ORDER_LIMITER_TABLE_NAME": "l",
    "ACCOUNTS_TABLE_NAME": "a", "SUBSCRIPTIONS_TABLE_NAME": "s", "EVENT_BUS_NAME": "e",
    "LOGIN_STATE_SECRET_ARN": STATE_KEY_ARN,
}  # fmt: skip


def _cold_import() -> dict[str, float]:
    """Median seconds: import with bytecode, import without, dependencies built (see doc)."""
    import platform
    import shutil
    import tempfile
    from pathlib import Path

    from benchmarks.bench_lambda_assets import TWIN_PLATFORMS, import_seconds, stage_env
    from infra.definitions import load_functions
    from infra.lambda_assets import BUDGET_BYTES, build

    scratch = Path(tempfile.mkdtemp(prefix="api-cold-"))
    try:
        twin, bare = scratch / "twin", scratch / "no-bytecode"
        build(
            load_functions()["api"],
            twin,
            budget=10 * BUDGET_BYTES,
            platforms=TWIN_PLATFORMS[platform.machine()],
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        )
        shutil.copytree(twin, bare)
        import_seconds(twin, "lambdas.api.handler")  # writes the bytecode the rounds reuse
        samples: dict[str, list[float]] = {"import": [], "no_bytecode": [], "build": []}
        env = {**stage_env(), **API_STAGE_ENV}
        for _ in range(IMPORT_ROUNDS):
            samples["import"].append(import_seconds(twin, "lambdas.api.handler"))
            samples["no_bytecode"].append(
                import_seconds(bare, "lambdas.api.handler", write_bytecode=False)
            )
            result = subprocess.run(
                [sys.executable, "-I", "-S", "-c", BUILD, str(twin)],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            samples["build"].append(float(result.stdout.strip().splitlines()[-1]))
        return {name: statistics.median(values) for name, values in samples.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class KeptAliveClient:
    """The API's HTTP client for the latency rounds: one connection kept alive, as the
    official client's ``requests`` session keeps its connection to Kite."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self._connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self._token = token

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        self._connection.request(
            "POST",
            path,
            body=data,
            headers={
                "Content-Type": "application/json",
                "Authorization": self._token,
                **headers,
            },
        )
        response = self._connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def close(self) -> None:
        self._connection.close()


def _latencies(stack: Any) -> tuple[list[float], list[float]]:
    from kiteconnect import KiteConnect

    sim = stack.simulator
    direct_account = sim.accounts[1]
    kite = KiteConnect(direct_account.api_key, root=sim.rest_url)
    kite.set_access_token(stack.sim.call(lambda: sim.issue_access_token(1)))
    price = stack.resting_price("NSE", "INFY")
    order = {
        "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": 1,
        "product": "MIS", "order_type": "LIMIT", "price": price,
    }  # fmt: skip
    path = f"/accounts/{stack.account}/orders"
    client = KeptAliveClient(stack.api.url, stack.api.trader.id_token)
    api_ms: list[float] = []
    direct_ms: list[float] = []
    try:
        for round_ in range(WARMUP_ORDERS + ORDERS_PER_SIDE):
            started = time.perf_counter()
            status, body = client.post(path, order, {"Idempotency-Key": f"bench-{uuid.uuid4()}"})
            api = (time.perf_counter() - started) * 1000
            if status != 200:
                raise RuntimeError(f"API place failed: {status} {body.get('code')}")
            started = time.perf_counter()
            kite.place_order(variety="regular", **order)
            direct = (time.perf_counter() - started) * 1000
            if round_ >= WARMUP_ORDERS:
                api_ms.append(api)
                direct_ms.append(direct)
            time.sleep(PACE_S)
    finally:
        client.close()
    return api_ms, direct_ms


def _store_round_trips(stack: Any) -> tuple[float, float]:
    """p50 ms of one conditional DynamoDB write to moto and one PostgreSQL statement: what the
    place path is made of (3 such writes: the idempotency record in progress, the limiter
    slot, the record completed; 2 statements: the intent, its settlement; 1 Kite call)."""
    import asyncio

    import asyncpg

    from lambdas.common.db import connection_parameters
    from sandbox.provision import client
    from sandbox.stack import database_settings

    dynamodb = client(stack.aws, "dynamodb")
    table = stack.resources.names.limiter_table
    writes: list[float] = []
    for n in range(ROUND_TRIPS):
        started = time.perf_counter()
        dynamodb.update_item(
            TableName=table, Key={"pk": {"S": "bench-round-trip"}},
            UpdateExpression="SET #v = :v",
            ConditionExpression="attribute_not_exists(#v) OR #v < :v",
            ExpressionAttributeNames={"#v": "v"}, ExpressionAttributeValues={":v": {"N": str(n)}},
            ReturnValues="ALL_NEW",
        )  # fmt: skip
        writes.append((time.perf_counter() - started) * 1000)

    async def statements() -> list[float]:
        conn = await asyncpg.connect(**connection_parameters(database_settings(stack.db)))
        try:
            spent = []
            for _ in range(ROUND_TRIPS):
                started = time.perf_counter()
                await conn.fetchval("select 1")
                spent.append((time.perf_counter() - started) * 1000)
            return spent
        finally:
            await conn.close()

    return statistics.median(writes), statistics.median(asyncio.run(statements()))


def _burst(stack: Any) -> dict[str, Any]:
    from sandbox.trading import api_call

    sim = stack.simulator
    refused_before = stack.sim.call(lambda: sim.limiter.refused)
    statuses: Counter[int] = Counter()
    tags: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(BURST_ACCOUNTS * BURST_PER_ACCOUNT)
    prices = {a.user_id: stack.resting_price("NSE", "TCS") for a in stack.accounts[:1]}
    price = next(iter(prices.values()))
    order = {
        "exchange": "NSE", "tradingsymbol": "TCS", "transaction_type": "BUY", "quantity": 1,
        "product": "MIS", "order_type": "LIMIT", "price": price,
    }  # fmt: skip

    def one(account: str) -> None:
        gate.wait(60)
        try:
            status, body, _ = api_call(
                "POST", f"{stack.api.url}/accounts/{account}/orders",
                token=stack.api.trader.id_token, body=order,
                headers={"Idempotency-Key": f"burst-{uuid.uuid4()}"},
            )  # fmt: skip
        except OSError:
            status, body = 0, {}
        with lock:
            statuses[status] += 1
            if status == 200:
                tags.append(body["data"]["tag"])

    started = time.perf_counter()
    threads = [
        threading.Thread(target=one, args=(account.user_id,))
        for account in stack.accounts[:BURST_ACCOUNTS]
        for _ in range(BURST_PER_ACCOUNT)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    elapsed = time.perf_counter() - started
    book_tags: Counter[str] = Counter()
    for index in range(BURST_ACCOUNTS):
        for entry in stack.sim_orders(index):
            if entry.get("tag") in set(tags):
                book_tags[entry["tag"]] += 1
    return {
        "statuses": dict(statuses),
        "seconds": elapsed,
        "placed": len(tags),
        "duplicates": sum(n - 1 for n in book_tags.values() if n > 1),
        "in_book": sum(book_tags.values()),
        "kite_429": stack.sim.call(lambda: sim.limiter.refused) - refused_before,
        "max_per_second": max(
            (r["max_received_in_window"] for r in stack.sim.call(sim.order_rate.describe).values()),
            default=0,
        ),
    }


@benchmark("api")
def api() -> Result:
    """Run the three measurements (module docstring)."""
    from sandbox.api_stack import api_stack
    from sandbox.moto_server import MotoServer
    from sandbox.postgres import EmbeddedPostgres

    cold = _cold_import()
    with (
        MotoServer() as moto,
        EmbeddedPostgres() as pg,
        api_stack(
            moto, pg.info, accounts=BURST_ACCOUNTS, environments=8, extra_env=DEPLOYED_CACHES
        ) as stack,
    ):
        api_ms, direct_ms = _latencies(stack)
        dynamodb_write_ms, postgres_ms = _store_round_trips(stack)
        burst = _burst(stack)
    api_p50, api_p99 = _percentile(api_ms, 0.5), _percentile(api_ms, 0.99)
    direct_p50, direct_p99 = _percentile(direct_ms, 0.5), _percentile(direct_ms, 0.99)
    import_s = cold["import"]
    answered = sum(n for s, n in burst["statuses"].items() if s in (200, 409, 429))
    total = BURST_ACCOUNTS * BURST_PER_ACCOUNT
    return Result(
        name="api",
        title="Trading API: place-order through the local API Gateway",
        method=__doc__ or "",
        figures=[
            Figure("API place p50", api_p50, "ms"),
            Figure("API place p99", api_p99, "ms"),
            Figure("kiteconnect direct p50", direct_p50, "ms"),
            Figure("kiteconnect direct p99", direct_p99, "ms"),
            Figure(
                "moto: one conditional DynamoDB write p50 (the path makes 3)",
                dynamodb_write_ms,
                "ms",
            ),
            Figure("PostgreSQL: one statement p50 (the path makes 2)", postgres_ms, "ms"),
            Figure("cold import of lambdas.api.handler (its asset, bytecode kept)", import_s, "s"),
            Figure("the same import without bytecode (-B)", cold["no_bytecode"], "s"),
            Figure("first invocation's build of the dependencies", cold["build"], "s"),
            Figure("burst: requests answered 200", burst["statuses"].get(200, 0), "requests"),
            Figure("burst: wall time for 200 requests", burst["seconds"], "s"),
            Figure("burst: duplicate orders in kite_sim's books", burst["duplicates"], "orders"),
            Figure("burst: kite_sim 429s (an account over 10/s)", burst["kite_429"], "calls"),
            Figure(
                "most order calls one account sent kite_sim in any 1 s",
                burst["max_per_second"],
                "calls",
            ),
        ],
        comparisons=[
            Comparison("API place p50", "kiteconnect direct p50", direct_p50 / api_p50),
            Comparison("API place p99", "kiteconnect direct p99", direct_p99 / api_p99, 0.5),
        ],
        checks=[
            ("cold import <= 0.5 s", import_s <= 0.5),
            (f"burst: every request answered ({burst['statuses']})", answered == total),
            ("burst: 0 duplicate orders", burst["duplicates"] == 0),
            ("burst: every placed order in the book once", burst["in_book"] == burst["placed"]),
            (
                "burst: no account above 10 orders/s at kite_sim",
                burst["kite_429"] == 0 and burst["max_per_second"] <= 10,
            ),
        ],
        notes=[
            "ratios are direct/API: 0.5 means the API takes twice as long as Kite's own "
            "client calling kite_sim directly",
            "the API's environments are started before measuring (as provisioned concurrency)",
            "a place's floor here: 3 conditional DynamoDB writes on moto (Powertools' record "
            "in progress and completed, the limiter's slot), 2 PostgreSQL statements (the "
            "intent, its settlement) and the Kite call itself, plus the gateway's token check and "
            "the worker's pipe; the grant and the session come from the environment's caches",
            "the API runs with its deployed defaults for the vault's and the grants' caches "
            "(KITE_CREDENTIALS_CACHE_SECONDS 60, API_GRANTS_CACHE_SECONDS 10); the test stack "
            "sets both to 0",
        ],
    )
