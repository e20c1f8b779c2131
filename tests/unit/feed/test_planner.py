"""The connection planner: balance, stickiness, incremental diffs, capacity."""

from __future__ import annotations

from feed_container.planner import AssignmentPlanner, SlotId
from ticker_core.kite_wire import MODE_PACKET_BYTES


def planner(
    accounts: tuple[str, ...] = ("a", "b"), per: int = 3, capacity: int = 10
) -> AssignmentPlanner:
    return AssignmentPlanner(accounts, connections_per_account=per, capacity=capacity)


def test_new_instruments_spread_over_every_slot_by_load() -> None:
    # Given six empty slots
    p = planner()
    # When 12 quote and 6 full instruments are wanted
    desired = dict.fromkeys(range(12), "quote") | {100 + t: "full" for t in range(6)}
    plan = p.plan(desired)
    # Then every slot gets one full and two quote instruments
    assert set(plan.diffs) == set(p.slots)
    for slot in p.slots:
        modes = sorted(p.assignment(slot).values())
        assert modes == ["full", "quote", "quote"]
        assert p.load(slot) == MODE_PACKET_BYTES["full"] + 2 * MODE_PACKET_BYTES["quote"]


def test_an_instrument_stays_on_its_connection_while_wanted() -> None:
    # Given an assignment
    p = planner()
    p.plan(dict.fromkeys(range(18), "ltp"))
    owners = {t: p.owner(t) for t in range(18)}
    # When some go, some come and one changes mode
    desired = dict.fromkeys(range(6, 18), "ltp") | {7: "full"} | {50: "quote", 51: "quote"}
    plan = p.plan(desired)
    # Then the rest did not move, and the diffs hold exactly the changes
    assert all(p.owner(t) == owners[t] for t in range(6, 18))
    assert sorted(t for d in plan.diffs.values() for t in d.unsubscribe) == list(range(6))
    assert {t: m for d in plan.diffs.values() for t, m in d.mode.items()} == {7: "full"}
    assert sorted(t for d in plan.diffs.values() for t in d.subscribe) == [50, 51]
    # And the same desired set again changes nothing
    assert p.plan(desired).diffs == {}


def test_what_does_not_fit_is_reported_and_placed_once_room_appears() -> None:
    # Given 2 slots of 3 instruments
    p = planner(("a",), per=2, capacity=3)
    # When 8 are wanted
    plan = p.plan(dict.fromkeys(range(8), "ltp"))
    # Then 6 are placed and 2 reported unassigned
    assert len(plan.unassigned) == 2
    assert sum(len(p.assignment(s)) for s in p.slots) == 6
    # And when two leave, the waiting two take their place
    left = {t: "ltp" for t in range(8) if t not in (0, 1)}
    plan = p.plan(left)
    assert plan.unassigned == {}
    assert {p.owner(t) for t in left} <= set(p.slots)


def test_slots_are_the_accounts_connections() -> None:
    p = planner(("x", "y", "x"), per=3)
    assert p.slots == tuple(SlotId(a, i) for a in ("x", "y") for i in range(3))
    assert str(SlotId("x", 2)) == "x#2"


def test_an_account_added_later_takes_what_did_not_fit_and_nothing_moves() -> None:
    # Given one account's 2 slots of 3, full, with 2 instruments waiting
    p = planner(("a",), per=2, capacity=3)
    desired = dict.fromkeys(range(8), "ltp")
    p.plan(desired)
    owners = {t: p.owner(t) for t in range(8) if p.owner(t) is not None}
    # When a second account is added (and an existing one again)
    assert p.add_accounts(["a", "b"]) == ("b",)
    plan = p.plan(desired)
    # Then the waiting two go to the new account's slots and nothing else moves
    assert plan.unassigned == {}
    assert {slot.account for slot in plan.diffs} == {"b"}
    assert sorted(t for d in plan.diffs.values() for t in d.subscribe) == sorted(
        set(range(8)) - set(owners)
    )
    assert all(p.owner(t) == slot for t, slot in owners.items())
    assert p.slots == tuple(SlotId(a, i) for a in ("a", "b") for i in range(2))
    # And adding known accounts changes nothing
    assert p.add_accounts(["b"]) == ()


def test_a_retired_accounts_instruments_go_to_the_other_accounts_and_nothing_else_moves() -> None:
    # Given instruments spread over two accounts' slots
    p = planner(("a", "b"), per=2, capacity=10)
    desired = dict.fromkeys(range(16), "quote") | {100: "full"}
    p.plan(desired)
    on_b = {t for slot in p.slots if slot.account == "b" for t in p.assignment(slot)}
    on_a = {t: p.owner(t) for slot in p.slots if slot.account == "a" for t in p.assignment(slot)}
    assert on_b
    # When account b is retired
    moved = p.remove_accounts(["b"])
    # Then its instruments are handed back, its slots are gone
    assert set(moved) == on_b
    assert all(slot.account == "a" for slot in p.slots)
    # And the next plan places exactly them on a's slots, leaving a's own where they were
    plan = p.plan(desired)
    assert sorted(t for d in plan.diffs.values() for t in d.subscribe) == sorted(on_b)
    assert all(not d.unsubscribe for d in plan.diffs.values())
    assert all(p.owner(t) == slot for t, slot in on_a.items())
    assert {t for slot in p.slots for t in p.assignment(slot)} == set(desired)


def test_retiring_beyond_the_room_left_reports_the_rest_unassigned() -> None:
    p = planner(("a", "b"), per=1, capacity=3)
    p.plan(dict.fromkeys(range(6), "ltp"))
    p.remove_accounts(["a"])
    plan = p.plan(dict.fromkeys(range(6), "ltp"))
    assert len(plan.unassigned) == 3
    assert p.remove_accounts(["nobody"]) == {}
