"""Background loops that raise are logged, counted, restarted and shown in readiness."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from itertools import repeat

import pytest

from feed_container.metrics import Metrics
from feed_container.supervision import Supervisor


def no_delay() -> Iterator[float]:
    return repeat(0.0)


async def test_a_loop_that_raises_is_logged_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a loop that fails on its first two runs and then finishes
    metrics = Metrics()
    now = [100.0]
    supervisor = Supervisor(metrics, restart_delays=no_delay, window=30.0, clock=lambda: now[0])
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise OSError("disk gone")

    # When it runs supervised
    with caplog.at_level(logging.ERROR, logger="feed_container.supervision"):
        task = supervisor.spawn("lane-0-send", loop, kind="lane-send")
        await task
    # Then it was restarted until it finished, each failure counted under its kind and logged
    assert runs == [0, 1, 2]
    assert metrics.value("feed_task_failures_total", task="lane-send") == 2
    assert [r.task for r in caplog.records] == ["lane-0-send", "lane-0-send"]  # type: ignore[attr-defined]
    assert "OSError: disk gone" in caplog.text  # the traceback is in the log
    # And it is reported failing for the window after its last failure, then no longer
    assert supervisor.failing() == ["lane-0-send"]
    now[0] += 31
    assert supervisor.failing() == []


async def test_cancellation_passes_through_and_the_task_never_ends_with_an_error() -> None:
    # Given a supervised loop that waits forever
    supervisor = Supervisor(Metrics(), restart_delays=no_delay)
    started = asyncio.Event()

    async def loop() -> None:
        started.set()
        await asyncio.Event().wait()

    task = supervisor.spawn("emf", loop)
    await started.wait()
    # When it is cancelled (shutdown), Then it ends cancelled, not restarted
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.failing() == []
