"""A feed container under test: the simulator, moto's server, a Kinesis fault proxy.

Every scenario follows one shape: subscribe instruments in the DynamoDB
store, start the service (in this process, on this loop, over real sockets),
let ticks flow, inject a fault, let it recover, stop the service the way
SIGTERM does, then compare what the simulator says it sent with the user
records found in Kinesis after de-aggregation.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from feed_container.service import Dependencies, FeedService
from feed_container.settings import FeedSettings
from kite_sim.server import Simulator
from sandbox.kinesis_proxy import KinesisFaultProxy
from sandbox.moto_server import AwsEndpoint
from tests.waiting import wait_until_async as wait_until  # the feed tests' name for it
from ticker_adapters.credentials import CredentialVault, KiteSession, next_token_expiry
from ticker_adapters.envelope import KmsEnvelopeCipher
from ticker_adapters.subscription_store import SubscriptionStore
from ticker_core.records import deaggregate

STREAM = "ticks"
TABLE = "subscriptions"


@dataclass
class RunningFeed:
    """A service running in a task; ``stop()`` is what SIGTERM does."""

    service: FeedService
    task: asyncio.Task[bool]
    stop_event: asyncio.Event

    def total(self, name: str) -> float:
        return self.service.metrics.total(name)

    def value(self, name: str, **labels: str) -> float:
        return self.service.metrics.value(name, **labels)

    def connected(self, account: str | None = None) -> int:
        pool = self.service.pool
        if pool is None:
            return 0
        return sum(c.connected for c in pool.connections.values() if account in (None, c.account))

    async def reaches(self, name: str, count: float, **labels: str) -> None:
        """Wait until a metric (summed over labels unless given) reaches ``count``."""

        def now() -> float:
            return self.value(name, **labels) if labels else self.total(name)

        await wait_until(now, lambda value: value >= count, what=f"{name}{labels} >= {count}")

    async def grows(self, name: str, by: float, **labels: str) -> None:
        """Wait until a metric grows by ``by`` from now."""
        start = self.value(name, **labels) if labels else self.total(name)
        await self.reaches(name, start + by, **labels)

    async def stop(self) -> bool:
        self.stop_event.set()
        return await asyncio.wait_for(self.task, 60)


@dataclass
class Rig:
    """Everything one scenario needs; built by the ``rig`` fixture."""

    sim: Simulator
    aws: AwsEndpoint
    proxy: KinesisFaultProxy
    spill_dir: Path
    kms_key: str = ""
    accounts: tuple[str, ...] = ()
    running: list[RunningFeed] = field(default_factory=list)

    def client(self, service: str, **kwargs: Any) -> Any:
        return boto3.client(service, **{**self.aws.client_kwargs(), **kwargs})

    def setup_aws(self) -> None:
        kms = self.client("kms")
        self.kms_key = kms.create_key(Description="feed tests")["KeyMetadata"]["Arn"]
        self.client("kinesis").create_stream(StreamName=STREAM, ShardCount=2)
        self.store().create_table()
        vault = self.vault()
        names = []
        for n, account in enumerate(self.sim.accounts):
            name = f"acct{n}"
            self.put_session(vault, name, account.api_key, self.sim.issue_access_token(n))
            names.append(name)
        self.accounts = tuple(names)

    def store(self) -> SubscriptionStore:
        return SubscriptionStore(self.client("dynamodb"), TABLE)

    def vault(self) -> CredentialVault:
        cipher = KmsEnvelopeCipher(self.client("kms"), self.kms_key)
        return CredentialVault(self.client("secretsmanager"), cipher, cache_seconds=60)

    @staticmethod
    def put_session(vault: CredentialVault, account: str, api_key: str, token: str) -> None:
        issued = datetime.now(UTC)
        vault.put_session(
            account, KiteSession(api_key, token, account.upper(), issued, next_token_expiry(issued))
        )

    def settings(self, **overrides: Any) -> FeedSettings:
        values: dict[str, Any] = {
            "accounts": self.accounts,
            "kite_ws_url": self.sim.ws_url,
            "kite_rest_url": self.sim.rest_url,
            "kms_key_id": self.kms_key,
            "subscriptions_table": TABLE,
            "stream_name": STREAM,
            "watchdog_seconds": 1.5,
            "connect_timeout_seconds": 3.0,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.5,
            "rate_limited_delay_seconds": 0.3,
            "subscription_poll_seconds": 0.2,
            "atm_recentre_seconds": 0.2,
            "linger_ms": 50.0,
            "sender_lanes": 2,
            "put_timeout_seconds": 5.0,
            "retry_initial_seconds": 0.02,
            "retry_max_seconds": 0.2,
            "breaker_failures": 3,
            "breaker_open_seconds": 0.2,
            "breaker_max_open_seconds": 1.0,
            "spill_dir": self.spill_dir,
            "health_host": "127.0.0.1",
            "health_port": 0,
            "stop_timeout_seconds": 15.0,
            "emf_interval_seconds": 0,
        }
        values.update(overrides)
        return FeedSettings(**values)

    def start(self, settings: FeedSettings | None = None, *, via_proxy: bool = True) -> RunningFeed:
        settings = settings or self.settings()
        endpoint = self.proxy.url if via_proxy else self.aws.url
        service = FeedService(settings, Dependencies(kinesis_endpoint_url=endpoint))
        stop = asyncio.Event()
        running = RunningFeed(
            service, asyncio.get_running_loop().create_task(service.run(stop)), stop
        )
        self.running.append(running)
        return running

    # -- what happened ---------------------------------------------------------------------

    def sim_sent(self) -> Counter[int]:
        """Packets the simulator wrote to sockets, per instrument token."""
        per = self.sim.hub.counters()["per_instrument"]
        return Counter({int(t): n for t, n in per.items()})

    def kinesis_ticks(self) -> list[dict[str, Any]]:
        """Every user record on the stream, de-aggregated and parsed, in shard order."""
        kinesis = self.client("kinesis")
        out = []
        for shard in kinesis.list_shards(StreamName=STREAM)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                for record in page["Records"]:
                    for user in deaggregate(record["Data"], record["PartitionKey"]):
                        tick = json.loads(user.data)
                        assert user.partition_key == tick["underlying"]
                        out.append(tick)
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
        return out

    def assert_exactly_once(
        self, tokens: set[int] | None = None, *, context: str = ""
    ) -> Counter[int]:
        """Ticks sent == user records in Kinesis, per token, and no record twice.

        ``context`` (e.g. the container's final log line) is added to a failure.
        """
        ticks = self.kinesis_ticks()
        identity = Counter((t["account"], t["instrument_token"], t["received_at"]) for t in ticks)
        duplicates = [k for k, n in identity.items() if n > 1]
        assert not duplicates, f"{len(duplicates)} duplicated ticks, e.g. {duplicates[:3]}"
        found = Counter(t["instrument_token"] for t in ticks)
        sent = self.sim_sent()
        if tokens is not None:
            sent = Counter({t: n for t, n in sent.items() if t in tokens})
        assert sum(sent.values()) > 0
        assert found == sent, _difference(sent, found) + (f"; {context}" if context else "")
        return found


SAMPLE_MODES = ("ltp", "quote", "full")


def subscribe_sample(rig: Rig, count: int = 60) -> set[int]:
    """``count`` instruments of the simulator's universe, modes mixed."""
    store = rig.store()
    tokens = [i.instrument_token for i in rig.sim.universe.instruments[:count]]
    for n, token in enumerate(tokens):
        store.subscribe(token, SAMPLE_MODES[n % 3], "tests")
    return set(tokens)


def _difference(sent: Counter[int], found: Counter[int]) -> str:
    missing = sent - found
    extra = found - sent
    return (
        f"sent {sum(sent.values())}, found {sum(found.values())}; "
        f"missing {sum(missing.values())} {dict(list(missing.items())[:5])}, "
        f"extra {sum(extra.values())} {dict(list(extra.items())[:5])}"
    )


def fresh_token() -> str:
    """A stand-in value for an access token the simulator never issued."""
    return secrets.token_hex(16)
