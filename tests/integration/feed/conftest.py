"""Fixtures of the feed container's integration tests (each stops what it starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kite_sim.config import AccountConfig, SimConfig
from kite_sim.server import Simulator
from kite_sim.universe import UniverseConfig
from sandbox.kinesis_proxy import KinesisFaultProxy
from sandbox.moto_server import AwsEndpoint, MotoServer
from tests.integration.feed.rig import Rig


@pytest.fixture(scope="session")
def kinesis_proxy(moto_server: MotoServer) -> Iterator[KinesisFaultProxy]:
    """The fault-injecting proxy in front of the session's moto server."""
    proxy = KinesisFaultProxy(moto_server.url)
    proxy.start()
    yield proxy
    proxy.close()


def sim_config(**overrides: object) -> SimConfig:
    """A small, fast universe with two accounts, ticking every 50 ms."""
    config = SimConfig(
        seed=21,
        accounts=[AccountConfig(), AccountConfig()],
        universe=UniverseConfig(stocks=8, nifty_weeklies=2, monthlies=2, index_strikes=12),
        tick_interval=0.05,
        default_tick_rate=4.0,
        heartbeat_interval=0.2,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture
async def rig(
    aws: AwsEndpoint, kinesis_proxy: KinesisFaultProxy, tmp_path: Path
) -> AsyncIterator[Rig]:
    """A running simulator and a clean emulated AWS account with stream, table, key, sessions."""
    kinesis_proxy.up()
    kinesis_proxy.throttle(0)
    async with Simulator(sim_config()) as sim:
        rig = Rig(sim=sim, aws=aws, proxy=kinesis_proxy, spill_dir=tmp_path / "spill")
        rig.setup_aws()
        try:
            yield rig
        finally:
            for running in rig.running:
                if not running.task.done():
                    await running.stop()
