"""Subscribers by instrument in DynamoDB, and the instruments clients add to the feed.

Table layout (partition key ``pk``, a string):

``I#<instrument token>``
    ``ticks`` and ``greeks``: string sets of the connection ids subscribed on
    each channel (``ADD``/``DELETE`` on sets are idempotent, so a retried
    write is harmless); ``held`` when the instrument is in the feed's desired
    set on the clients' behalf. The fan-out reads these items in bulk
    (``BatchGetItem``, 100 instruments a call).
``BUDGET``
    ``used``: how many instruments are held; never more than the budget.

Holding follows the subscribers exactly, however clients race: an
instrument is *acquired* (``held`` set, ``used`` + 1, the subscription
store's entry for owner ``websocket`` written and its generation bumped, in
one transaction across both tables) on the condition that it has
subscribers and is not held, and *released* (item deleted, ``used`` - 1,
store entry deleted, generation bumped, again one transaction) on the
condition that it has none. A client joining while another leaves makes the
release's condition fail, and a release that committed first makes the
joiner acquire afresh; so the desired set holds exactly the instruments that
have subscribers, and ``used`` counts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from lambdas.ws.protocol import Channel
from lambdas.ws.state import FeedBudgetExhaustedError, Subscriptions
from ticker_adapters.aws import CONDITION_FAILED, create_table, error_code
from ticker_adapters.retry import Delays, full_jitter
from ticker_adapters.subscription_store import SubscriptionStore

BUDGET_KEY = {"pk": {"S": "BUDGET"}}
BATCH_GET_KEYS = 100
MAX_TRANSACTION_ITEMS = 100
PER_TRANSACTION = (MAX_TRANSACTION_ITEMS - 2) // 2
"""Instruments per acquire/release transaction: two items each, plus the budget and the bump."""
TRANSACTION_ATTEMPTS = 8
RETRYABLE = frozenset(
    {
        "TransactionConflictException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
    }
)
WEBSOCKET_OWNER = "websocket"
"""Whose entries these are in the subscription store."""


def instrument_key(token: int) -> dict[str, Any]:
    """The key of an instrument's subscribers item."""
    return {"pk": {"S": f"I#{token}"}}


def _default_delays() -> Any:
    return full_jitter(0.02, 0.5)


@dataclass
class IndexCounters:
    """What the index did (for metrics)."""

    acquired: int = 0
    released: int = 0
    conflicts: int = 0


class TransactionRetriesExhaustedError(Exception):
    """A transaction kept conflicting with others."""


