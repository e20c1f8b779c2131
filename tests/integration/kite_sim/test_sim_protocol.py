"""The simulator in-process: WebSocket protocol details, faults, REST endpoints, admin API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kite_sim.config import SimConfig
from kite_sim.feed import Connection
from kite_sim.ratelimit import scaled_limits
from kite_sim.server import Simulator
from kite_sim.universe import UniverseConfig
from tests.waiting import wait_until_async
from ticker_core.kite_wire import HEARTBEAT, FrameError, parse_ticks

pytestmark = pytest.mark.integration
SMALL = UniverseConfig(stocks=4, nifty_weeklies=1, monthlies=2, index_strikes=4, stock_strikes=2)


def _config(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {
        "seed": 4,
        "tick_interval": 0.02,
        "default_tick_rate": 20.0,
        "heartbeat_interval": 0.2,
        "rate_limits": scaled_limits(1000),
        "universe": SMALL,
    }
    base.update(overrides)
    return SimConfig(**base)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(_config()) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _auth(sim: Simulator, index: int = 0) -> dict[str, str]:
    token = sim.issue_access_token(index)
    return {"Authorization": f"token {sim.accounts[index].api_key}:{token}", "X-Kite-Version": "3"}


def _ws_url(sim: Simulator, index: int = 0) -> str:
    token = sim.issue_access_token(index)
    return f"{sim.ws_url}/?api_key={sim.accounts[index].api_key}&access_token={token}"


def _written(conn: Connection) -> tuple[int, int, int]:
    """Everything the server has written to one connection: frames, heartbeats, texts."""
    return conn.frames_sent, conn.heartbeats_sent, conn.text_sent


async def _collect(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[Any]:
    out: list[Any] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            out.append(msg.data)
        else:
            break
    return out


async def test_idle_connection_gets_heartbeats(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(_ws_url(sim)) as ws:
        messages = await _collect(ws, 0.7)
    assert HEARTBEAT in messages


async def test_counts_sent_equal_packets_received(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    # Given a connection subscribed to every instrument in mixed modes
    tokens = [int(t) for t in sim.market.tokens]
    received: dict[int, int] = {}
    async with http.ws_connect(_ws_url(sim)) as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": tokens}))
        await ws.send_str(json.dumps({"a": "mode", "v": ["full", tokens[::2]]}))
        await ws.send_str(json.dumps({"a": "mode", "v": ["ltp", tokens[1::4]]}))
        for data in await _collect(ws, 0.6):
            if isinstance(data, bytes):
                for tick in parse_ticks(data):
                    received[tick["instrument_token"]] = (
                        received.get(tick["instrument_token"], 0) + 1
                    )
        # When the subscription ends and the socket drains
        await ws.send_str(json.dumps({"a": "unsubscribe", "v": tokens}))
        for data in await _collect(ws, 0.3):
            if isinstance(data, bytes):
                for tick in parse_ticks(data):
                    received[tick["instrument_token"]] = (
                        received.get(tick["instrument_token"], 0) + 1
                    )
        counters = sim.hub.counters()
    # Then the simulator's per-instrument sent counts are exactly what arrived
    sent = {int(k): v for k, v in counters["per_instrument"].items()}
    assert sent == received
    assert set(received) == set(tokens)


async def test_subscription_limit_and_bad_messages_get_error_texts(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(_config(max_instruments_per_connection=5)) as sim:
        tokens = [int(t) for t in sim.market.tokens[:8]]
        async with http.ws_connect(_ws_url(sim)) as ws:
            await ws.send_str(json.dumps({"a": "subscribe", "v": tokens}))
            await ws.send_str("not json")
            texts = [json.loads(m) for m in await _collect(ws, 0.4) if isinstance(m, str)]
        errors = [t["data"] for t in texts if t["type"] == "error"]
        assert any("limit" in e for e in errors)
        assert any("JSON" in e for e in errors)
        await wait_until_async(lambda: not sim.hub.connections, what="the server to see the close")
        assert sim.hub.counters()["connections"] == {}
        assert sim.hub.closed_connections == 1


async def test_faults_on_the_socket(sim: Simulator, http: aiohttp.ClientSession) -> None:
    token = int(sim.market.tokens[1])
    admin = f"{sim.rest_url}/_sim/faults"
    # A refused handshake, then a normal one
    await http.post(admin, json={"kind": "refuse_handshake", "status": 503})
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(_ws_url(sim))
    assert refused.value.status == 503
    async with http.ws_connect(_ws_url(sim)) as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": [token]}))
        assert await _collect(ws, 0.2)
        # A malformed frame
        await http.post(admin, json={"kind": "malformed", "malformed": "count_mismatch"})
        frames = [m for m in await _collect(ws, 0.3) if isinstance(m, bytes)]
        bad = 0
        for frame in frames:
            try:
                parse_ticks(frame)
            except FrameError:
                bad += 1
        assert bad == 1
        # Silence: nothing at all, not even heartbeats
        await http.post(admin, json={"kind": "silence", "seconds": 0.5})
        [client] = sim.clients.values()
        # (what the server had queued before the silence began is written first)
        await wait_until_async(client.queue.empty, what="the frames queued before the silence")
        written = _written(client.conn)
        await _collect(ws, 0.35)  # the silence's length, which the simulator measures
        assert _written(client.conn) == written
        assert await _collect(ws, 0.4)
        # Latency on frames and REST
        await http.post(admin, json={"kind": "latency", "ws_ms": 5, "rest_ms": 5})
        assert await _collect(ws, 0.2)
        described = await (await http.get(admin)).json()
        assert described["ws_latency_ms"] == 5
        await http.delete(admin)
        # A dropped connection closes without a close handshake
        await http.post(admin, json={"kind": "drop"})
        await _collect(ws, 0.5)
        assert ws.closed
    bad_spec = await http.post(admin, json={"kind": "meteor"})
    assert bad_spec.status == 400


async def test_rest_market_data_and_portfolio(sim: Simulator, http: aiohttp.ClientSession) -> None:
    headers = _auth(sim)
    root = sim.rest_url
    inst = next(i for i in sim.universe.instruments if i.segment == "NFO-FUT")
    key = f"{inst.exchange}:{inst.tradingsymbol}"
    params = [("i", key), ("i", str(sim.market.tokens[0])), ("i", "NSE:NOPE")]
    quote = await (await http.get(f"{root}/quote", params=params, headers=headers)).json()
    assert set(quote["data"]) == {key, str(sim.market.tokens[0])}
    assert len(quote["data"][key]["depth"]["buy"]) == 5
    ohlc = await (await http.get(f"{root}/quote/ohlc", params=params, headers=headers)).json()
    assert "ohlc" in ohlc["data"][key]
    no_i = await http.get(f"{root}/quote/ltp", headers=headers)
    assert no_i.status == 400
    assert (await no_i.json())["error_type"] == "InputException"
    hist = await http.get(
        f"{root}/instruments/historical/{inst.instrument_token}/5minute",
        params={"from": "2024-06-03 09:15:00", "to": "2024-06-03 10:15:00", "oi": "1"},
        headers=headers,
    )
    candles = (await hist.json())["data"]["candles"]
    assert len(candles[0]) == 7
    for path in ("/portfolio/holdings", "/portfolio/positions", "/trades", "/orders", "/mf/orders"):
        response = await http.get(f"{root}{path}", headers=headers)
        assert response.status == 200, path
    for segment, status in (("equity", 200), ("commodity", 200), ("nope", 400)):
        response = await http.get(f"{root}/user/margins/{segment}", headers=headers)
        assert response.status == status
    orders = [
        {
            "exchange": inst.exchange,
            "tradingsymbol": inst.tradingsymbol,
            "transaction_type": side,
            "quantity": inst.lot_size,
            "product": "NRML",
            "order_type": "MARKET",
        }
        for side in ("BUY", "SELL")
    ]
    margins = await (await http.post(f"{root}/margins/orders", json=orders, headers=headers)).json()
    assert margins["data"][0]["total"] > 0
    basket = await (
        await http.post(f"{root}/margins/basket?mode=compact", json=orders, headers=headers)
    ).json()
    assert basket["data"]["final"]["total"] < basket["data"]["initial"]["total"]
    bad = await http.post(f"{root}/margins/orders", json={"x": 1}, headers=headers)
    assert bad.status == 400
    unknown = await http.get(f"{root}/nowhere", headers=headers)
    assert unknown.status == 404
    assert (await unknown.json())["status"] == "error"
    csv = await http.get(f"{root}/instruments/NSE")
    assert csv.headers["Content-Type"].startswith("text/csv")
    no_auth = await http.get(f"{root}/user/profile")
    assert no_auth.status == 403
    logout = await http.delete(
        f"{root}/session/token",
        params={"api_key": sim.accounts[0].api_key, "access_token": headers["Authorization"][-32:]},
    )
    assert (await logout.json())["data"] is True


async def test_gtt_lifecycle_and_trigger(sim: Simulator, http: aiohttp.ClientSession) -> None:
    headers = _auth(sim)
    root = sim.rest_url
    inst = next(i for i in sim.universe.instruments if i.segment == "NSE")
    ltp = sim.market.snapshot(inst.instrument_token).last_price
    trigger = round(round(ltp * 0.97 / 0.05) * 0.05, 2)
    form = {
        "type": "single",
        "condition": json.dumps(
            {
                "exchange": "NSE",
                "tradingsymbol": inst.tradingsymbol,
                "trigger_values": [trigger],
                "last_price": ltp,
            }
        ),
        "orders": json.dumps(
            [
                {
                    "transaction_type": "BUY",
                    "quantity": 1,
                    "order_type": "LIMIT",
                    "product": "CNC",
                    "price": trigger,
                }
            ]
        ),
    }
    placed = await (await http.post(f"{root}/gtt/triggers", data=form, headers=headers)).json()
    trigger_id = placed["data"]["trigger_id"]
    modified = await http.put(f"{root}/gtt/triggers/{trigger_id}", data=form, headers=headers)
    assert modified.status == 200
    listed = await (await http.get(f"{root}/gtt/triggers", headers=headers)).json()
    assert [t["id"] for t in listed["data"]] == [trigger_id]
    # When the market falls through the trigger
    await http.post(f"{root}/_sim/market/shock", json={"underlying": inst.name, "pct": -6})

    async def trigger_now() -> dict[str, Any]:
        response = await http.get(f"{root}/gtt/triggers/{trigger_id}", headers=headers)
        body: dict[str, Any] = await response.json()
        return body

    # Then at the simulator's next round the trigger fires
    got = await wait_until_async(
        trigger_now, lambda body: body["data"]["status"] != "active", what="the trigger to fire"
    )
    assert got["data"]["status"] == "triggered"
    assert got["data"]["orders"][0]["result"]["order_result"]["status"] == "success"
    deleted = await http.delete(f"{root}/gtt/triggers/{trigger_id}", headers=headers)
    assert deleted.status == 200
    missing = await http.get(f"{root}/gtt/triggers/{trigger_id}", headers=headers)
    assert missing.status == 404
    bad = await http.post(f"{root}/gtt/triggers", data={"type": "x"}, headers=headers)
    assert bad.status == 400


async def test_admin_api(sim: Simulator, http: aiohttp.ClientSession) -> None:
    root = f"{sim.rest_url}/_sim"
    info = await (await http.get(f"{root}/info")).json()
    assert info["accounts"][0]["api_key"] == sim.accounts[0].api_key
    counters = await (await http.get(f"{root}/counters?per_instrument=0")).json()
    assert "feed" in counters
    clock = await (await http.post(f"{root}/clock", json={"advance": 60, "speed": 2})).json()
    assert clock["speed"] == 2
    clock = await (
        await http.post(
            f"{root}/clock", json={"set": "2024-06-03T16:00:00+05:30", "session_loop": False}
        )
    ).json()
    assert clock["market_open"] is False
    naive = await http.post(f"{root}/clock", json={"set": "2024-06-03T16:00:00"})
    assert naive.status == 400
    assert (await (await http.get(f"{root}/market")).json())["underlyings"]
    ips = await (
        await http.post(
            f"{root}/accounts/{sim.accounts[0].api_key}/ips",
            json={"registered_ips": ["10.0.0.1"], "enforce": False},
        )
    ).json()
    assert ips == {"registered_ips": ["10.0.0.1"], "enforce": False}
    rates = await (
        await http.post(
            f"{root}/tick_rates", json={"rates": {"NIFTY": 50}, "max_ticks_per_second": 1000}
        )
    ).json()
    assert rates["max_ticks_per_second"] == 1000
    assert sim.hub.rate[1] == 50  # NIFTY's first future
    session = await (await http.post(f"{root}/sessions", json={})).json()
    assert session["access_token"]
    expired = await (await http.post(f"{root}/tokens/expire", json={})).json()
    assert expired["expired"] >= 1
    assert await (await http.get(f"{root}/postbacks")).json() == []


async def test_admin_token_and_market_hours(http: aiohttp.ClientSession) -> None:
    async with Simulator(_config(admin_token="t0k", session_loop=False)) as sim:
        assert (await http.get(f"{sim.rest_url}/_sim/info")).status == 401
        ok = await http.get(f"{sim.rest_url}/_sim/info", headers={"X-Sim-Admin-Token": "t0k"})
        assert ok.status == 200
        # After the close, regular orders are rejected and AMO orders wait
        sim.clock.set(sim.calendar.next_close(sim.clock.now()))
        headers = _auth(sim)
        inst = next(i for i in sim.universe.instruments if i.segment == "NSE")
        close = sim.market.snapshot(inst.instrument_token).close
        form = {
            "exchange": "NSE",
            "tradingsymbol": inst.tradingsymbol,
            "transaction_type": "BUY",
            "quantity": "1",
            "product": "CNC",
            "order_type": "LIMIT",
            "price": f"{round(close * 0.95 / 0.05) * 0.05:.2f}",
        }
        regular = await (
            await http.post(f"{sim.rest_url}/orders/regular", data=form, headers=headers)
        ).json()
        amo = await (
            await http.post(f"{sim.rest_url}/orders/amo", data=form, headers=headers)
        ).json()
        book = {o["order_id"]: o["status"] for o in sim.engine.orders(sim.accounts[0])}
        assert book[regular["data"]["order_id"]] == "REJECTED"
        assert book[amo["data"]["order_id"]] == "AMO REQ RECEIVED"
