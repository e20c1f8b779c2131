"""What the WebSocket functions keep, and the stores they keep it in, as types (pure).

A :class:`Connection` is one client connection: who it is and what it
subscribes to (instrument token -> channels). The :class:`ConnectionStore`
holds connections (with a TTL: API Gateway ends every connection within two
hours, so an entry its ``$disconnect`` never removed expires) and each user's
connection ids (the per-user limit). The :class:`SubscriberIndex` holds the
same subscriptions the other way round, connection ids by instrument and
channel, for the fan-out's bulk lookup; it also keeps the instruments clients
subscribe in the feed's desired set, within a budget (see
:mod:`lambdas.ws.dal.subscribers`). The connection is the truth; the index
follows it, and an index entry left behind by a crash is removed the first
time the fan-out posts to its gone connection.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lambdas.ws.protocol import Channel

Subscriptions = Mapping[int, frozenset[Channel]]
"""instrument token -> the channels subscribed on it (never empty)."""


@dataclass(frozen=True)
class Identity:
    """The verified user behind a connection (from the authorizer's context)."""

    user_id: str
    """The Cognito ``sub``."""
    username: str


@dataclass(frozen=True)
class Connection:
    """One client connection and its subscriptions."""

    connection_id: str
    identity: Identity
    connected_at: float
    expires_at: float
    subscriptions: Subscriptions = field(default_factory=dict)
    version: int = 0
    """Bumped by every write: a lease and its commit are conditional on it."""


class ConnectionGoneError(Exception):
    """The connection is no longer registered (disconnected, expired or removed after a 410)."""


class BusyError(Exception):
    """Another invocation holds this connection's lease."""


class FeedBudgetExhaustedError(Exception):
    """Streaming the new instruments would pass the budget clients may add to the feed."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"{needed} instruments needed, {available} left in the budget")
        self.needed = needed
        self.available = available


class ConnectionStore(Protocol):
    """Connections and the per-user connection sets."""

    def open(self, connection: Connection, *, max_per_user: int, now: float) -> bool:
        """Register ``connection``; False (nothing kept) when its user is at ``max_per_user``.

        Connections of the user that have expired or are gone without a
        ``$disconnect`` do not count.
        """
        ...

    def take_message_slot(self, connection_id: str, *, per_second: int, now: float) -> bool:
        """Count one client message; False when the connection is over ``per_second``."""
        ...

    def lease(self, connection_id: str, *, now: float, seconds: float) -> Connection:
        """The connection, leased for ``seconds``: :class:`BusyError` if leased by another."""
        ...

    def commit(self, connection: Connection) -> None:
        """Write ``connection``'s subscriptions and end its lease.

        ``connection.version`` is the leased version; :class:`ConnectionGoneError`
        if the connection was removed meanwhile.
        """
        ...

    def release(self, connection: Connection) -> None:
        """End the lease without a change (best effort: it also expires)."""
        ...

    def close(self, connection_id: str) -> Connection | None:
        """Remove the connection (and it from its user's set); what was removed, if anything."""
        ...


class SubscriberIndex(Protocol):
    """Connection ids by instrument and channel; keeps the feed's desired set in step."""

    def join(self, connection_id: str, additions: Subscriptions, *, budget: int) -> None:
        """Add the connection as a subscriber of ``additions``.

        Instruments no client subscribed before join the feed's desired set,
        as long as the instruments clients added stay within ``budget``;
        otherwise :class:`FeedBudgetExhaustedError` and nothing of ``additions``
        is kept.
        """
        ...

    def leave(self, connection_id: str, removals: Subscriptions) -> None:
        """Remove the connection as a subscriber of ``removals`` (absent entries are fine).

        An instrument whose last subscriber left leaves the feed's desired set.
        """
        ...

    def lookup(self, tokens: Collection[int], channel: Channel) -> dict[int, frozenset[str]]:
        """The connection ids subscribed to each of ``tokens`` on ``channel`` (bulk)."""
        ...
