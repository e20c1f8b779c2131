"""The connection pool: many accounts, each up to 3 connections x 3000 instruments.

The pure :class:`~feed_container.planner.AssignmentPlanner` decides which
connection carries which instrument; the pool turns its diffs into
connection updates, creating a connection the first time its slot gets an
instrument. Connections are never torn down for a subscription change: an
emptied connection simply carries nothing (Kite keeps it open with
heartbeats) until instruments come back. They are closed when their
account is retired (:meth:`FeedPool.remove_accounts`), after their
instruments are subscribed on the other accounts' connections.

With ``every_account`` (the feed forwards Kite's order messages), each
account's first slot's connection stays open even while it carries no
instrument: Kite sends an account's order updates only to that
account's connections, and an account nobody subscribed through would
otherwise have none, so its updates would reach the store by postback alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from feed_container.connection import KiteConnection
from feed_container.metrics import Labels, Metrics
from feed_container.planner import AssignmentPlanner, Plan, SlotId

log = logging.getLogger("feed_container.pool")


class FeedPool:
    """Owns the connections; apply desired sets to it as often as they change."""

    def __init__(
        self,
        planner: AssignmentPlanner,
        make_connection: Callable[[SlotId], KiteConnection],
        metrics: Metrics,
        *,
        every_account: bool = False,
    ) -> None:
        self._planner = planner
        self._every_account = every_account
        self._make = make_connection
        self._metrics = metrics
        self.connections: dict[SlotId, KiteConnection] = {}
        self._unassigned = 0
        self._unassigned_tokens: tuple[int, ...] = ()
        self._desired: Mapping[int, str] = {}
        metrics.gauge_callback("feed_connections_open", self._open_by_account)
        metrics.gauge_callback("feed_unassigned_instruments", lambda: {(): float(self._unassigned)})
        metrics.gauge_callback(
            "feed_subscribed_instruments",
            lambda: {(): float(sum(len(c.desired) for c in self.connections.values()))},
        )

    def _open_by_account(self) -> dict[Labels, float]:
        out: dict[Labels, float] = {}
        for conn in self.connections.values():
            key = (("account", conn.account),)
            out[key] = out.get(key, 0.0) + (1.0 if conn.connected else 0.0)
        return out

    def apply(self, desired: Mapping[int, str]) -> Plan:
        """Move every connection toward ``desired`` (token -> mode) with incremental messages."""
        self._desired = desired
        plan = self._planner.plan(desired)
        for slot, diff in plan.diffs.items():
            conn = self.connections.get(slot)
            if conn is None:
                conn = self.connections[slot] = self._make(slot)
                conn.start()
            conn.update(diff)
        if self._every_account:
            self._open_one_per_account()
        if plan.unassigned and len(plan.unassigned) != self._unassigned:
            log.error(
                "instruments without a connection: every slot is full",
                extra={"unassigned": len(plan.unassigned)},
            )
        self._unassigned = len(plan.unassigned)
        self._unassigned_tokens = tuple(sorted(plan.unassigned))
        return plan

    def _open_one_per_account(self) -> None:
        """Hold every account's first slot's connection open (see the module docstring)."""
        held: set[str] = set()
        for slot in self._planner.slots:  # sorted: an account's first slot comes first
            if slot.account in held:
                continue
            held.add(slot.account)
            conn = self.connections.get(slot)
            if conn is None:
                conn = self.connections[slot] = self._make(slot)
                conn.start()
            conn.hold_open()

    def add_accounts(self, accounts: Iterable[str]) -> tuple[str, ...]:
        """Add accounts' slots and re-apply the last desired set; returns those that were new.

        Instruments no slot had room for are placed on the new slots now, not at
        the next change of the desired set.
        """
        added = self._planner.add_accounts(accounts)
        if added:
            self.apply(self._desired)
        return added

    async def remove_accounts(self, accounts: Iterable[str]) -> dict[int, str]:
        """Drop accounts' connections, their instruments moved onto the other accounts' slots.

        The instruments are subscribed on their new connections first and the
        old connections closed after (a close still reads the frames already on
        the way): no instrument goes unstreamed in between, and nothing
        received is lost. Returns what moved (token -> mode); what finds no
        room is reported unassigned, as always.
        """
        gone = set(accounts)
        moved = self._planner.remove_accounts(gone)
        leaving = [c for slot, c in self.connections.items() if slot.account in gone]
        self.connections = {s: c for s, c in self.connections.items() if s.account not in gone}
        self.apply(self._desired)
        await asyncio.gather(*(c.stop() for c in leaving))
        return moved

    @property
    def desired_count(self) -> int:
        """Instruments of the last desired set applied."""
        return len(self._desired)

    @property
    def unassigned(self) -> tuple[int, ...]:
        """Instruments of the last plan no slot had room for."""
        return self._unassigned_tokens

    def slot_states(self) -> list[tuple[SlotId, bool, int]]:
        """Every slot the planner holds: (slot, its connection is open, instruments it carries)."""
        out = []
        for slot in self._planner.slots:
            conn = self.connections.get(slot)
            connected = conn is not None and conn.connected
            out.append((slot, connected, len(self._planner.assignment(slot))))
        return out

    @property
    def open_connections(self) -> int:
        """Connections streaming now."""
        return sum(1 for c in self.connections.values() if c.connected)

    async def stop(self) -> None:
        """Stop reading on every connection, concurrently."""
        await asyncio.gather(*(c.stop() for c in self.connections.values()))
