"""In-memory stand-ins for the WebSocket functions' stores and the management API (no sockets)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import date

from lambdas.ws.dal.management import PostOutcome
from lambdas.ws.protocol import Channel
from lambdas.ws.state import (
    BusyError,
    Connection,
    ConnectionGoneError,
    FeedBudgetExhaustedError,
    Subscriptions,
)
from testkit.factories import chain, index_instrument
from tests.unit.lambdas.api.fakes import equity
from ticker_core.instruments import InstrumentRegistry

EXPIRY = date(2026, 12, 31)
STRIKES = [23800.0, 23900.0, 24000.0, 24100.0, 24200.0]


def registry() -> InstrumentRegistry:
    """NIFTY (index, a future and a five-strike chain), INFY and TCS."""
    return InstrumentRegistry(
        [
            index_instrument("NIFTY 50", 256),
            *chain("NIFTY", EXPIRY, STRIKES, first_exchange_token=40_000, future=True),
            equity("INFY", 408),
            equity("TCS", 2953),
        ]
    )


class FakeConnections:
    """:class:`lambdas.ws.state.ConnectionStore` in a dict."""

    def __init__(self) -> None:
        self.items: dict[str, Connection] = {}
        self.users: dict[str, set[str]] = {}
        self.leases: dict[str, float] = {}
        self.rate: dict[str, tuple[int, int]] = {}
        self.commits = 0

    def open(self, connection: Connection, *, max_per_user: int, now: float) -> bool:
        mine = self.users.setdefault(connection.identity.user_id, set())
        mine -= {c for c in mine if c not in self.items or self.items[c].expires_at <= now}
        if len(mine) >= max_per_user:
            return False
        mine.add(connection.connection_id)
        self.items[connection.connection_id] = connection
        return True

    def take_message_slot(self, connection_id: str, *, per_second: int, now: float) -> bool:
        if connection_id not in self.items:
            raise ConnectionGoneError(connection_id)
        second, count = self.rate.get(connection_id, (-1, 0))
        if second != int(now):
            second, count = int(now), 0
        if count >= per_second:
            return False
        self.rate[connection_id] = (second, count + 1)
        return True

    def lease(self, connection_id: str, *, now: float, seconds: float) -> Connection:
        connection = self.items.get(connection_id)
        if connection is None:
            raise ConnectionGoneError(connection_id)
        if self.leases.get(connection_id, 0.0) > now:
            raise BusyError(connection_id)
        self.leases[connection_id] = now + seconds
        leased = replace(connection, version=connection.version + 1)
        self.items[connection_id] = leased
        return leased

    def commit(self, connection: Connection) -> None:
        current = self.items.get(connection.connection_id)
        if current is None:
            raise ConnectionGoneError(connection.connection_id)
        if current.version != connection.version:
            raise BusyError(connection.connection_id)
        self.items[connection.connection_id] = replace(connection, version=connection.version + 1)
        self.leases.pop(connection.connection_id, None)
        self.commits += 1

    def release(self, connection: Connection) -> None:
        self.leases.pop(connection.connection_id, None)

    def close(self, connection_id: str) -> Connection | None:
        removed = self.items.pop(connection_id, None)
        if removed is not None:
            self.users.get(removed.identity.user_id, set()).discard(connection_id)
        return removed


@dataclass
class FakeIndex:
    """:class:`lambdas.ws.state.SubscriberIndex` in dicts, holding instruments like the real one."""

    members: dict[int, dict[Channel, set[str]]] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)
    fail_join_after: int | None = None
    """Raise after this many instruments joined (a store failure mid-way)."""

    def join(self, connection_id: str, additions: Subscriptions, *, budget: int) -> None:
        for done, (token, channels) in enumerate(sorted(additions.items())):
            if self.fail_join_after is not None and done >= self.fail_join_after:
                raise RuntimeError("store unavailable")
            for channel in channels:
                self.members.setdefault(token, {}).setdefault(channel, set()).add(connection_id)
        missing = [t for t in additions if t not in self.held]
        if len(self.held) + len(missing) > budget:
            self.leave(connection_id, additions)
            raise FeedBudgetExhaustedError(len(missing), budget - len(self.held))
        self.held |= set(missing)

    def leave(self, connection_id: str, removals: Subscriptions) -> None:
        for token, channels in removals.items():
            for channel in channels:
                self.members.get(token, {}).get(channel, set()).discard(connection_id)
            if not any(self.members.get(token, {}).values()):
                self.members.pop(token, None)
                self.held.discard(token)

    def lookup(self, tokens: Collection[int], channel: Channel) -> dict[int, frozenset[str]]:
        out = {}
        for token in tokens:
            subscribers = self.members.get(token, {}).get(channel)
            if subscribers:
                out[token] = frozenset(subscribers)
        return out

    def subscribed(self, connection_id: str) -> dict[int, frozenset[Channel]]:
        """What the index says one connection subscribes to."""
        out: dict[int, frozenset[Channel]] = {}
        for token, channels in self.members.items():
            mine = frozenset(c for c, ids in channels.items() if connection_id in ids)
            if mine:
                out[token] = mine
        return out


@dataclass
class FakePoster:
    """The management API: records posts; answers from a per-connection script."""

    posts: list[tuple[str, bytes]] = field(default_factory=list)
    script: dict[str, list[PostOutcome]] = field(default_factory=dict)
    """Outcomes to answer, in order, per connection (then DELIVERED)."""
    gone: set[str] = field(default_factory=set)

    def post(self, connection_id: str, data: bytes) -> PostOutcome:
        if connection_id in self.gone:
            return PostOutcome.GONE
        queued = self.script.get(connection_id)
        outcome = queued.pop(0) if queued else PostOutcome.DELIVERED
        if outcome is PostOutcome.DELIVERED:
            self.posts.append((connection_id, data))
        return outcome
