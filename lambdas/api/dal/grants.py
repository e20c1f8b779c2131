"""Grants in DynamoDB: which user may see or trade which account.

One item per (user, account): ``pk = USER#<sub>``, ``sk = ACCOUNT#<account_id>``,
with the role (``trade`` or ``view``), who granted it and when. A user's
grants are one query; checking one is one read, which :class:`CachedGrants`
saves on a user's next requests to the same execution environment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lambdas.api.models import Grant
from ticker_adapters.aws import create_table

USER_PREFIX = "USER#"
ACCOUNT_PREFIX = "ACCOUNT#"


def _key(user_id: str, account_id: str) -> dict[str, Any]:
    return {"pk": {"S": USER_PREFIX + user_id}, "sk": {"S": ACCOUNT_PREFIX + account_id}}


def _grant(item: dict[str, Any]) -> Grant:
    return Grant(
        user_id=item["pk"]["S"][len(USER_PREFIX) :],
        account_id=item["sk"]["S"][len(ACCOUNT_PREFIX) :],
        role=item["role"]["S"],
    )


class DynamoGrantStore:
    """Read and write grants."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def create_table(self) -> None:
        """Create the table (tests and the sandbox; CDK owns it in AWS)."""
        create_table(self._db, self._table, sort_key="sk")

    def role(self, user_id: str, account_id: str) -> str | None:
        """The user's role on the account, or None."""
        item = self._db.get_item(TableName=self._table, Key=_key(user_id, account_id)).get("Item")
        return str(item["role"]["S"]) if item else None

    def put(self, user_id: str, account_id: str, role: str, granted_by: str) -> Grant:
        """Grant (or change) a role."""
        item = {
            **_key(user_id, account_id),
            "role": {"S": role},
            "granted_by": {"S": granted_by},
            "granted_at": {"S": datetime.now(UTC).isoformat()},
        }
        self._db.put_item(TableName=self._table, Item=item)
        return _grant(item)

    def delete(self, user_id: str, account_id: str) -> bool:
        """Withdraw a grant; whether there was one."""
        response = self._db.delete_item(
            TableName=self._table, Key=_key(user_id, account_id), ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    def for_user(self, user_id: str) -> list[Grant]:
        """Every grant of one user."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": USER_PREFIX + user_id}},
        )
        return [_grant(item) for page in pages for item in page["Items"]]

    def all(self) -> list[Grant]:
        """Every grant (administrators; the table is small)."""
        paginator = self._db.get_paginator("scan")
        grants = [
            _grant(item)
            for page in paginator.paginate(TableName=self._table)
            for item in page["Items"]
        ]
        return sorted(grants, key=lambda g: (g.user_id, g.account_id))


class CachedGrants:
    """The grant store, with each role found kept for ``ttl_seconds`` in this environment.

    An order's path reads the caller's grant on every request; a trader's next
    requests to the same execution environment reuse what the first read
    found. The bound this puts on a revocation: a grant deleted or lowered
    through another environment is still honoured here for at most
    ``ttl_seconds`` after it was read (``API_GRANTS_CACHE_SECONDS``); a change
    made through this environment takes effect here at once. A missing grant
    is never kept, so a new grant works on the next request everywhere.
    Thread-safe.
    """

    def __init__(
        self,
        store: DynamoGrantStore,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock
        self._roles: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def role(self, user_id: str, account_id: str) -> str | None:
        """The user's role on the account, or None (a role read within the TTL is reused)."""
        key = (user_id, account_id)
        now = self._clock()
        with self._lock:
            kept = self._roles.get(key)
        if kept is not None and now - kept[0] < self._ttl:
            return kept[1]
        role = self._store.role(user_id, account_id)
        with self._lock:
            if role is None:
                self._roles.pop(key, None)
            elif self._ttl > 0:
                self._roles[key] = (now, role)
        return role

    def put(self, user_id: str, account_id: str, role: str, granted_by: str) -> Grant:
        """Grant (or change) a role; this environment forgets what it kept."""
        grant = self._store.put(user_id, account_id, role, granted_by)
        self._forget(user_id, account_id)
        return grant

    def delete(self, user_id: str, account_id: str) -> bool:
        """Withdraw a grant; this environment forgets what it kept."""
        deleted = self._store.delete(user_id, account_id)
        self._forget(user_id, account_id)
        return deleted

    def for_user(self, user_id: str) -> list[Grant]:
        """Every grant of one user (always read)."""
        return self._store.for_user(user_id)

    def all(self) -> list[Grant]:
        """Every grant (always read)."""
        return self._store.all()

    def _forget(self, user_id: str, account_id: str) -> None:
        with self._lock:
            self._roles.pop((user_id, account_id), None)
