"""GC pauses and loop lag are measured; the start-up heap is frozen out of the collector."""

from __future__ import annotations

import asyncio
import gc
import re
from datetime import date

from feed_container.metrics import Metrics
from feed_container.pauses import GcWatch, settle_heap, watch_loop_lag
from testkit.factories import chain
from ticker_core.instruments import Instrument, InstrumentRegistry


def test_every_collection_is_timed_by_generation() -> None:
    # Given a watch on the collector
    metrics = Metrics()
    watch = GcWatch(metrics)
    try:
        # When a full collection runs
        gc.collect(2)
    finally:
        watch.close()
    # Then its pause is in the histogram under its generation, and the watch is gone after
    text = metrics.render_prometheus()
    assert 'feed_gc_pause_seconds_count{generation="2"} 1.0' in text
    gc.collect(2)
    assert 'feed_gc_pause_seconds_count{generation="2"} 1.0' in metrics.render_prometheus()


def in_collector_sight(target: object) -> bool:
    """Whether the collector still walks ``target`` (frozen objects are in no generation)."""
    return any(candidate is target for candidate in gc.get_objects())


def test_settling_freezes_what_lives_and_never_thaws_it() -> None:
    # Given objects alive after start-up
    survivor = [["alive since start-up"]]
    try:
        # When the heap is settled
        settle_heap()
        # Then they are out of the collector's sight
        assert gc.get_freeze_count() > 0
        assert not in_collector_sight(survivor)
        # And settling again (a new registry) freezes the newcomers and keeps the old frozen
        newcomer = [["built after start-up"]]
        assert in_collector_sight(newcomer)
        settle_heap()
        assert not in_collector_sight(newcomer)
        assert not in_collector_sight(survivor)
    finally:
        gc.unfreeze()


def probed(candidate: object) -> bool:
    """Whether ``candidate`` is the probe's registry or one of its instruments."""
    # type(), not isinstance(): the heap holds weak proxies, which isinstance would dereference
    if type(candidate) is Instrument:
        return candidate.name == "GCPROBE"
    if type(candidate) is InstrumentRegistry:
        return any(i.name == "GCPROBE" for i in candidate.instruments)
    return False


def test_a_registry_holds_no_garbage_cycles_so_frozen_ones_are_freed() -> None:
    # Given a registry built (as the next day's replaces it), the collector off
    strikes = [float(k) for k in range(20000, 26000, 50)]
    registry = InstrumentRegistry(
        chain("GCPROBE", date(2026, 12, 31), strikes, first_exchange_token=1000, future=True)
    )
    assert len(registry.instruments) > 200
    gc.disable()
    try:
        # When it is dropped
        del registry
        # Then reference counting alone freed it and every instrument it held: none is
        # left for a collection to find (a frozen cycle would never be freed)
        left = [o for o in gc.get_objects() if probed(o)]
        assert left == []
    finally:
        gc.enable()


def observed(metrics: Metrics, sample: str) -> float:
    match = re.search(rf"^{sample} (\S+)$", metrics.render_prometheus(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_loop_lag_is_observed_per_interval() -> None:
    # Given the lag watcher on a 1 ms timer
    metrics = Metrics()
    task = asyncio.create_task(watch_loop_lag(metrics, interval=0.001))
    # When the loop runs a while, Then each interval adds one observation
    deadline = asyncio.get_running_loop().time() + 5
    while observed(metrics, "feed_loop_lag_seconds_count") < 3:
        assert asyncio.get_running_loop().time() < deadline, "no loop-lag observations"
        await asyncio.sleep(0.001)
    task.cancel()
