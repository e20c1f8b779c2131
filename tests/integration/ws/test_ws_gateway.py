"""Acceptance: the WebSocket API through the local gateway, with live ticks and Greeks flowing."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from joserfc import jwt
from joserfc.jwk import RSAKey
from websockets.exceptions import InvalidStatus

from lambdas.ws.dal.connections import DynamoConnectionStore
from lambdas.ws.dal.subscribers import DynamoSubscriberIndex
from lambdas.ws.protocol import Channel
from sandbox.websocket_api import endpoints as websocket_endpoints
from sandbox.ws_client import StreamClient, parse_args, watch
from testkit.factories import moto_signed, token_claims
from tests.integration.ws.conftest import MAX_CONNECTIONS_PER_USER, WsStack
from tests.waiting import wait_until_async
from ticker_adapters.subscription_store import SubscriptionStore

pytestmark = pytest.mark.integration


@dataclass
class Seen:
    """What one client received, by channel."""

    messages: int = 0
    records: dict[Channel, int] = field(default_factory=lambda: dict.fromkeys(Channel, 0))
    tokens: dict[Channel, set[int]] = field(default_factory=lambda: {c: set() for c in Channel})
    latest: dict[Channel, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {c: {} for c in Channel}
    )

    def add(self, channel: Channel, records: list[dict[str, Any]]) -> None:
        self.messages += 1
        self.records[channel] += len(records)
        for record in records:
            token = int(record["instrument_token"])
            self.tokens[channel].add(token)
            self.latest[channel][token] = record

    def clear(self) -> None:
        self.messages = 0
        for channel in Channel:
            self.records[channel] = 0
            self.tokens[channel].clear()


async def _refused(url: str, subprotocols: list[str] | None) -> int:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            url, subprotocols=[Subprotocol(p) for p in subprotocols or []] or None, proxy=None
        ):
            pass
    return int(refused.value.response.status_code)


async def test_unauthenticated_forged_or_expired_tokens_are_refused(ws_stack: WsStack) -> None:
    url = ws_stack.gateway.url
    claims = token_claims(ws_stack.alice.id_token)
    expired = moto_signed({**claims, "exp": int(time.time()) - 1})
    forged = jwt.encode(
        {"alg": "RS256", "kid": "dummy"},
        {**claims, "exp": int(time.time()) + 600},
        RSAKey.generate_key(2048),
    )
    access = moto_signed({**claims, "token_use": "access"})
    # No Sec-WebSocket-Protocol at all: the authorizer's identity source is missing
    assert await _refused(url, None) == 401
    # The protocol without a token, and bad tokens: the authorizer denies
    assert await _refused(url, ["ticker.v1"]) == 403
    for token in (expired, forged, access, "not-a-jwt"):
        assert await _refused(url, ["ticker.v1", token]) == 403
    # A token offered without the protocol is not taken for one
    assert await _refused(url, [ws_stack.alice.id_token]) == 403
    # The same claims, signed by the pool and current, connect and select the protocol
    async with StreamClient(url, moto_signed(claims)) as connected:
        assert connected.socket is not None
        assert connected.socket.subprotocol == "ticker.v1"
        assert (await connected.request({"action": "ping"}))["type"] == "pong"


async def test_connections_per_user_are_limited(ws_stack: WsStack) -> None:
    url, token = ws_stack.gateway.url, ws_stack.bob.id_token
    clients = [StreamClient(url, token) for _ in range(MAX_CONNECTIONS_PER_USER)]
    for c in clients:
        await c.__aenter__()
    try:
        assert await _refused(url, ["ticker.v1", token]) == 429
    finally:
        for c in clients:
            await c.__aexit__()
    # Each close ran $disconnect: bob may connect again
    async with StreamClient(url, token) as again:
        assert (await again.request({"action": "ping"}))["type"] == "pong"


async def _fanout_runs(ws_stack: WsStack, runs: int = 2) -> None:
    """Until each fan-out has finished ``runs`` more invocations (one in flight, then a new one)."""
    for channel in Channel:
        start = ws_stack.fanout_invocations(channel)
        await wait_until_async(
            lambda c=channel: ws_stack.fanout_invocations(c),  # type: ignore[misc]
            lambda n, s=start: n >= s + runs,  # type: ignore[misc]
            within=60,
            what=f"{runs} more {channel} fan-out invocations",
        )


async def test_a_client_receives_exactly_its_instruments_and_none_after_unsubscribing(
    ws_stack: WsStack,
) -> None:
    seen = Seen()
    infy = ws_stack.others["NSE:INFY"]
    async with StreamClient(ws_stack.gateway.url, ws_stack.alice.id_token, on_data=seen.add) as c:
        # When alice subscribes to the chain and INFY
        reply = await c.request(
            {"action": "subscribe", "chains": [ws_stack.chain], "instruments": ["NSE:INFY"]}
        )
        subscribed = {i["instrument_token"] for i in reply["instruments"]}
        assert subscribed == ws_stack.chain_tokens | {infy}
        # Then ticks arrive for every one of them, and Greeks for every option
        await wait_until_async(
            lambda: (
                seen.tokens[Channel.TICKS] >= subscribed
                and seen.tokens[Channel.GREEKS] >= ws_stack.chain_tokens
            ),
            within=60,
            what="ticks of every instrument and Greeks of every option",
        )
        # And nothing else: not TCS or the future, which stream too; Greeks only of options
        assert seen.tokens[Channel.TICKS] == subscribed
        assert seen.tokens[Channel.GREEKS] == ws_stack.chain_tokens
        option = next(iter(ws_stack.chain_tokens))
        assert seen.latest[Channel.GREEKS][option]["iv"] is not None
        assert seen.latest[Channel.TICKS][option]["mode"] == "full"
        # And one message per batch: far fewer messages than records
        assert seen.messages < sum(seen.records.values()) / 10
        # When alice unsubscribes from the chain (what is in flight may still land)
        reply = await c.request({"action": "unsubscribe", "chains": [ws_stack.chain]})
        assert (reply["type"], reply["total"]) == ("unsubscribed", 1)
        await _fanout_runs(ws_stack)
        seen.clear()
        await _fanout_runs(ws_stack)
        # Then nothing of the chain arrives any more, while INFY still does
        assert seen.tokens[Channel.GREEKS] == set()
        assert seen.tokens[Channel.TICKS] <= {infy}
        await wait_until_async(lambda: infy in seen.tokens[Channel.TICKS], what="INFY's ticks")


def _connection_ids(ws_stack: WsStack) -> set[str]:
    return set(ws_stack.gateway.connection_ids())


async def test_a_slow_client_gets_the_latest_values_not_a_backlog(ws_stack: WsStack) -> None:
    url = ws_stack.gateway.url
    port = int(url.split(":")[2].split("/")[0])
    fast, slow = Seen(), Seen()
    # A client with a small receive buffer, whose library queues at most one message
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    before = _connection_ids(ws_stack)
    async with StreamClient(
        url, ws_stack.alice.id_token, on_data=slow.add, max_queue=1, sock=sock
    ) as s:
        (slow_id,) = _connection_ids(ws_stack) - before
        async with StreamClient(url, ws_stack.bob.id_token, on_data=fast.add) as f:
            for c in (s, f):
                reply = await c.request({"action": "subscribe", "chains": [ws_stack.chain]})
                assert reply["type"] == "subscribed"
            await wait_until_async(lambda: slow.tokens[Channel.GREEKS], what="first Greeks")
            # When the slow client reads nothing for 10 seconds while the market moves
            s.pause()
            posts_before = ws_stack.gateway.counts(slow_id)["posts"]
            paused_at = time.monotonic()
            samples = []
            while time.monotonic() - paused_at < 10:  # the scenario: ten seconds away
                samples.append(ws_stack.gateway.pending_bytes(slow_id)[0])
                await asyncio.sleep(0.5)
            counts = ws_stack.gateway.counts(slow_id)
            posted_while_away = counts["posts"] - posts_before
            # Then the gateway kept at most one record per instrument and channel for it
            records_bytes = _max_record_bytes(fast) * len(ws_stack.chain_tokens) * 2
            assert posted_while_away >= 15
            assert max(samples) <= 2 * records_bytes
            assert ws_stack.gateway.pending_bytes(slow_id)[1] <= 2 * records_bytes
            assert counts["conflated"] > 0
            # When the market stops and the client reads again
            ws_stack.producer.pause()
            slow_messages_before = slow.messages
            s.resume()
            await _settled(ws_stack, slow_id)
            # Then it received what the sockets held and the conflated latest: a few messages,
            # not the backlog of everything posted while it was away
            caught_up_with = slow.messages - slow_messages_before
            assert caught_up_with <= 16
            assert caught_up_with * 3 < posted_while_away
            # And its values are the latest, the same the fast client holds and the market set
            for channel in Channel:
                assert _values(slow, channel) == _values(fast, channel)
            for token in ws_stack.chain_tokens:
                last = ws_stack.producer.last[token]
                assert slow.latest[Channel.TICKS][token]["last_price"] == last
            ws_stack.producer.resume()


def _max_record_bytes(seen: Seen) -> int:
    return max(
        len(json.dumps(r, separators=(",", ":")))
        for channel in Channel
        for r in seen.latest[channel].values()
    )


def _values(seen: Seen, channel: Channel) -> dict[int, Any]:
    field_name = "last_price" if channel is Channel.TICKS else "iv"
    return {t: r[field_name] for t, r in seen.latest[channel].items()}


async def _settled(ws_stack: WsStack, connection_id: str) -> None:
    """Until both fan-outs have caught up with the stopped market and nothing waits to be sent."""
    since = time.time()
    for mapping in ws_stack.mappings.values():
        await wait_until_async(
            lambda m=mapping: m.view().caught_up_since(since),  # type: ignore[misc]
            within=60,
            what=f"{mapping.name} caught up",
        )
    await wait_until_async(
        lambda: ws_stack.gateway.pending_bytes(connection_id)[0] == 0,
        within=30,
        what="the slow client's buffer empty",
    )


async def test_a_vanished_connection_is_removed_on_the_first_410(ws_stack: WsStack) -> None:
    names = ws_stack.resources.names
    connections = DynamoConnectionStore(ws_stack.dynamodb(), names.ws_connections_table)
    index = DynamoSubscriberIndex(
        ws_stack.dynamodb(),
        names.ws_subscribers_table,
        SubscriptionStore(ws_stack.dynamodb(), names.subscriptions_table),
    )
    infy = ws_stack.others["NSE:INFY"]
    before = _connection_ids(ws_stack)
    async with StreamClient(ws_stack.gateway.url, ws_stack.alice.id_token) as c:
        (vanished,) = _connection_ids(ws_stack) - before
        reply = await c.request(
            {"action": "subscribe", "instruments": ["NSE:INFY", "NSE:TCS"], "channels": ["ticks"]}
        )
        assert reply["total"] == 2
        assert connections.get(vanished) is not None
        # When API Gateway loses the connection without a $disconnect
        assert ws_stack.gateway.vanish(vanished)
        # Then the fan-out's first post answers 410 and the connection is removed with it
        await wait_until_async(
            lambda: (
                connections.get(vanished) is None
                and vanished not in index.lookup([infy], Channel.TICKS).get(infy, frozenset())
            ),
            within=60,
            what="the connection and its subscriptions removed",
        )
        # And later batches no longer post to it: one 410, ever
        await _fanout_runs(ws_stack, 3)
        assert ws_stack.gateway.stats.gone[vanished] == 1


async def test_two_users_never_see_each_others_subscriptions(ws_stack: WsStack) -> None:
    alice_seen, bob_seen = Seen(), Seen()
    infy, tcs = ws_stack.others["NSE:INFY"], ws_stack.others["NSE:TCS"]
    url = ws_stack.gateway.url
    async with (
        StreamClient(url, ws_stack.alice.id_token, on_data=alice_seen.add) as alice,
        StreamClient(url, ws_stack.bob.id_token, on_data=bob_seen.add) as bob,
    ):
        await alice.request({"action": "subscribe", "instruments": ["NSE:INFY"]})
        await bob.request({"action": "subscribe", "instruments": ["NSE:TCS"]})
        await wait_until_async(
            lambda: (
                infy in alice_seen.tokens[Channel.TICKS] and tcs in bob_seen.tokens[Channel.TICKS]
            ),
            what="both users' ticks",
        )
        # When bob unsubscribes from alice's instrument, and from everything
        assert (await bob.request({"action": "unsubscribe", "instruments": [infy]}))["total"] == 1
        assert (await bob.request({"action": "unsubscribe", "all": True}))["total"] == 0
        await _fanout_runs(ws_stack)
        alice_seen.clear()
        bob_seen.clear()
        await _fanout_runs(ws_stack)
        # Then alice still gets INFY and only INFY; bob got nothing of hers at any point
        assert alice_seen.tokens[Channel.TICKS] == {infy}
        assert bob_seen.tokens[Channel.TICKS] == set()


def test_the_management_endpoint_has_api_gateways_semantics(ws_stack: WsStack) -> None:
    management = boto3.client(
        "apigatewaymanagementapi",
        **{**ws_stack.aws.client_kwargs(), "endpoint_url": ws_stack.gateway.management_url},
        config=Config(retries={"total_max_attempts": 1}),
    )
    with pytest.raises(management.exceptions.GoneException):
        management.post_to_connection(ConnectionId="AAAAAAAAAAAAAAA=", Data=b"{}")
    with pytest.raises(management.exceptions.GoneException):
        management.get_connection(ConnectionId="AAAAAAAAAAAAAAA=")

    async def scenario() -> None:
        seen: list[dict[str, Any]] = []
        before = _connection_ids(ws_stack)
        async with StreamClient(ws_stack.gateway.url, ws_stack.alice.id_token) as c:
            (connection_id,) = _connection_ids(ws_stack) - before
            described = management.get_connection(ConnectionId=connection_id)
            assert described["Identity"]["SourceIp"] == "127.0.0.1"
            management.post_to_connection(ConnectionId=connection_id, Data=b'{"type":"hello"}')
            await wait_until_async(lambda: c.other, what="the posted message")
            seen.extend(c.other)
            management.delete_connection(ConnectionId=connection_id)
            await c.closed()
            with pytest.raises(management.exceptions.GoneException):
                management.post_to_connection(ConnectionId=connection_id, Data=b"{}")
        assert seen == [{"type": "hello"}]

    asyncio.run(scenario())


@pytest.fixture(autouse=True)
def _producer_healthy(ws_stack: WsStack) -> Iterator[None]:
    yield
    assert ws_stack.producer.errors == []


async def test_the_printed_command_shows_the_chain_live(ws_stack: WsStack, tmp_path: Path) -> None:
    # Given endpoints.json as make run writes it
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(
        json.dumps(
            {
                **websocket_endpoints(ws_stack.gateway),
                "users": [{"username": "alice", "id_token": ws_stack.alice.id_token}],
            }
        )
    )
    chain = f"{ws_stack.chain['underlying']}:{ws_stack.chain['expiry']}"
    args = parse_args(["--endpoints", str(endpoints), "--chain", chain, "--user", "alice",
                       "--every", "1", "--seconds", "4"])  # fmt: skip
    out = io.StringIO()
    # When the watcher runs for a few seconds
    assert await watch(args, out) == 0
    # Then it subscribed to the chain and printed it with prices, vols and deltas
    printed = out.getvalue()
    assert f"subscribed to {len(ws_stack.chain_tokens)} instruments" in printed
    last = printed.split("\n\n")[-1].splitlines()
    assert " ticks, " in last[0]
    assert "strike" in last[1]
    assert any("%" in row for row in last[2:])
