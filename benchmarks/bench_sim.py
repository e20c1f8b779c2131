"""sim_feed: ticks per second the simulator delivers to one consumer over loopback.

The simulator runs as its CLI does (``python -m kite_sim``) in its own
process; one consumer in this process connects like KiteTicker, subscribes
3000 instruments in full mode (Kite's per-connection maximum) and counts the
packets of every frame it receives (from the frame header) for a fixed time.

Anchor, measured in the same rounds: the ceiling of the same server stack, an
aiohttp WebSocket server (another process) that sends a pre-encoded frame of
the same 3000 full packets as fast as the consumer takes it, with no market,
matching or encoding. The ratio says how much of the stack's loopback
capacity the simulator's own work leaves.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import Any

import numpy as np

from ticker_core.kite import MAX_INSTRUMENTS_PER_CONNECTION
from tools.benchmarking import Comparison, Figure, Result, benchmark

INSTRUMENTS = MAX_INSTRUMENTS_PER_CONNECTION
ROUNDS = 5
SECONDS = 3.0
WARMUP = 1.0
TARGET_TICKS_PER_SECOND = 200_000


def _full_frame(count: int) -> bytes:
    """``count`` FULL packets, encoded by ticker_core, as the anchor's frame."""
    from ticker_core.kite_wire import PacketKind, depth_column, encode_columns

    tokens = (np.arange(count, dtype=np.int64) + 1000) << 8 | 2
    price = np.full(count, 1234.5)
    qty = np.full(count, 75, dtype=np.int64)
    now = np.full(count, int(time.time()), dtype=np.int64)
    cols: dict[str, Any] = {
        "instrument_token": tokens,
        "last_price": price,
        "last_traded_quantity": qty,
        "average_traded_price": price,
        "volume_traded": qty * 100,
        "total_buy_quantity": qty * 10,
        "total_sell_quantity": qty * 10,
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "last_trade_time": now,
        "oi": qty,
        "oi_day_high": qty,
        "oi_day_low": qty,
        "exchange_timestamp": now,
        depth_column("quantity"): np.full((count, 2, 5), 75, dtype=np.int64),
        depth_column("price"): np.full((count, 2, 5), 1234.5),
        depth_column("orders"): np.full((count, 2, 5), 3, dtype=np.int64),
    }
    return bytes(encode_columns(PacketKind.FULL, cols))


async def _serve_anchor() -> None:
    """The anchor server: one pre-encoded frame, sent in a loop to each client."""
    from aiohttp import web

    frame = _full_frame(INSTRUMENTS)

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.receive()  # the subscribe message, as the simulator would get
        while not ws.closed:
            try:
                await ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):
                break
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"ws_url": f"ws://127.0.0.1:{port}"}), flush=True)
    await asyncio.Event().wait()


@contextmanager
def _process(args: list[str]):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{args} exited: {proc.wait()}")
        yield json.loads(line)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _http_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        text: str = resp.read().decode()
        return text


async def _consume(url: str, tokens: list[int], seconds: float) -> tuple[float, int, int]:
    """Packets/s over ``seconds`` after a warm-up; also total packets and frames seen."""
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"a": "subscribe", "v": tokens}))
        await ws.send(json.dumps({"a": "mode", "v": ["full", tokens]}))
        total = frames = 0
        counted = 0
        start = time.perf_counter()
        warm_end = start + WARMUP
        measure_from = None
        end = warm_end + seconds
        while True:
            message = await ws.recv()
            now = time.perf_counter()
            if isinstance(message, bytes) and len(message) >= 2:
                packets = message[0] << 8 | message[1]
                total += packets
                frames += 1
                if measure_from is not None:
                    counted += packets
            if measure_from is None and now >= warm_end:
                measure_from = now
            if now >= end:
                break
        elapsed = time.perf_counter() - (measure_from or start)
        return counted / elapsed, total, frames


def _sim_args() -> list[str]:
    return [
        "-m",
        "kite_sim",
        "--json",
        "--port",
        "0",
        "--seed",
        "7",
        "--tick-interval",
        "0.01",
        "--tick-rate",
        "150",
        "--send-queue",
        "4",
        "--no-rate-limits",
    ]


@benchmark("sim_feed")
def run() -> Result:
    """Sustained ticks/s from the simulator vs the raw stack ceiling."""
    from ticker_core.instruments import parse_instruments

    sim_rates: list[float] = []
    anchor_rates: list[float] = []
    ratios: list[float] = []
    with _process(_sim_args()) as info, _process(["-m", "benchmarks.bench_sim", "anchor"]) as anc:
        rest = info["rest_url"]
        account = info["accounts"][0]
        session = _http_json(f"{rest}/_sim/sessions", {"api_key": account["api_key"]})
        parsed = parse_instruments(_http_text(f"{rest}/instruments"))
        tokens = [i.instrument_token for i in parsed.instruments][:INSTRUMENTS]
        sim_url = (
            f"{info['ws_url']}/?api_key={account['api_key']}&access_token={session['access_token']}"
        )
        for _ in range(ROUNDS):
            anchor_rate, _, _ = asyncio.run(_consume(anc["ws_url"], tokens, SECONDS))
            sim_rate, _, _ = asyncio.run(_consume(sim_url, tokens, SECONDS))
            anchor_rates.append(anchor_rate)
            sim_rates.append(sim_rate)
            ratios.append(sim_rate / anchor_rate)
        counters = _http_json(f"{rest}/_sim/counters?per_instrument=0")
    sim_median = statistics.median(sim_rates)
    anchor_median = statistics.median(anchor_rates)
    return Result(
        name="sim_feed",
        title="Simulator feed: ticks/s to one consumer over loopback (full mode)",
        method=(
            f"`python -m kite_sim` in its own process (seed 7, 10 ms feed rounds, "
            "150 ticks/s per instrument requested, i.e. 450,000 ticks/s for the 3000); "
            "one consumer (websockets) subscribes "
            f"{INSTRUMENTS} instruments in full mode and counts packets from frame headers for "
            f"{SECONDS:g} s after a {WARMUP:g} s warm-up, {ROUNDS} rounds. Anchor, in the same "
            f"rounds: an aiohttp WebSocket server sending a pre-encoded frame of {INSTRUMENTS} "
            "full packets (ticker_core's encoder) back to back: the stack's loopback ceiling."
        ),
        figures=[
            Figure("simulator ticks/s (median)", sim_median, "ticks/s"),
            Figure("simulator ticks/s (worst round)", min(sim_rates), "ticks/s"),
            Figure("anchor ticks/s (median)", anchor_median, "ticks/s"),
            Figure("simulator MB/s of full packets (median)", sim_median * 186 / 1e6, "MB/s"),
            Figure("feed lag at end", float(counters["feed"]["lag_seconds"]), "s"),
        ],
        comparisons=[
            Comparison("simulator feed", "raw frames, same stack", statistics.median(ratios))
        ],
        checks=[
            (
                f"simulator sustains >= {TARGET_TICKS_PER_SECOND:,} ticks/s (median round)",
                sim_median >= TARGET_TICKS_PER_SECOND,
            ),
        ],
        notes=[
            "Ticks are FULL packets (184 bytes + 2-byte length) with 5-level depth, "
            "repriced (Black-76 for options) and traded every round.",
            "The simulator is paced by its feed rounds and the anchor is not, so the ratio "
            "is the share of the stack's ceiling the simulator uses, not a target.",
        ],
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["anchor"]:
        asyncio.run(_serve_anchor())
