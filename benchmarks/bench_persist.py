"""Persisting ticks: the idempotent path against plain ``executemany``.

Anchor: asyncpg ``executemany`` of a plain ``INSERT`` into ``market.ticks`` (no
conflict handling, no bars) - what a straightforward writer does. Candidate:
``write_batch``, the persist function's path: the rows binary-COPied straight
into ``market.ticks`` (encoded column-wise by lambdas/persist/pgcopy.py), the
minute bars folded on the client while the server reads, and merged with one
``INSERT ... ON CONFLICT DO UPDATE``, in one transaction. The primary key
holds the Kinesis identity, so a redelivered row makes the COPY fail and the
batch is merged through a staging table (``ON CONFLICT DO NOTHING``): the
replay figure. Both contenders write the same rows (full-mode ticks with
depth, as one shard carries them) into the same table on the same server, in
interleaved rounds, each timed batch fresh (unique identities). The embedded
server is reached directly (not through the sandbox's TLS front, a Python
proxy that would measure itself); in AWS, TLS is RDS's.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import psutil

from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations
from lambdas.persist.dal import PartitionManager, tick_encoder, write_batch
from lambdas.persist.logic import TICK_COLUMNS, decode
from sandbox.postgres import EmbeddedPostgres
from testkit.factories import tick_stream
from tools.benchmarking import Comparison, Figure, Result, benchmark

BATCH_ROWS = 5_000  # about one Lambda batch of aggregated records
# One shard's load: its 1 MB/s write limit in ~1 KB full ticks is about 1,000 ticks/s,
# here over 500 instruments of the underlyings keyed to it (2 ticks/s each).
SHARD_TICKS_PER_S = 1_000
SHARD_INSTRUMENTS = 500
# The old generator's sparse stream (10 ticks/s over 500 instruments: nearly every tick
# opens its own bar) is kept as a worst case for the bars.
SPARSE_TICKS_PER_S = 10
SPARSE_BATCHES = 3
ROUNDS = 7
BATCHES_PER_TURN = 2
TARGET_ROWS_PER_S = 150_000
# Shards written at once, as that many Lambda environments would (one writer per shard).
CONCURRENT_WRITERS = 2
CONCURRENT_BATCHES_EACH = 5  # the first warms the connection (plans, staging tables), untimed

# A real Kinesis sequence number (56 digits) and the ~50 KiB aggregates of ~500-byte ticks.
FIRST_SEQUENCE_NUMBER = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
KPL_RECORDS_PER_AGGREGATE = 100

PLAIN_INSERT = (
    f"insert into market.ticks ({', '.join(TICK_COLUMNS)}) "
    f"values ({', '.join(f'${n}' for n in range(1, len(TICK_COLUMNS) + 1))})"
)


def as_shard(batch: list[tuple[Any, ...]], shard: int) -> list[tuple[Any, ...]]:
    """The batch's rows as if from ``shard``, with that shard's own instruments.

    The feed keys records by underlying, so one instrument's ticks (and its bars)
    come from one shard; concurrent writers never touch the same bar.
    """
    token_at, shard_at = TICK_COLUMNS.index("instrument_token"), TICK_COLUMNS.index("src_shard")
    rekeyed = []
    for row in batch:
        values = list(row)
        values[token_at] += shard * 1_000_000
        values[shard_at] = f"shardId-{shard:012d}"
        rekeyed.append(tuple(values))
    return rekeyed


async def concurrent_rate(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    batches: list[list[tuple[Any, ...]]],
) -> float:
    """Rows/s of CONCURRENT_WRITERS connections each writing its shard's batches at once."""
    conns = [await connect() for _ in range(CONCURRENT_WRITERS)]
    try:
        per_writer = [
            [as_shard(batch, shard + 1) for batch in batches[shard::CONCURRENT_WRITERS]]
            for shard in range(CONCURRENT_WRITERS)
        ]
        partitions = [PartitionManager() for _ in conns]
        for conn, own, known in zip(conns, per_writer, partitions, strict=True):
            await write_batch(conn, known, own[0], [])

        async def writer(
            conn: asyncpg.Connection, own: list[list[tuple[Any, ...]]], known: PartitionManager
        ) -> None:
            for batch in own[1:]:
                await write_batch(conn, known, batch, [])

        start = time.perf_counter()
        await asyncio.gather(*map(writer, conns, per_writer, partitions))
        timed_rows = sum(len(batch) for own in per_writer for batch in own[1:])
        return timed_rows / (time.perf_counter() - start)
    finally:
        for conn in conns:
            await conn.close()


