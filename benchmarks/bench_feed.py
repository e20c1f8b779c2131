"""feed_e2e: simulator -> feed container -> Kinesis on moto's server, sustained, zero loss.

Three processes besides this one: the simulator (27,470 instruments, three
accounts), the feed container (``python -m feed_container``, exactly as ECS
runs it) and moto's server. The container holds 9 connections (3 accounts x
3) of 3,000 instruments each: 27,000 instruments, 10% full, 45% quote, 45%
ltp (most of a book in quote/ltp, the near-the-money options in full).

Anchor, in the same run: the same 9 connections and subscriptions opened by
a bare consumer that only counts packets (frame headers). The ratio of the
container's Kinesis-acknowledged rate to the bare consumer's rate says how
much of the feed the container keeps up with.

Figures: ticks/s acknowledged by Kinesis over the measured window, loss
(packets the simulator wrote to the container's sockets minus user records
Kinesis acknowledged, after a SIGTERM flush; must be 0, with nothing dropped
or left on disk), p50/p99 from frame receipt to PutRecords acknowledgement
(histogram bucket upper bounds), the container's CPU seconds per second per
10,000 ticks/s (psutil over the window), and its RSS with all 27,000 in full
mode. The CPU of the simulator and moto is recorded too, to say where the
bottleneck is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psutil

from benchmarks.harness import Comparison, Figure, Result, benchmark
from feed_container.metrics import LATENCY_BUCKETS, Histogram
from lambdas.common.credentials import CredentialVault, KiteSession, next_token_expiry
from lambdas.common.envelope import KmsEnvelopeCipher
from lambdas.common.subscription_store import SubscriptionStore
from sandbox.moto_server import MotoServer
from sandbox.postgres import free_port
from ticker_core.instruments import parse_instruments

SECONDS = float(os.environ.get("FEED_BENCH_SECONDS", "60"))
RATE = float(os.environ.get("FEED_BENCH_RATE", "100000"))
WARMUP = 5.0
ANCHOR_SECONDS = 8.0
ACCOUNTS = 3
PER_CONNECTION = 3000
INSTRUMENTS = ACCOUNTS * 3 * PER_CONNECTION
TARGET = 100_000.0
STREAM, TABLE = "ticks", "subscriptions"


@contextmanager
def _simulator(
    rate_per_instrument: float,
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    args = [
        "-m", "benchmarks.feed_sim", "--json", "--port", "0", "--seed", "7",
        "--accounts", str(ACCOUNTS), "--stock-strikes", "65", "--no-rate-limits",
        "--tick-interval", "0.1", "--tick-rate", f"{rate_per_instrument:.6f}",
        "--send-queue", "1000",
    ]  # fmt: skip
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator exited: {proc.wait()}")
        yield proc, json.loads(line)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:  # loopback
        return str(resp.read().decode())


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(  # loopback
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _sim_sent(admin: str) -> int:
    return int(json.loads(_get(f"{admin}/counters?per_instrument=0"))["feed"]["packets_sent"])


def _plan(info: dict[str, Any]) -> list[tuple[int, str, list[tuple[int, str]]]]:
    """(account index, api_key, [(token, mode)]) per connection: 9 x 3000 instruments."""
    parsed = parse_instruments(_get(f"{info['rest_url']}/instruments"))
    tokens = sorted(i.instrument_token for i in parsed.instruments)[:INSTRUMENTS]
    modes = [
        "full" if n % 10 == 0 else "quote" if n % 2 == 0 else "ltp" for n in range(len(tokens))
    ]
    plan = []
    for c in range(ACCOUNTS * 3):
        chunk = list(zip(tokens[c::9], modes[c::9], strict=True))
        plan.append((c // 3, info["accounts"][c // 3]["api_key"], chunk))
    return plan


async def _bare_consumer(info: dict[str, Any], plan: list[Any], tokens: list[str]) -> float:
    """Packets/s the simulator delivers to 9 counting-only connections."""
    from websockets.asyncio.client import connect

    counted = [0]
    measuring = [False]

    async def one(api_key: str, token: str, chunk: list[tuple[int, str]]) -> None:
        url = f"{info['ws_url']}?api_key={api_key}&access_token={token}"
        async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
            await ws.send(json.dumps({"a": "subscribe", "v": [t for t, _ in chunk]}))
            for mode in ("ltp", "quote", "full"):
                await ws.send(
                    json.dumps({"a": "mode", "v": [mode, [t for t, m in chunk if m == mode]]})
                )
            while True:
                message = await ws.recv()
                if measuring[0] and isinstance(message, bytes) and len(message) >= 2:
                    counted[0] += message[0] << 8 | message[1]

    tasks = [asyncio.create_task(one(k, tokens[a], chunk)) for a, k, chunk in plan]
    await asyncio.sleep(3.0)
    measuring[0] = True
    start = time.perf_counter()
    await asyncio.sleep(ANCHOR_SECONDS)
    rate = counted[0] / (time.perf_counter() - start)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


def _setup_aws(moto: MotoServer, info: dict[str, Any], plan: list[Any]) -> tuple[str, list[str]]:
    kw = moto.endpoint.client_kwargs()
    kms = boto3.client("kms", **kw)
    key = kms.create_key(Description="bench")["KeyMetadata"]["Arn"]
    boto3.client("kinesis", **kw).create_stream(StreamName=STREAM, ShardCount=4)
    store = SubscriptionStore(boto3.client("dynamodb", **kw), TABLE)
    store.create_table()
    vault = CredentialVault(boto3.client("secretsmanager", **kw), KmsEnvelopeCipher(kms, key))
    tokens = []
    for n, account in enumerate(info["accounts"]):
        token = _post(f"{info['admin_url']}/sessions", {"api_key": account["api_key"]})
        access = token.get("access_token") or token["data"]["access_token"]
        tokens.append(access)
        issued = datetime.now(UTC)
        vault.put_session(
            f"acct{n}",
            KiteSession(
                account["api_key"], access, account["user_id"], issued, next_token_expiry(issued)
            ),
        )
    _write_subscriptions(boto3.client("dynamodb", **kw), plan, None)
    store.subscribe(plan[0][2][0][0], plan[0][2][0][1], "bench")  # bumps the generation
    return key, tokens


def _write_subscriptions(client: Any, plan: list[Any], mode: str | None) -> None:
    """Put every subscription item straight into the table, 25 per call (then bump the
    generation once with a regular write): 27,000 transactional writes through moto
    would take minutes."""
    items = [
        {
            "PutRequest": {
                "Item": {
                    "pk": {"S": "SUB"},
                    "sk": {"S": f"{token:010d}#bench"},
                    "token": {"N": str(token)},
                    "mode": {"S": mode or m},
                    "owner": {"S": "bench"},
                }
            }
        }
        for _, _, chunk in plan
        for token, m in chunk
    ]
    for at in range(0, len(items), 25):
        client.batch_write_item(RequestItems={TABLE: items[at : at + 25]})


def _metrics(port: int) -> dict[str, Any]:
    text = _get(f"http://127.0.0.1:{port}/metrics")
    totals: dict[str, float] = {}
    buckets: list[float] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        base = re.sub(r"\{.*\}", "", name)
        if base == "feed_e2e_lag_seconds_bucket":
            buckets.append(float(value))
        else:
            totals[base] = totals.get(base, 0.0) + float(value)
    return {"totals": totals, "buckets": buckets}


def _received(port: int) -> float:
    try:
        return float(_metrics(port)["totals"].get("feed_ticks_received_total", 0.0))
    except OSError:  # not listening yet
        return 0.0


def _quantiles(before: list[float], after: list[float]) -> tuple[float, float]:
    h = Histogram(LATENCY_BUCKETS)
    cumulative = [a - b for a, b in zip(after, before, strict=True)]
    previous = 0.0
    for i, c in enumerate(cumulative):
        h.counts[i] = c - previous
        previous = c
    h.total = cumulative[-1]
    return h.quantile(0.5), h.quantile(0.99)


def _thread_cpu(proc: psutil.Process) -> float:
    """CPU seconds of every thread but the event loop's (the Kinesis sender threads)."""
    return float(sum(t.user_time + t.system_time for t in proc.threads() if t.id != proc.pid))


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


