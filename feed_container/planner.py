"""Which connection carries which instrument: a pure, incremental planner.

Kite allows each API key a few connections (3) of a few thousand instruments
(3000). The planner holds the current assignment of instruments (with their
modes) to connection *slots* (account, index) and, given the new desired set,
returns per-slot diffs:

* an instrument stays on the slot that has it for as long as it is desired
  (moving it would open a gap or a duplicate while both connections change);
* a mode change is applied on that same slot;
* a new instrument goes to the slot with the least load that has room, where
  load is the bytes per tick of the modes it carries (8 ltp, 44 quote, 184 full),
  so full-mode instruments spread as evenly as plain ones; heaviest first;
* nothing is rebalanced behind the caller's back, and nothing is ever
  reloaded: the diffs are exactly what changed.

Instruments that do not fit anywhere are reported in ``Plan.unassigned``
(and retried on the next plan), never silently dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ticker_core.kite_wire import MODE_PACKET_BYTES


@dataclass(frozen=True, order=True)
class SlotId:
    """One connection slot: the ``index``-th connection of ``account``."""

    account: str
    index: int

    def __str__(self) -> str:
        return f"{self.account}#{self.index}"


@dataclass
class SlotDiff:
    """What one connection must change: Kite messages to send, in this order."""

    unsubscribe: list[int] = field(default_factory=list)
    subscribe: dict[int, str] = field(default_factory=dict)
    mode: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.unsubscribe or self.subscribe or self.mode)


@dataclass
class Plan:
    """The diffs of one planning round."""

    diffs: dict[SlotId, SlotDiff] = field(default_factory=dict)
    unassigned: dict[int, str] = field(default_factory=dict)

    def diff(self, slot: SlotId) -> SlotDiff:
        """The diff of ``slot``, created empty on first use."""
        return self.diffs.setdefault(slot, SlotDiff())


class AssignmentPlanner:
    """Current assignment plus the rules above. Not thread-safe; owned by the pool."""

    def __init__(
        self, accounts: Iterable[str], *, connections_per_account: int, capacity: int
    ) -> None:
        if connections_per_account < 1 or capacity < 1:
            raise ValueError("connections_per_account and capacity must be >= 1")
        self._capacity = capacity
        self._connections_per_account = connections_per_account
        self._slots: dict[SlotId, dict[int, str]] = {}
        self._order: dict[SlotId, int] = {}
        self._load: dict[SlotId, int] = {}
        self._owner: dict[int, SlotId] = {}
        self.add_accounts(accounts)

    def add_accounts(self, accounts: Iterable[str]) -> tuple[str, ...]:
        """Give each new account its empty slots; returns the accounts that were new.

        Nothing already assigned moves: the new slots take new instruments (and
        those no slot had room for) at the next :meth:`plan`.
        """
        added = tuple(a for a in dict.fromkeys(accounts) if SlotId(a, 0) not in self._slots)
        for account in added:
            for i in range(self._connections_per_account):
                slot = SlotId(account, i)
                self._slots[slot] = {}
                self._load[slot] = 0
        self._order = {slot: n for n, slot in enumerate(sorted(self._slots))}
        return added

    def remove_accounts(self, accounts: Iterable[str]) -> dict[int, str]:
        """Drop accounts' slots; returns what they carried (token -> mode).

        The returned instruments belong to no slot any more: the next
        :meth:`plan` places them on the remaining slots as new ones.
        """
        gone = set(accounts)
        orphans: dict[int, str] = {}
        for slot in [s for s in self._slots if s.account in gone]:
            for token, mode in self._slots.pop(slot).items():
                orphans[token] = mode
                del self._owner[token]
            del self._load[slot]
        self._order = {slot: n for n, slot in enumerate(sorted(self._slots))}
        return orphans

    @property
    def slots(self) -> tuple[SlotId, ...]:
        """Every slot, sorted."""
        return tuple(sorted(self._slots))

    def assignment(self, slot: SlotId) -> dict[int, str]:
        """A copy of what ``slot`` carries: token -> mode."""
        return dict(self._slots[slot])

    def owner(self, token: int) -> SlotId | None:
        """The slot carrying ``token``."""
        return self._owner.get(token)

    def load(self, slot: SlotId) -> int:
        """The slot's load in bytes per tick round."""
        return self._load[slot]

    def plan(self, desired: Mapping[int, str]) -> Plan:
        """Move the assignment to ``desired`` (token -> mode); return what changed."""
        plan = Plan()
        for token, slot in list(self._owner.items()):
            if token not in desired:
                self._remove(token, slot)
                plan.diff(slot).unsubscribe.append(token)
        new: list[tuple[int, str]] = []
        for token, mode in desired.items():
            if mode not in MODE_PACKET_BYTES:
                raise ValueError(f"unknown mode {mode!r} for {token}")
            owner = self._owner.get(token)
            if owner is None:
                new.append((token, mode))
            elif self._slots[owner][token] != mode:
                self._load[owner] += (
                    MODE_PACKET_BYTES[mode] - MODE_PACKET_BYTES[self._slots[owner][token]]
                )
                self._slots[owner][token] = mode
                plan.diff(owner).mode[token] = mode
        if new:
            self._place(new, plan)
        plan.diffs = {slot: d for slot, d in plan.diffs.items() if d}
        return plan

    def _remove(self, token: int, slot: SlotId) -> None:
        mode = self._slots[slot].pop(token)
        self._load[slot] -= MODE_PACKET_BYTES[mode]
        del self._owner[token]

    def _place(self, new: list[tuple[int, str]], plan: Plan) -> None:
        # Heaviest first (longest-processing-time rule), then by token for determinism.
        new.sort(key=lambda item: (-MODE_PACKET_BYTES[item[1]], item[0]))
        heap = [
            (self._load[s], len(tokens), self._order[s], s)
            for s, tokens in self._slots.items()
            if len(tokens) < self._capacity
        ]
        heapq.heapify(heap)
        for token, mode in new:
            if not heap:
                plan.unassigned[token] = mode
                continue
            _, _, order, slot = heapq.heappop(heap)
            self._slots[slot][token] = mode
            self._load[slot] += MODE_PACKET_BYTES[mode]
            self._owner[token] = slot
            plan.diff(slot).subscribe[token] = mode
            count = len(self._slots[slot])
            if count < self._capacity:
                heapq.heappush(heap, (self._load[slot], count, order, slot))
