"""An execution environment's memory of grants: what it saves, and the bound on revocation."""

from __future__ import annotations

from typing import cast

from lambdas.api.dal.grants import CachedGrants, DynamoGrantStore
from lambdas.api.models import Grant


class CountingStore:
    """The grants table in memory, counting reads of one grant."""

    def __init__(self) -> None:
        self.roles: dict[tuple[str, str], str] = {}
        self.reads = 0

    def role(self, user_id: str, account_id: str) -> str | None:
        self.reads += 1
        return self.roles.get((user_id, account_id))

    def put(self, user_id: str, account_id: str, role: str, granted_by: str) -> Grant:
        self.roles[user_id, account_id] = role
        return Grant(user_id=user_id, account_id=account_id, role=role)  # type: ignore[arg-type]

    def delete(self, user_id: str, account_id: str) -> bool:
        return self.roles.pop((user_id, account_id), None) is not None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cached(ttl: float = 10.0) -> tuple[CachedGrants, CountingStore, Clock]:
    store, clock = CountingStore(), Clock()
    grants = CachedGrants(cast(DynamoGrantStore, store), ttl_seconds=ttl, clock=clock)
    return grants, store, clock


def test_a_role_is_read_once_per_ttl() -> None:
    grants, store, clock = cached()
    store.roles["u1", "AB1"] = "trade"
    assert [grants.role("u1", "AB1") for _ in range(3)] == ["trade"] * 3
    assert store.reads == 1
    clock.now += 10.0
    assert grants.role("u1", "AB1") == "trade"
    assert store.reads == 2


def test_a_revocation_elsewhere_is_honoured_within_the_ttl() -> None:
    # Given an environment that read a trade grant
    grants, store, clock = cached(ttl=10.0)
    store.roles["u1", "AB1"] = "trade"
    grants.role("u1", "AB1")
    # When another environment withdraws it, Then this one honours it at most the TTL longer
    del store.roles["u1", "AB1"]
    clock.now += 9.9
    assert grants.role("u1", "AB1") == "trade"
    clock.now += 0.1
    assert grants.role("u1", "AB1") is None


def test_a_change_made_here_takes_effect_here_at_once() -> None:
    grants, _, _ = cached()
    grants.put("u1", "AB1", "trade", "admin")
    assert grants.role("u1", "AB1") == "trade"
    grants.put("u1", "AB1", "view", "admin")
    assert grants.role("u1", "AB1") == "view"
    grants.delete("u1", "AB1")
    assert grants.role("u1", "AB1") is None


def test_a_missing_grant_is_never_remembered() -> None:
    # Given a user without a grant, refused once
    grants, store, _ = cached()
    assert grants.role("u1", "AB1") is None
    # When it is granted through another environment, Then the next request sees it
    store.roles["u1", "AB1"] = "view"
    assert grants.role("u1", "AB1") == "view"


def test_a_zero_ttl_reads_every_time() -> None:
    grants, store, _ = cached(ttl=0)
    store.roles["u1", "AB1"] = "trade"
    for _ in range(3):
        grants.role("u1", "AB1")
    assert store.reads == 3