class DynamoSubscriberIndex:
    """:class:`lambdas.ws.state.SubscriberIndex` on one table plus the subscription store."""

    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        store: SubscriptionStore,
        *,
        mode: str = "full",
        owner: str = WEBSOCKET_OWNER,
        workers: int = 8,
        delays: Delays = _default_delays,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = dynamodb
        self._table = table_name
        self._store = store
        self._mode = mode
        self._owner = owner
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._delays = delays
        self._sleep = sleep
        self.counters = IndexCounters()

    def create_table(self) -> None:
        """Create the table (tests and the sandbox; CDK owns it in AWS)."""
        create_table(self._db, self._table)

    def _map(self, function: Callable[[int], Any], tokens: Iterable[int]) -> list[Any]:
        """``function`` over ``tokens`` on a few threads (one DynamoDB write each)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ws-index")
        return list(self._pool.map(function, tokens))

    # -- reads ------------------------------------------------------------------------

    def used(self) -> int:
        """How many instruments clients hold in the feed's desired set."""
        item = self._db.get_item(TableName=self._table, Key=BUDGET_KEY, ConsistentRead=True).get(
            "Item"
        )
        return int(item["used"]["N"]) if item and "used" in item else 0

    def lookup(self, tokens: Collection[int], channel: Channel) -> dict[int, frozenset[str]]:
        """Subscribers per token on ``channel``, read consistently in bulk."""
        ordered = sorted(set(tokens))
        out: dict[int, frozenset[str]] = {}
        for start in range(0, len(ordered), BATCH_GET_KEYS):
            keys = [instrument_key(t) for t in ordered[start : start + BATCH_GET_KEYS]]
            request: dict[str, Any] = {
                self._table: {
                    "Keys": keys,
                    "ConsistentRead": True,
                    "ProjectionExpression": "pk, #channel",
                    "ExpressionAttributeNames": {"#channel": channel.value},
                }
            }
            delays = self._delays()
            for _ in range(TRANSACTION_ATTEMPTS):
                response = self._db.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    members = item.get(channel.value, {}).get("SS", [])
                    if members:
                        out[int(item["pk"]["S"][2:])] = frozenset(members)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._sleep(next(delays))
            else:
                raise TransactionRetriesExhaustedError("keys left unprocessed")
        return out

    # -- join -------------------------------------------------------------------------

    def _members(
        self, operation: str, connection_id: str, token: int, channels: Collection[Channel]
    ) -> dict[str, Any] | None:
        """``ADD`` or ``DELETE`` the connection on ``channels`` of one instrument; its new item.

        A ``DELETE`` on an instrument nobody subscribes to changes nothing and
        returns None (the item is not created just to be empty).
        """
        names = ", ".join(f"{c.value} :id" for c in sorted(channels))
        condition = {"ConditionExpression": "attribute_exists(pk)"} if operation == "DELETE" else {}
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=instrument_key(token),
                UpdateExpression=f"{operation} {names}",
                ExpressionAttributeValues={":id": {"SS": [connection_id]}},
                ReturnValues="ALL_NEW",
                **condition,
            )
        except ClientError as exc:
            if condition and error_code(exc) == CONDITION_FAILED:
                return None
            raise
        return dict(response.get("Attributes", {}))

    def join(self, connection_id: str, additions: Subscriptions, *, budget: int) -> None:
        """Subscribe the connection; acquire instruments nobody held (see the module)."""

        def add(token: int) -> bool:
            return "held" in (self._members("ADD", connection_id, token, additions[token]) or {})

        tokens = sorted(additions)
        held = self._map(add, tokens)
        missing = [t for t, h in zip(tokens, held, strict=True) if not h]
        if not missing:
            return
        try:
            self._acquire(missing, budget)
        except FeedBudgetExhaustedError:
            self.leave(connection_id, additions)
            raise

    def _acquire(self, tokens: list[int], budget: int) -> None:
        used = self.used()
        if used + len(tokens) > budget:
            raise FeedBudgetExhaustedError(len(tokens), max(0, budget - used))
        for start in range(0, len(tokens), PER_TRANSACTION):
            chunk = tokens[start : start + PER_TRANSACTION]
            while chunk:
                chunk = self._acquire_chunk(chunk, budget, still_needed=len(tokens) - start)

    def _acquire_chunk(self, chunk: list[int], budget: int, *, still_needed: int) -> list[int]:
        """One acquire transaction; returns the tokens to try again (empty when done)."""
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": BUDGET_KEY,
                    "UpdateExpression": "ADD used :n",
                    "ConditionExpression": "attribute_not_exists(used) OR used <= :most",
                    "ExpressionAttributeValues": {
                        ":n": {"N": str(len(chunk))},
                        ":most": {"N": str(budget - len(chunk))},
                    },
                }
            }
        ]
        for token in chunk:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": instrument_key(token),
                        "UpdateExpression": "SET held = :yes",
                        "ConditionExpression": (
                            "attribute_not_exists(held) AND "
                            "(attribute_exists(ticks) OR attribute_exists(greeks))"
                        ),
                        "ExpressionAttributeValues": {":yes": {"BOOL": True}},
                    }
                }
            )
            items.append(self._store.subscribe_item(token, self._mode, self._owner))
        items.append(self._store.generation_bump())
        reasons = self._transact(items)
        if reasons is None:
            self.counters.acquired += len(chunk)
            return []
        if reasons[0] == "ConditionalCheckFailed":
            used = self.used()
            raise FeedBudgetExhaustedError(still_needed, max(0, budget - used))
        # An instrument another client acquired meanwhile (or that no longer has
        # subscribers) fails its condition: it needs nothing more from us.
        return [t for i, t in enumerate(chunk) if reasons[1 + 2 * i] != "ConditionalCheckFailed"]

    # -- leave ------------------------------------------------------------------------

    def leave(self, connection_id: str, removals: Subscriptions) -> None:
        """Unsubscribe the connection; release instruments left without subscribers."""

        def remove(token: int) -> tuple[int, bool, bool] | None:
            left = self._members("DELETE", connection_id, token, removals[token])
            if left is None:
                return None  # nobody subscribes to it: nothing to release
            return token, not any(c.value in left for c in Channel), "held" in left

        outcomes = [o for o in self._map(remove, sorted(removals)) if o is not None]
        empty = [(token, held) for token, is_empty, held in outcomes if is_empty]
        for start in range(0, len(empty), PER_TRANSACTION):
            chunk = empty[start : start + PER_TRANSACTION]
            while chunk:
                chunk = self._release_chunk(chunk)

    def _release_chunk(self, chunk: list[tuple[int, bool]]) -> list[tuple[int, bool]]:
        """One release transaction; returns the entries to try again (empty when done)."""
        no_subscribers = "attribute_not_exists(ticks) AND attribute_not_exists(greeks)"
        items: list[dict[str, Any]] = []
        held = [token for token, is_held in chunk if is_held]
        for token, is_held in chunk:
            condition = "attribute_exists(held)" if is_held else "attribute_not_exists(held)"
            items.append(
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": instrument_key(token),
                        "ConditionExpression": f"{condition} AND {no_subscribers}",
                    }
                }
            )
            if is_held:
                items.append(self._store.unsubscribe_item(token, self._owner))
        if held:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": BUDGET_KEY,
                        "UpdateExpression": "ADD used :n",
                        "ExpressionAttributeValues": {":n": {"N": str(-len(held))}},
                    }
                }
            )
            items.append(self._store.generation_bump())
        reasons = self._transact(items)
        if reasons is None:
            self.counters.released += len(held)
            return []
        # Whose condition failed gained a subscriber (or was released by another leaver).
        retry: list[tuple[int, bool]] = []
        index = 0
        for token, is_held in chunk:
            if reasons[index] != "ConditionalCheckFailed":
                retry.append((token, is_held))
            index += 2 if is_held else 1
        return retry

    # -- transactions -----------------------------------------------------------------

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """Run the transaction: None when it committed, else each item's cancellation code.

        Conflicts with concurrent writes and throttling are retried after a
        jittered delay; conditions that failed are the caller's to handle.
        """
        delays = self._delays()
        for _ in range(TRANSACTION_ATTEMPTS):
            try:
                self._db.transact_write_items(TransactItems=items)
                return None
            except ClientError as exc:
                code = error_code(exc)
                if code == "TransactionCanceledException":
                    reasons = [
                        str(r.get("Code") or "None")
                        for r in exc.response.get("CancellationReasons", [])
                    ]
                    if "ConditionalCheckFailed" in reasons:
                        return reasons
                    if not all(r in ("None", *_RETRYABLE_REASONS) for r in reasons):
                        raise
                elif code not in RETRYABLE:
                    raise
                self.counters.conflicts += 1
            self._sleep(next(delays))
        raise TransactionRetriesExhaustedError(f"{len(items)} items kept conflicting")


_RETRYABLE_REASONS = ("TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded")