def make_batches(count: int, per_second: int = SHARD_TICKS_PER_S) -> list[list[tuple[Any, ...]]]:
    """``count`` batches of distinct full-mode tick rows, as one shard carries them.

    Identities are like a real stream's: 56-digit sequence numbers, one per
    aggregated record of KPL_RECORDS_PER_AGGREGATE user records.
    """
    stream = tick_stream(
        count * BATCH_ROWS, seed=42, tokens=SHARD_INSTRUMENTS, per_second=per_second
    )
    seq_at, sub_at = TICK_COLUMNS.index("src_seq"), TICK_COLUMNS.index("src_subseq")
    rows = []
    for n, user in enumerate(stream):
        row = list(decode(user)[1])
        row[seq_at] = FIRST_SEQUENCE_NUMBER + n // KPL_RECORDS_PER_AGGREGATE
        row[sub_at] = n % KPL_RECORDS_PER_AGGREGATE
        rows.append(tuple(row))
    return [rows[i : i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)]


def decode_seconds() -> tuple[list[float], list[float]]:
    """Seconds to decode one batch of user records into rows, and to parse its JSON alone.

    Interleaved, seven rounds: the parse is the anchor that makes the decode's
    figure comparable across runs on a busy machine.
    """
    stream = list(
        tick_stream(BATCH_ROWS, seed=7, tokens=SHARD_INSTRUMENTS, per_second=SHARD_TICKS_PER_S)
    )
    seconds: tuple[list[float], list[float]] = ([], [])
    for _ in range(7):
        start = time.perf_counter()
        for user in stream:
            decode(user)
        seconds[0].append(time.perf_counter() - start)
        start = time.perf_counter()
        for user in stream:
            orjson.loads(user.data)
        seconds[1].append(time.perf_counter() - start)
    return seconds