@benchmark("feed_e2e")
def run() -> Result:
    """Sustained end-to-end ticks/s with zero loss, latency, CPU and RSS of the container."""
    figures: list[Figure] = []
    notes: list[str] = []
    with (
        MotoServer() as moto,
        _simulator(RATE / INSTRUMENTS) as (sim_proc, info),
        tempfile.TemporaryDirectory() as tmp,
    ):
        admin = info["admin_url"]
        plan = _plan(info)
        key, tokens = _setup_aws(moto, info, plan)
        anchor_rate = asyncio.run(_bare_consumer(info, plan, tokens))
        time.sleep(1.0)
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FEED_", "AWS_"))},
            **moto.endpoint.env(),
            "FEED_ACCOUNTS": ",".join(f"acct{n}" for n in range(ACCOUNTS)),
            "FEED_KITE_WS_URL": info["ws_url"],
            "FEED_KITE_REST_URL": info["rest_url"],
            "FEED_KMS_KEY_ID": key,
            "FEED_SUBSCRIPTIONS_TABLE": TABLE,
            "FEED_STREAM_NAME": STREAM,
            "FEED_SPILL_DIR": str(Path(tmp) / "spill"),
            "FEED_HEALTH_HOST": "127.0.0.1",
            "FEED_HEALTH_PORT": str(port),
            "FEED_EMF_INTERVAL_SECONDS": "0",
            "FEED_STOP_TIMEOUT_SECONDS": "25",
            "FEED_LOG_LEVEL": "WARNING",
        }
        log_path = Path(tmp) / "feed.log"
        sent_before = _sim_sent(admin)
        with log_path.open("w") as log:
            feed = subprocess.Popen(
                [sys.executable, "-m", "feed_container"],
                env={**env, "FEED_LOG_LEVEL": "INFO"},
                stdout=log,
                stderr=log,
            )
        container = psutil.Process(feed.pid)
        sim = psutil.Process(sim_proc.pid)
        assert moto._process is not None  # started by the with block
        moto_ps = psutil.Process(moto._process.pid)  # bench-only peek
        try:
            started = time.perf_counter()
            while _received(port) < RATE:
                if time.perf_counter() - started > 180 or feed.poll() is not None:
                    raise RuntimeError(
                        f"the container did not start streaming: {log_path.read_text()[-2000:]}"
                    )
                time.sleep(0.5)
            startup = time.perf_counter() - started
            time.sleep(WARMUP)
            m0, c0, s0, k0, t0 = (
                _metrics(port),
                _cpu(container),
                _cpu(sim),
                _cpu(moto_ps),
                time.perf_counter(),
            )
            sim0 = _sim_sent(admin)
            th0 = _thread_cpu(container)
            rss = 0
            while time.perf_counter() - t0 < SECONDS:
                time.sleep(1.0)
                rss = max(rss, container.memory_info().rss)
            m1, c1, s1, k1, t1 = (
                _metrics(port),
                _cpu(container),
                _cpu(sim),
                _cpu(moto_ps),
                time.perf_counter(),
            )
            sim1 = _sim_sent(admin)
            th1 = _thread_cpu(container)
            # All 27,000 in full mode, at a fifth of the rate, for the RSS figure.
            _post(
                f"{admin}/tick_rates",
                {
                    "rates": {
                        "NFO": RATE / INSTRUMENTS / 5,
                        "NSE": RATE / INSTRUMENTS / 5,
                        "BSE": RATE / INSTRUMENTS / 5,
                        "CDS": RATE / INSTRUMENTS / 5,
                        "BCD": RATE / INSTRUMENTS / 5,
                    }
                },
            )
            store = SubscriptionStore(
                boto3.client("dynamodb", **moto.endpoint.client_kwargs()), TABLE
            )
            _write_subscriptions(
                boto3.client("dynamodb", **moto.endpoint.client_kwargs()), plan, "full"
            )
            store.subscribe(plan[0][2][0][0], "full", "bench")
            full_rss = 0
            for _ in range(12):
                time.sleep(1.0)
                full_rss = max(full_rss, container.memory_info().rss)
        finally:
            stop_started = time.perf_counter()
            feed.send_signal(signal.SIGTERM)
            code = feed.wait(60)
            stop_seconds = time.perf_counter() - stop_started
        sent_to_container = _sim_sent(admin) - sent_before
        final = next(
            json.loads(line)
            for line in reversed(log_path.read_text().splitlines())
            if line.startswith("{") and '"feed stopped"' in line
        )
    dt = t1 - t0
    received = (
        m1["totals"]["feed_ticks_received_total"] - m0["totals"]["feed_ticks_received_total"]
    ) / dt
    acked = (
        m1["totals"]["feed_kinesis_records_acked_total"]
        - m0["totals"]["feed_kinesis_records_acked_total"]
    ) / dt
    sim_rate = (sim1 - sim0) / dt
    p50, p99 = _quantiles(m0["buckets"], m1["buckets"])
    cpu = (c1 - c0) / dt
    loss = sent_to_container - final["acked"]
    figures += [
        Figure("Kinesis-acknowledged ticks/s over the window (container)", acked, "ticks/s"),
        Figure("ticks/s received by the container", received, "ticks/s"),
        Figure("ticks/s the simulator wrote to the container", sim_rate, "ticks/s"),
        Figure("ticks/s to the bare consumer (anchor)", anchor_rate, "ticks/s"),
        Figure("loss: sent to the container - acknowledged by Kinesis", loss, "ticks"),
        Figure("ticks in the run (sent to the container)", sent_to_container, "ticks"),
        Figure("p50 frame receipt -> PutRecords ack (bucket upper bound)", p50 * 1000, "ms"),
        Figure("p99 frame receipt -> PutRecords ack (bucket upper bound)", p99 * 1000, "ms"),
        Figure("container CPU", cpu, "cores"),
        Figure(
            "container CPU per 10,000 ticks/s",
            cpu / (acked / 10_000) if acked else float("nan"),
            "cores",
        ),
        Figure(
            "of which Kinesis sender threads (boto3: serialize, sign, send)",
            (th1 - th0) / dt,
            "cores",
        ),
        Figure("simulator CPU", (s1 - s0) / dt, "cores"),
        Figure("moto server CPU", (k1 - k0) / dt, "cores"),
        Figure("container RSS, mixed modes (max over the window)", rss / 2**20, "MiB"),
        Figure("container RSS, 27,000 instruments in full mode", full_rss / 2**20, "MiB"),
        Figure("SIGTERM to exit", stop_seconds, "s"),
        Figure("start to streaming (27,000 subscriptions read from DynamoDB)", startup, "s"),
    ]
    checks = [
        (
            "zero loss: every tick sent to the container acknowledged by Kinesis",
            loss == 0 and final["dropped"] == 0,
        ),
        ("nothing left on disk at exit", final["spill_bytes_left"] == 0),
        ("container exited 0 within its stop timeout", code == 0 and stop_seconds < 25),
        (f">= {TARGET:,.0f} ticks/s sustained end to end", acked >= TARGET),
    ]
    notes.append(
        f"Measured window {dt:.0f} s after {WARMUP:.0f} s of warm-up; "
        f"target rate {RATE:,.0f} ticks/s "
        f"({RATE / INSTRUMENTS:.2f} per instrument, frames every 100 ms per connection)."
    )
    return Result(
        name="feed_e2e",
        title="Feed container end to end: simulator -> container -> Kinesis (moto)",
        method=(__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").strip(),
        figures=figures,
        comparisons=[
            Comparison(
                "container (Kinesis-acknowledged)",
                "bare consumer",
                acked / anchor_rate if anchor_rate else 0.0,
                0.99,
            )
        ],
        checks=checks,
        notes=notes,
    )
