"""An account retired through the API while the feed streams: its connections close, its
instruments move to the other account, nothing received is lost, nothing restarts.

The stack's accounts were registered and logged in through the API; the feed
container runs in this process (over real sockets) and finds them in the
vault; subscriptions are made through the API; the retirement is
``DELETE /admin/accounts/{id}``. At the end, every tick the simulator sent is
in Kinesis once, and what the feed counted as received is what Kinesis holds.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feed_container.service import Dependencies, FeedService
from sandbox.api_stack import Stack, api_stack
from sandbox.moto_server import MotoServer
from sandbox.postgres import ConnectionInfo
from sandbox.provision import client
from sandbox.report import read_stream
from tests.integration.api.conftest import feed_environment
from tests.waiting import wait_until_async
from ticker_core.records import deaggregate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, postgres: ConnectionInfo) -> Iterator[Stack]:
    with api_stack(moto_server, postgres, environments=1, market_environments=1) as running:
        yield running


def kinesis_ticks(stack: Stack) -> list[dict[str, Any]]:
    """Every tick on the stream, de-aggregated (the sandbox report's reader)."""
    kinesis = client(stack.aws, "kinesis")
    return [
        json.loads(user.data)
        for _, _, key, data in read_stream(kinesis, stack.resources.names.ticks_stream)
        for user in deaggregate(data, key)
    ]


async def test_a_retired_account_stops_streaming_while_the_other_goes_on(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in stack.aws.env().items():  # the feed's AWS SDK, on moto's server
        monkeypatch.setenv(name, value)
    kept, retired = (a.user_id for a in stack.accounts)
    retired_key = stack.accounts[1].api_key
    # Given subscriptions made through the API (a NIFTY window and some equities)
    status, body, _ = stack.trader_call(
        "GET", "/market/instruments?exchange=NSE&instrument_type=EQ&limit=20"
    )
    assert status == 200, body
    equities = [f"NSE:{i['tradingsymbol']}" for i in body["data"]["instruments"]]
    status, body, _ = stack.trader_call(
        "POST", "/subscriptions",
        body={"subscribe": [{"instrument": s, "mode": "full"} for s in equities],
              "atm_windows": [{"underlying": "NIFTY", "strikes_each_side": 4}]},
    )  # fmt: skip
    assert status == 200, body
    # And the feed streaming on both accounts
    environment = feed_environment(
        stack,
        tmp_path / "spill",
        accounts=(),  # the vault's: discovered, and followed
        accounts_refresh_seconds=0.5,
        status_interval_seconds=0.5,
        instance_id="feed-under-test",
    )
    service = FeedService(environment, Dependencies(kinesis_endpoint_url=stack.aws.url))
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(service.run(stop))
    try:

        def streaming() -> dict[str, int]:
            pool = service.pool
            if pool is None:
                return {}
            counts: Counter[str] = Counter()
            for slot, connected, instruments in pool.slot_states():
                if connected:
                    counts[slot.account] += instruments
            return dict(counts)

        await wait_until_async(
            streaming, lambda s: s.get(kept, 0) > 0 and s.get(retired, 0) > 0,
            what="both accounts streaming", within=60,
        )  # fmt: skip
        received = service.metrics.value
        # (ticks on each account's connections: connected is not yet streaming, and on a
        # busy machine the retirement could otherwise come before the account's first tick)
        await wait_until_async(
            lambda: [received("feed_ticks_received_total", account=a) for a in (kept, retired)],
            lambda counts: min(counts) > 0,
            what="ticks received on both accounts",
        )
        before = received("feed_ticks_received_total", account=kept)
        both = {kept, retired}
        await wait_until_async(
            lambda: stack.trader_call("GET", "/subscriptions/status")[1]["data"]["feed"],
            lambda feed: bool(feed) and {a["account_id"] for a in feed["accounts"]} == both,
            what="the status record naming both accounts",
        )  # fmt: skip

        # When the administrator retires one account, mid-run
        status, body, _ = stack.call(
            "DELETE", f"/admin/accounts/{retired}", token=stack.api.admin.id_token
        )
        assert (status, body["data"]["state"]) == (200, "retired")

        # Then the feed drops it without a restart: no slot, no connection at the simulator
        await wait_until_async(
            lambda: [s.account for s, _, _ in service.pool.slot_states()] if service.pool else [],
            lambda accounts: retired not in accounts, what="the retired account's slots gone",
        )  # fmt: skip

        def simulator_connections(api_key: str) -> int:
            sim = stack.simulator
            counters = stack.sim.call(lambda: sim.hub.counters(per_instrument=False))
            return sum(1 for c in counters["connections"].values() if c["api_key"] == api_key)

        await wait_until_async(
            lambda: simulator_connections(retired_key), lambda n: n == 0,
            what="the retired account's connections closed at Kite",
        )  # fmt: skip
        # And every desired instrument now streams on the account that stayed
        pool = service.pool
        assert pool is not None
        await wait_until_async(
            streaming, lambda s: s == {kept: pool.desired_count} and not pool.unassigned,
            what="everything on the remaining account",
        )  # fmt: skip
        # And it kept receiving throughout
        await wait_until_async(
            lambda: received("feed_ticks_received_total", account=kept),
            lambda n: n > before + 20,
            what="ticks on the remaining account",
        )
        # And the status route says so
        await wait_until_async(
            lambda: stack.trader_call("GET", "/subscriptions/status")[1]["data"]["feed"],
            lambda feed: [a["account_id"] for a in feed["accounts"]] == [kept]
            and feed["streaming"] == feed["desired"] and feed["not_fitted"] == 0,
            what="the status record without the retired account",
        )  # fmt: skip
        assert service.metrics.value("feed_accounts_retired_total", account=retired) == 1
    finally:
        stop.set()
        delivered = await asyncio.wait_for(task, 60)
    assert delivered
    # Finally: what the simulator sent is in Kinesis, each tick once, and = what was received
    ticks = kinesis_ticks(stack)
    identity = Counter((t["account"], t["instrument_token"], t["received_at"]) for t in ticks)
    assert not [k for k, n in identity.items() if n > 1]
    assert len(ticks) == service.metrics.total("feed_ticks_received_total")
    sim = stack.simulator
    sent = stack.sim.call(lambda: sim.hub.counters()["per_instrument"])
    assert Counter(t["instrument_token"] for t in ticks) == Counter(
        {int(token): n for token, n in sent.items()}
    )
    assert {t["account"] for t in ticks} == {kept, retired}
