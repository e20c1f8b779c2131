"""A per-account order rate limiter shared by every concurrent invocation (DynamoDB).

Kite accepts at most 10 order requests a second per API key and answers
429 past that. Lambda runs many environments at once, so the count must
live outside them: one item per account holds the times of its last
``limit`` order requests, and taking a slot is a conditional write on the
item's version (optimistic concurrency: a racing writer makes the write
fail and the taker re-reads). A slot is free when fewer than ``limit``
requests fall in the last ``window`` seconds, a sliding window, so no
second anywhere holds more than ``limit`` requests however a burst falls.
``window`` carries a small margin over one second for the variance between
taking a slot here and the request reaching Kite.

When no slot is free the taker waits (until the oldest request leaves the
window), up to ``max_wait`` seconds in all, then raises
:class:`~lambdas.api.errors.OrderRateLimitedError` with ``Retry-After``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from lambdas.api.errors import OrderRateLimitedError

MICROS = 1_000_000
KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}]
ATTRIBUTES = [{"AttributeName": "pk", "AttributeType": "S"}]


class DynamoOrderLimiter:
    """Sliding-window slots per account."""

    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        *,
        limit: int = 10,
        window_seconds: float = 1.1,
        max_wait_seconds: float = 3.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if limit < 1 or window_seconds <= 0 or max_wait_seconds < 0:
            raise ValueError("limit >= 1, window > 0 and max_wait >= 0 are required")
        self._db = dynamodb
        self._table = table_name
        self.limit = limit
        self.window = window_seconds
        self.max_wait = max_wait_seconds
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.conflicts = 0
        """Writes that lost a race and re-read (for metrics)."""

    def create_table(self) -> None:
        """Create the table (tests and the sandbox; CDK owns it in AWS)."""
        self._db.create_table(
            TableName=self._table,
            KeySchema=KEY_SCHEMA,
            AttributeDefinitions=ATTRIBUTES,
            BillingMode="PAY_PER_REQUEST",
        )
        self._db.get_waiter("table_exists").wait(TableName=self._table)

    def _read(self, account_id: str) -> tuple[list[float], int | None]:
        item = self._db.get_item(
            TableName=self._table, Key={"pk": {"S": account_id}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return [], None
        stamps = [int(s["N"]) / MICROS for s in item.get("stamps", {}).get("L", [])]
        return stamps, int(item["version"]["N"])

    def _write(self, account_id: str, stamps: list[float], version: int | None) -> bool:
        item = {
            "pk": {"S": account_id},
            "stamps": {"L": [{"N": str(round(s * MICROS))} for s in stamps]},
            "version": {"N": str((version or 0) + 1)},
            "expires_at": {"N": str(int(max(stamps) + 3600))},
        }
        if version is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(version)}},
            }
        try:
            self._db.put_item(TableName=self._table, Item=item, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                self.conflicts += 1
                return False
            raise
        return True

    def acquire(self, account_id: str) -> float:
        """Take one slot for ``account_id``; returns the seconds waited.

        Raises :class:`OrderRateLimitedError` (with ``Retry-After``) when no
        slot frees within ``max_wait`` seconds.
        """
        started = self._clock()
        deadline = started + self.max_wait
        while True:
            stamps, version = self._read(account_id)
            # The instant as stored (whole microseconds), so the window is judged on what
            # every other taker will read back.
            now = round(self._clock() * MICROS) / MICROS
            live = sorted(s for s in stamps if s > now - self.window)
            if len(live) < self.limit:
                if self._write(account_id, [*live, now], version):
                    return now - started
                self._sleep(0.002 + 0.01 * self._jitter())  # lost a race: re-read soon
                continue
            free_at = live[len(live) - self.limit] + self.window
            if free_at > deadline:
                retry_after = max(1, math.ceil(free_at - now))
                raise OrderRateLimitedError(headers={"Retry-After": str(retry_after)})
            self._sleep(max(0.0, free_at - now) + 0.005 * self._jitter())
