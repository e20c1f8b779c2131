"""The feed container end to end: every tick the simulator sends is in Kinesis exactly once.

Each test subscribes instruments in DynamoDB, runs the service against the
simulator and moto's server over real sockets, injects one fault, stops the
service as SIGTERM does, and compares, per instrument, the packets the
simulator wrote to the container's sockets with the user records found in
Kinesis after de-aggregation; (account, token, received_at) must be unique.
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp
import pytest
import websockets

from tests.integration.feed.rig import Rig, fresh_token, subscribe_sample, wait_until
from ticker_adapters.credentials import ApiCredentials
from ticker_adapters.subscription_store import AtmWindowRule

pytestmark = pytest.mark.integration


async def test_steady_stream_reaches_kinesis_exactly_once(rig: Rig) -> None:
    # Given instruments in every mode, subscribed before the container starts
    tokens = subscribe_sample(rig)
    # When the container streams for a while and is then stopped
    feed = rig.start()
    await feed.reaches("feed_ticks_received_total", 500)
    delivered = await feed.stop()
    # Then everything reached Kinesis, exactly once, per instrument
    assert delivered
    rig.assert_exactly_once(tokens)
    assert feed.total("feed_ticks_invalid_total") == 0
    assert feed.total("feed_dropped_records_total") == 0


async def test_health_endpoints_answer_while_streaming(rig: Rig) -> None:
    # Given a streaming container
    subscribe_sample(rig, 10)
    feed = rig.start()
    await wait_until(lambda: not feed.service.readiness(), what="readiness")
    await feed.reaches("feed_ticks_received_total", 1, account="acct0")
    await feed.reaches("feed_kinesis_records_acked_total", 1)
    port = feed.service.health.port
    # When the health endpoints are called
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as healthz:
            health_status = healthz.status
        async with http.get(f"http://127.0.0.1:{port}/readyz") as readyz:
            ready_status = readyz.status
        async with http.get(f"http://127.0.0.1:{port}/metrics") as metrics:
            text = await metrics.text()
    await feed.stop()
    # Then they say healthy, ready, and show the pipeline's counters
    assert (health_status, ready_status) == (200, 200)
    assert 'feed_ticks_received_total{account="acct0"}' in text
    assert "feed_e2e_lag_seconds_bucket" in text


async def test_dropped_connections_reconnect_and_resubscribe(rig: Rig) -> None:
    # Given a streaming container
    tokens = subscribe_sample(rig)
    feed = rig.start()
    await feed.reaches("feed_ticks_received_total", 300)
    # When the exchange drops every connection (no close frame)
    rig.sim.faults.drop_connections()
    await feed.reaches("feed_connects_total", 12)
    await feed.grows("feed_ticks_received_total", 300)
    await feed.stop()
    # Then every connection came back with its instruments, and nothing was lost
    assert feed.total("feed_reconnects_total") >= 6
    rig.assert_exactly_once(tokens)


async def test_silent_connections_trip_the_watchdog(rig: Rig) -> None:
    # Given a streaming container with a 1.5 s watchdog
    tokens = subscribe_sample(rig)
    feed = rig.start()
    await feed.reaches("feed_ticks_received_total", 300)
    # When one account's connections go silent (no ticks, no heartbeats) for 2.5 s
    rig.sim.faults.silence(2.5, api_key=rig.sim.accounts[0].api_key)
    await feed.reaches("feed_watchdog_trips_total", 3)
    await feed.grows("feed_ticks_received_total", 100, account="acct0")
    await feed.stop()
    # Then the silent connections were replaced and every tick sent is in Kinesis once
    assert feed.service.metrics.value("feed_watchdog_trips_total", account="acct1") == 0
    rig.assert_exactly_once(tokens)


async def test_expired_token_is_replaced_from_the_vault(rig: Rig) -> None:
    # Given a streaming container
    tokens = subscribe_sample(rig)
    feed = rig.start()
    await feed.reaches("feed_ticks_received_total", 300)
    # When account 0's token expires and its connections drop, so handshakes get 403
    api_key = rig.sim.accounts[0].api_key
    rig.sim.sessions.expire(api_key=api_key)
    rig.sim.faults.drop_connections(api_key=api_key)
    await feed.reaches("feed_handshake_refusals_total", 3, account="acct0", status="403")
    # and the login flow stores a new token in the vault
    rig.put_session(rig.vault(), "acct0", api_key, rig.sim.issue_access_token(0))
    await wait_until(lambda: feed.connected() == 6, what="six connections")
    await feed.grows("feed_ticks_received_total", 100, account="acct0")
    await feed.stop()
    # Then the new token was picked up without a restart, and nothing was lost
    assert feed.service.metrics.value("feed_token_refreshes_total", account="acct0") >= 1
    rig.assert_exactly_once(tokens)


async def test_a_fourth_connection_refused_backs_off_until_a_slot_frees(rig: Rig) -> None:
    # Given someone else holds one of account 0's three connections
    api_key = rig.sim.accounts[0].api_key
    query = urlencode({"api_key": api_key, "access_token": rig.sim.issue_access_token(0)})
    foreign = await websockets.connect(f"{rig.sim.ws_url}?{query}")
    tokens = subscribe_sample(rig)
    # When the container opens its three connections for account 0
    feed = rig.start()
    await feed.reaches("feed_handshake_refusals_total", 1, account="acct0", status="429")
    # Then it never holds more than the key's three slots, and waits
    assert feed.connected("acct0") <= 2
    # And when the other connection goes away, the third one connects and subscribes
    await foreign.close()
    await wait_until(lambda: feed.connected() == 6, what="six connections")
    await feed.grows("feed_ticks_received_total", 300)
    await feed.stop()
    assert rig.sim.hub.refused_connections >= 1
    rig.assert_exactly_once(tokens)


async def test_an_account_added_to_the_vault_mid_run_takes_what_did_not_fit(rig: Rig) -> None:
    # Given only account 0 in the vault, one connection of 20 instruments, 30 wanted
    vault = rig.vault()
    sim0, sim1 = rig.sim.accounts[0], rig.sim.accounts[1]
    vault.put_api_credentials("acct0", ApiCredentials(sim0.api_key, fresh_token()))
    tokens = subscribe_sample(rig, 30)
    settings = rig.settings(
        accounts=(),
        accounts_refresh_seconds=0.3,
        max_connections_per_key=1,
        max_instruments_per_connection=20,
    )
    feed = rig.start(settings)
    await wait_until(
        lambda: feed.total("feed_unassigned_instruments") == 10, what="10 instruments waiting"
    )
    await feed.reaches("feed_ticks_received_total", 100, account="acct0")
    assert feed.connected("acct1") == 0
    # When an account that has not logged in yet (API credentials, no session) appears
    vault.put_api_credentials("nologin", ApiCredentials(sim1.api_key, fresh_token()))
    await feed.reaches("feed_accounts_waiting_for_login", 1, account="nologin")
    # Then it waits, counted, and does not join: it would take instruments it cannot stream
    assert feed.service.accounts == ("acct0",)
    assert feed.total("feed_unassigned_instruments") == 10
    # When account 1's credentials reach the vault (its session is already there)
    vault.put_api_credentials("acct1", ApiCredentials(sim1.api_key, fresh_token()))
    # Then, without a restart, it connects and carries the 10 that did not fit
    await wait_until(lambda: feed.connected("acct1") == 1, what="account 1 connected")
    await wait_until(lambda: feed.total("feed_unassigned_instruments") == 0, what="all placed")
    await feed.grows("feed_ticks_received_total", 100, account="acct1")
    assert feed.service.accounts == ("acct0", "acct1")
    await feed.stop()
    assert feed.connected("acct0") == 0
    rig.assert_exactly_once(tokens)
    assert set(rig.sim_sent()) == tokens


async def test_partial_failures_and_throttling_resend_only_what_failed(rig: Rig) -> None:
    # Given a streaming container
    tokens = subscribe_sample(rig)
    feed = rig.start()
    await feed.reaches("feed_kinesis_records_acked_total", 100)
    # When Kinesis throttles the next four calls: whole calls refused, and partial calls
    # where every other entry is refused
    calls, entries = rig.proxy.calls_refused, rig.proxy.entries_refused
    rig.proxy.refuse_next(4)
    await wait_until(lambda: rig.proxy.entries_refused > entries, what="refused entries")
    await wait_until(lambda: rig.proxy.calls_refused >= calls + 2, what="throttled calls")
    await wait_until(lambda: not rig.proxy.throttling, what="the end of throttling")
    await feed.grows("feed_kinesis_records_acked_total", 100)
    await feed.stop()
    # Then the refused entries were resent, nothing twice
    metrics = feed.service.metrics
    refused_calls = rig.proxy.calls_refused - calls
    assert (
        metrics.total("feed_kinesis_throttled_records_total") >= rig.proxy.entries_refused - entries
    )
    assert metrics.value("feed_kinesis_requests_total", outcome="throttled") == refused_calls
    assert metrics.value("feed_kinesis_requests_total", outcome="partial") >= 1
    assert metrics.total("feed_kinesis_ambiguous_total") == 0
    rig.assert_exactly_once(tokens)


async def test_kinesis_outage_longer_than_memory_spills_to_disk_and_replays(rig: Rig) -> None:
    # Given a container with a memory budget of a few batches
    tokens = subscribe_sample(rig)
    feed = rig.start(rig.settings(memory_high_bytes=100_000, memory_low_bytes=20_000))
    await feed.reaches("feed_kinesis_records_acked_total", 100)
    # When Kinesis is unreachable long enough to fill memory
    rig.proxy.down()
    await feed.reaches("feed_spilled_records_total", 300)
    assert feed.service.breaker.is_open
    # and comes back
    rig.proxy.up()
    await wait_until(lambda: feed.total("feed_spill_bytes") == 0, what="spill replayed")
    await feed.stop()
    # Then the spilled records were replayed in order and nothing was lost or doubled
    assert feed.total("feed_replayed_records_total") >= feed.total("feed_spilled_records_total")
    assert feed.total("feed_dropped_records_total") == 0
    rig.assert_exactly_once(tokens)


async def test_atm_window_follows_its_underlying_and_drops_strikes_that_leave(rig: Rig) -> None:
    # Given an ATM window on NIFTY: 2 strikes either side, nearest expiry, full mode
    rig.store().put_atm_window(AtmWindowRule("NIFTY", 2, 1, "full", "tests"))
    feed = rig.start()
    service = feed.service

    def subscribed() -> dict[int, str]:
        connections = service.pool.connections.values() if service.pool else ()
        return {t: m for c in connections for t, m in c.desired.items()}

    await wait_until(lambda: len(subscribed()) == 11, what="spot and a 5-strike window")
    before = subscribed()
    spot = next(t for t, m in before.items() if m == "ltp")
    await feed.reaches("feed_ticks_received_total", 60)
    # When NIFTY jumps 1.5%
    rig.sim.market.shock("NIFTY", 1.5)
    await wait_until(lambda: len(set(subscribed()) - set(before)) >= 6, what="re-centred window")
    await feed.grows("feed_ticks_received_total", 60)
    after = subscribed()
    await feed.stop()
    # Then the window is centred on the new price, the old strikes are gone, all in full mode
    assert service.reconciler is not None
    registry = service.reconciler.registry
    assert registry is not None
    options = [registry.by_token(t) for t in after if t != spot]
    strikes = sorted({o.strike for o in options if o is not None})
    price = service.pipeline.prices[spot]
    assert len(strikes) == 5
    assert strikes[1] < price < strikes[3]
    assert set(before) - set(after) - {spot}
    assert {m for t, m in after.items() if t != spot} == {"full"}
    # And every tick of every instrument ever subscribed is in Kinesis once
    rig.assert_exactly_once()
