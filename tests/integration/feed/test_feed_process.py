"""``python -m feed_container`` as a plain process: SIGTERM mid-stream, and a restart that replays.

The process is what ECS (and the sandbox) runs: settings from its environment,
AWS from the SDK's environment, JSON logs on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox.postgres import free_port
from tests.integration.feed.rig import STREAM, TABLE, Rig, subscribe_sample, wait_until

pytestmark = pytest.mark.integration

STOP_TIMEOUT = 8.0


def stopped_lines(log: Path) -> str:
    """The container's "feed stopped" log lines (counts to read a failure by)."""
    return " | ".join(line for line in log.read_text().splitlines() if "feed stopped" in line)


def feed_env(rig: Rig, spill: Path, *, kinesis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEED_", "KITE_"))}
    env.update(rig.aws.env())
    env.update(
        {
            "AWS_ENDPOINT_URL_KINESIS": kinesis_url,
            "FEED_ACCOUNTS": ",".join(rig.accounts),
            "KITE_WS_URL": rig.sim.ws_url,
            "KITE_REST_URL": rig.sim.rest_url,
            "KITE_CREDENTIALS_KMS_KEY_ARN": rig.kms_key,
            "SUBSCRIPTIONS_TABLE_NAME": TABLE,
            "TICKS_STREAM_NAME": STREAM,
            "FEED_SPILL_DIR": str(spill),
            "FEED_HEALTH_HOST": "127.0.0.1",
            "FEED_HEALTH_PORT": str(free_port()),
            "FEED_LINGER_MS": "50",
            "FEED_SUBSCRIPTION_POLL_SECONDS": "0.2",
            "FEED_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT),
            "FEED_PUT_TIMEOUT_SECONDS": "2",
            "FEED_CLOSE_TIMEOUT_SECONDS": "2",
            "FEED_BREAKER_OPEN_SECONDS": "0.2",
            "FEED_BREAKER_MAX_OPEN_SECONDS": "1",
            "FEED_RETRY_MAX_SECONDS": "0.2",
            "FEED_EMF_INTERVAL_SECONDS": "1",
            "FEED_LOG_LEVEL": "INFO",
        }
    )
    return env


@contextlib.asynccontextmanager
async def feed_process(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m feed_container``, killed on the way out if a test left it running."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "feed_container", env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def sigterm(process: asyncio.subprocess.Process) -> tuple[int, float]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT + 10)
    return code, time.monotonic() - started


async def sent_more_than(rig: Rig, packets: int) -> None:
    """Wait for the simulator to have sent ``packets`` (a process starting on a loaded
    machine takes a while to import, load instruments and subscribe: a long deadline)."""
    await wait_until(
        lambda: rig.sim.hub.counters(per_instrument=False)["packets_sent"] > packets,
        within=60,
        what=f"more than {packets} packets sent",
    )


async def kinesis_count(rig: Rig) -> int:
    return len(await asyncio.to_thread(rig.kinesis_ticks))


async def test_sigterm_mid_stream_flushes_everything_and_exits_in_time(
    rig: Rig, tmp_path: Path
) -> None:
    # Given the container running as a process, streaming
    tokens = subscribe_sample(rig)
    log = tmp_path / "feed.log"
    env = feed_env(rig, tmp_path / "spill", kinesis_url=rig.aws.url)
    async with feed_process(env, log) as process:
        await sent_more_than(rig, 400)
        # When it gets SIGTERM mid-stream
        code, seconds = await sigterm(process)
    # Then it exits 0 within the stop timeout, having delivered every tick it received
    assert code == 0, log.read_text()[-3000:]
    assert seconds < STOP_TIMEOUT
    rig.assert_exactly_once(tokens)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    stopped = [line for line in lines if line.get("message") == "feed stopped"]
    assert stopped
    assert stopped[0]["delivered_everything"] is True
    # And its logs and metrics are JSON lines without a single access token
    text = log.read_text()
    for session in rig.sim.sessions.sessions():
        assert session.access_token not in text
    assert any("_aws" in line for line in lines), "no EMF metrics line"


async def test_a_restart_replays_what_a_stop_left_on_disk(rig: Rig, tmp_path: Path) -> None:
    # Given a container whose Kinesis is unreachable, stopped with records on disk
    tokens = subscribe_sample(rig)
    spill = tmp_path / "spill"
    log = tmp_path / "feed.log"
    rig.proxy.down()
    env = feed_env(rig, spill, kinesis_url=rig.proxy.url)
    async with feed_process(env, log) as first:
        await sent_more_than(rig, 300)
        code, seconds = await sigterm(first)
    assert code == 0, log.read_text()[-3000:]
    assert seconds < STOP_TIMEOUT
    assert list(spill.rglob("*.seg")), "nothing was left on disk"
    assert await kinesis_count(rig) == 0
    # When Kinesis is back and the container starts again on the same storage
    rig.proxy.up()
    async with feed_process(env, log) as second:
        await wait_until(lambda: not list(spill.rglob("*.seg")), within=60, what="spill replayed")
        code, _ = await sigterm(second)
    # Then the first run's ticks and the second's are all in Kinesis, once each
    assert code == 0
    rig.assert_exactly_once(tokens, context=stopped_lines(log))
