"""A per-account order rate limiter shared by every concurrent invocation (DynamoDB).

Kite accepts at most 10 order requests a second per API key and answers
429 past that. Lambda runs many environments at once, so the count must
live outside them: one item per account holds ``limit`` slots, each the
time (whole microseconds) it was last taken. Taking a slot is one
conditional write: set slot ``i`` to now, on condition that it is unset or
was taken at least ``window`` seconds ago. Each slot is thus taken at most
once in any ``window``, so no span of ``window`` seconds anywhere holds more
than ``limit`` order requests, however a burst falls and however many
environments race (a sliding window). ``window`` carries a small margin over
one second for the variance between taking a slot here and the request
reaching Kite.

The write answers with the item either way (``ALL_NEW`` when it succeeds,
the item as it stood when the condition failed), so the environment always
knows the slots as last seen and picks its next one from them without a
read: in the usual case one round trip per order. A write that loses a race
learns the current slots from its failure and tries a free one at once.
When no slot is free the taker waits until the oldest leaves the window, up
to ``max_wait`` seconds in all, then raises
:class:`~lambdas.api.errors.OrderRateLimitedError` with ``Retry-After``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from lambdas.api.errors import OrderRateLimitedError
from ticker_adapters.aws import CONDITION_FAILED, create_table, error_code

MICROS = 1_000_000
TTL_ATTRIBUTE = "expires_at"
SLOT_PREFIX = "s"
ITEM_TTL_SECONDS = 3600
"""An idle account's item expires an hour after its last order (TTL)."""


def _slot(index: int) -> str:
    return f"{SLOT_PREFIX}{index}"


def slot_times(item: Mapping[str, Any] | None, limit: int) -> list[int]:
    """Each slot's last time (microseconds; 0: never taken) in an item as DynamoDB returns it."""
    item = item or {}
    return [int(item[_slot(i)]["N"]) if _slot(i) in item else 0 for i in range(limit)]


def free_slots(times: list[int], now_us: int, window_us: int) -> list[int]:
    """The slots that may be taken at ``now_us``."""
    return [i for i, taken in enumerate(times) if taken <= now_us - window_us]


class DynamoOrderLimiter:
    """Sliding-window slots per account, each taken by one conditional write."""

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
        choose: Callable[[list[int]], int] = random.choice,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if limit < 1 or window_seconds <= 0 or max_wait_seconds < 0:
            raise ValueError("limit >= 1, window > 0 and max_wait >= 0 are required")
        self._db = dynamodb
        self._table = table_name
        self.limit = limit
        self.window = window_seconds
        self.max_wait = max_wait_seconds
        self._window_us = round(window_seconds * MICROS)
        self._clock = clock
        self._sleep = sleep
        self._choose = choose
        self._jitter = jitter
        self._seen: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.writes = 0
        """Conditional writes sent (for metrics and tests)."""
        self.conflicts = 0
        """Writes that found their slot taken (for metrics)."""

    def create_table(self) -> None:
        """Create the table with its TTL (tests and the sandbox; CDK owns it in AWS)."""
        create_table(self._db, self._table, ttl_attribute=TTL_ATTRIBUTE)

    def _claim(self, account_id: str, slot: int, now_us: int) -> tuple[bool, list[int]]:
        """Take ``slot`` at ``now_us``; whether it was taken, and the slots as they now are."""
        self.writes += 1
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": account_id}},
                UpdateExpression="SET #slot = :now, #ttl = :expires",
                ConditionExpression="attribute_not_exists(#slot) OR #slot <= :free_before",
                ExpressionAttributeNames={"#slot": _slot(slot), "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":now": {"N": str(now_us)},
                    ":free_before": {"N": str(now_us - self._window_us)},
                    ":expires": {"N": str(now_us // MICROS + ITEM_TTL_SECONDS)},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            self.conflicts += 1
            return False, slot_times(exc.response.get("Item"), self.limit)
        return True, slot_times(answer.get("Attributes"), self.limit)

    def acquire(self, account_id: str) -> float:
        """Take one slot for ``account_id``; returns the seconds waited.

        Raises :class:`OrderRateLimitedError` (with ``Retry-After``) when no
        slot frees within ``max_wait`` seconds.
        """
        started = self._clock()
        deadline = started + self.max_wait
        with self._lock:
            times = list(self._seen.get(account_id) or [0] * self.limit)
        while True:
            now = self._clock()
            now_us = round(now * MICROS)
            free = free_slots(times, now_us, self._window_us)
            if free:
                taken, times = self._claim(account_id, self._choose(free), now_us)
                with self._lock:
                    self._seen[account_id] = times
                if taken:
                    return now - started
                if free_slots(times, now_us, self._window_us):
                    # Another environment took it first: others are free, try one at once
                    continue
            free_at = (min(times) + self._window_us) / MICROS
            if free_at > deadline:
                retry_after = max(1, math.ceil(free_at - now))
                raise OrderRateLimitedError(headers={"Retry-After": str(retry_after)})
            self._sleep(max(0.0, free_at - now) + 0.005 * self._jitter())