async def isolation_rate(
    conn: asyncpg.Connection, batch: list[tuple[Any, ...]]
) -> tuple[float, int]:
    """Rows/s of a fresh batch in which the database refuses one row, and how many it refused.

    A CHECK no decoder knows of refuses the middle row; the batch is halved
    until that row stands alone (about 2 log2(n) transactions). Run last: the
    CHECK stays on the table.
    """
    price_at = TICK_COLUMNS.index("last_price")
    refused = list(batch[len(batch) // 2])
    refused[price_at] = -13.13
    batch = [*batch[: len(batch) // 2], tuple(refused), *batch[len(batch) // 2 + 1 :]]
    await conn.execute(
        "alter table market.ticks add constraint bench_refuses check (last_price <> -13.13)"
    )
    start = time.perf_counter()
    result = await write_batch(conn, PartitionManager(), batch, [])
    return len(batch) / (time.perf_counter() - start), result.ticks_rejected


class ServerCpu:
    """CPU seconds spent by the PostgreSQL server's processes (robust to a busy machine)."""

    def __init__(self, postmaster_pid: int) -> None:
        self._postmaster = psutil.Process(postmaster_pid)
        self.by_contender: dict[str, float] = {}

    def now(self) -> float:
        total = 0.0
        for proc in [self._postmaster, *self._postmaster.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


async def _timed(
    write: Callable[[list[tuple[Any, ...]]], Awaitable[Any]],
    batch: list[tuple[Any, ...]],
    cpu: ServerCpu,
    name: str,
) -> float:
    cpu_start = cpu.now()
    start = time.perf_counter()
    await write(batch)
    elapsed = time.perf_counter() - start
    cpu.by_contender[name] = cpu.by_contender.get(name, 0.0) + cpu.now() - cpu_start
    return elapsed


async def run() -> Result:
    with EmbeddedPostgres() as server:
        info = server.direct_info

        async def connect() -> asyncpg.Connection:
            conn = await asyncpg.connect(
                host=info.host, port=info.port, user=info.user, password=info.password,
                database=info.database, ssl=False,
            )  # fmt: skip
            await conn.execute("set timezone to 'UTC'")
            return conn

        conn = await connect()
        await migrate(conn, bundled_migrations())
        partitions = PartitionManager()
        turns = ROUNDS * BATCHES_PER_TURN
        concurrent_count = CONCURRENT_WRITERS * CONCURRENT_BATCHES_EACH
        load_start = os.getloadavg()[0]
        batches = make_batches(3 * turns + 1 + 4 + concurrent_count + 1)
        warmup, batches = batches[0], batches[1:]
        await write_batch(conn, partitions, warmup, [])

        async def plain(batch: list[tuple[Any, ...]]) -> None:
            async with conn.transaction():
                await conn.executemany(PLAIN_INSERT, batch)

        async def idempotent(batch: list[tuple[Any, ...]]) -> None:
            await write_batch(conn, partitions, batch, [])

        cpu = ServerCpu(server.pid)
        seconds: dict[str, list[float]] = {"plain": [], "idempotent": [], "replay": []}
        ratios: list[float] = []
        replay_ratios: list[float] = []
        cursor = 0
        for _ in range(ROUNDS):
            round_s: dict[str, float] = {}
            for name, write in (("plain", plain), ("idempotent", idempotent)):
                spent = 0.0
                for _ in range(BATCHES_PER_TURN):
                    batch = batches[cursor]
                    cursor += 1
                    spent += await _timed(write, batch, cpu, name)
                round_s[name] = spent
                seconds[name].append(spent)
            # A Kinesis retry: the batch just written, written again (every row a conflict).
            round_s["replay"] = sum(
                [
                    await _timed(idempotent, batches[cursor - 1 - k], cpu, "replay")
                    for k in range(BATCHES_PER_TURN)
                ]
            )
            seconds["replay"].append(round_s["replay"])
            ratios.append(round_s["plain"] / round_s["idempotent"])
            replay_ratios.append(round_s["plain"] / round_s["replay"])
        # The machine's ceiling for these rows: binary COPY into an unlogged table with
        # no index and no dedupe - the least any PostgreSQL write path can do.
        await conn.execute("create unlogged table bare_copy (like market.ticks)")
        encoder = tick_encoder()
        start = time.perf_counter()
        for chunk in batches[cursor : cursor + 4]:
            await conn.copy_to_table(
                "bare_copy", source=io.BytesIO(encoder.payload(chunk)),
                columns=list(encoder.copy_columns), format="binary",
            )  # fmt: skip
        ceiling = 4 * BATCH_ROWS / (time.perf_counter() - start)
        cursor += 4
        concurrent = await concurrent_rate(connect, batches[cursor : cursor + concurrent_count])
        sparse_seconds = []
        for batch in make_batches(1 + SPARSE_BATCHES, per_second=SPARSE_TICKS_PER_S)[1:]:
            sparse_seconds.append(
                await _timed(idempotent, as_shard(batch, CONCURRENT_WRITERS + 1), cpu, "sparse")
            )
        sparse_rate = BATCH_ROWS / statistics.median(sparse_seconds)
        decoding, parsing = decode_seconds()
        decode_rate = BATCH_ROWS / statistics.median(decoding)
        decode_ratio = statistics.median(p / d for p, d in zip(parsing, decoding, strict=True))
        rows = await conn.fetchval("select count(*) from market.ticks")
        bars = await conn.fetchval("select count(*) from market.bars_1m")
        isolated_rate, isolated_refused = await isolation_rate(
            conn, as_shard(batches[cursor + concurrent_count], CONCURRENT_WRITERS + 2)
        )
        await conn.close()
        load_end = os.getloadavg()[0]

    per_turn = BATCH_ROWS * BATCHES_PER_TURN
    concurrent_batches = CONCURRENT_WRITERS * CONCURRENT_BATCHES_EACH
    distinct_batches = 1 + 2 * ROUNDS * BATCHES_PER_TURN + concurrent_batches + SPARSE_BATCHES
    rows_per_contender = per_turn * ROUNDS
    cpu_us = {name: 1e6 * s / rows_per_contender for name, s in cpu.by_contender.items()}
    rate = {name: per_turn / statistics.median(s) for name, s in seconds.items()}
    return Result(
        name="persist",
        title="Persist: idempotent tick writes vs plain executemany",
        method=__doc__ or "",
        comparisons=[
            Comparison(
                "write_batch (idempotent, with bars)",
                "executemany plain INSERT",
                statistics.median(ratios),
            ),
            Comparison(
                "write_batch replay (all conflicts)",
                "executemany plain INSERT",
                statistics.median(replay_ratios),
            ),
            Comparison(
                "decode: orjson + check_tick + column bounds -> row",
                "orjson.loads alone",
                decode_ratio,
            ),
        ],
        figures=[
            Figure("ceiling: binary COPY into an unlogged, unindexed table", ceiling, "rows/s"),
            Figure("executemany plain INSERT", rate["plain"], "rows/s"),
            Figure("write_batch idempotent (new rows, bars folded)", rate["idempotent"], "rows/s"),
            Figure("write_batch replay (every row already present)", rate["replay"], "rows/s"),
            Figure(
                f"write_batch idempotent, {CONCURRENT_WRITERS} shards written at once",
                concurrent,
                "rows/s",
            ),
            Figure(
                f"write_batch idempotent, sparse stream ({SPARSE_TICKS_PER_S} ticks/s, "
                "nearly a bar per tick)",
                sparse_rate,
                "rows/s",
            ),
            Figure(
                "decode: user records -> validated rows (JSON, before any write)",
                decode_rate,
                "rows/s",
            ),
            Figure(
                "write_batch, one row refused by the database (halved until it stands alone)",
                isolated_rate,
                "rows/s",
            ),
            Figure("machine load average (1 min) at the start", load_start, "runnable"),
            Figure("machine load average (1 min) at the end", load_end, "runnable"),
            Figure("server CPU per row, executemany", cpu_us["plain"], "µs"),
            Figure("server CPU per row, write_batch idempotent", cpu_us["idempotent"], "µs"),
            Figure("server CPU per row, write_batch replay", cpu_us["replay"], "µs"),
            Figure("rows in market.ticks after the run", float(rows), "rows"),
            Figure("minute bars maintained", float(bars), "bars"),
        ],
        checks=[
            (
                f"idempotent path >= {TARGET_ROWS_PER_S:,} rows/s",
                rate["idempotent"] >= TARGET_ROWS_PER_S,
            ),
            (
                "replays inserted nothing (rows = distinct batches written)",
                rows == distinct_batches * BATCH_ROWS,
            ),
            ("the refused row, and only it, was quarantined", isolated_refused == 1),
        ],
        notes=[
            f"{BATCH_ROWS:,} full-mode ticks per batch (depth as JSON), "
            f"{BATCHES_PER_TURN} batches per "
            f"contender per round, {ROUNDS} rounds; ratios are medians of per-round time ratios.",
            f"Rows as one shard carries them: {SHARD_TICKS_PER_S:,} ticks/s (1 MB/s of ~1 KB full "
            f"ticks) over {SHARD_INSTRUMENTS} instruments, 56-digit sequence numbers, "
            f"{KPL_RECORDS_PER_AGGREGATE} user records per aggregate; the sparse figure keeps the "
            "old generator's stream (nearly one bar per tick) as a worst case for the bars.",
            "Target from the issue: >= 150,000 idempotent rows/s, by one writer, on a machine "
            "where the server, the client and this harness share two cores. Server CPU per row "
            "is the figure above (the COPY into the keyed, logged table is most of it; the bar "
            "merge about 0.7 µs); the client's column encoding (~3 µs/row) runs while the "
            "server reads, in chunks of 500 rows. Depth is stored positionally (migration "
            "0004), which took ~1 µs/row of server work off; a replay pays for the refused "
            "COPY before its merge. The concurrent figure is the shape the function runs in "
            "(one writer per shard).",
            "The decode figure is the function's other per-row cost: a shard carries at most "
            "about 1,000 full ticks/s (1 MB/s), so one invocation keeps up with its shard many "
            "times over, write and decode together. Its ratio is against parsing the same JSON "
            "alone (orjson), interleaved: the checks are tick/1's every rule (ticker_core's "
            "check_tick) and the columns' bounds.",
            "The refused-row figure is the isolation path (a row the database refuses, found by "
            "halving, quarantined alone, every other row stored): rare by design, since the "
            "decoder bounds every value to its column.",
            "Rows/s depend on what else the machine runs (its load average is recorded above; "
            "two cores): on a busy machine, compare the ratios, which time each contender "
            "against its anchor in the same rounds, not the absolute rates.",
        ],
    )


@benchmark("persist")
def persist() -> Result:
    """Run the persist benchmark on a private embedded PostgreSQL."""
    return asyncio.run(run())
