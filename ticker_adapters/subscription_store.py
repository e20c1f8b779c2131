"""The desired-subscriptions store in DynamoDB.

The API writes what clients want streamed; the feed container reconciles its
connections against it continuously. Two kinds of entry, each owned by a
client (``owner``) so that one client's unsubscribe does not cut another's
stream:

- an instrument subscription: token + mode;
- an ATM window rule: for an underlying, N strikes either side of the money
  for the K nearest expiries, in a mode (the container resolves it against
  the day's instruments and the underlying's live price).

Every write also bumps a generation counter in the same transaction, so a
reader polls one small item and re-reads the whole set only when it changed.
Shared by the feed container and the Lambdas; imports only the AWS SDK.

Table layout (partition key ``pk``, sort key ``sk``, both strings):
``SUB / {token:010d}#{owner}``, ``ATM / {underlying}#{owner}``, ``META / generation``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ticker_adapters.aws import create_table

MODES = ("ltp", "quote", "full")  # ascending: a wider mode carries everything a narrower one does
MODE_RANK = {mode: rank for rank, mode in enumerate(MODES)}
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
UNDERLYING_PATTERN = re.compile(r"^[A-Z0-9&_-]{1,32}$")
MAX_TOKEN = 2**32 - 1
MAX_STRIKES_EACH_SIDE = 50
MAX_EXPIRIES = 6
KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]


class SubscriptionError(ValueError):
    """A subscription request is invalid; the message names the field."""


def wider_mode(a: str, b: str) -> str:
    """The mode that carries both ``a`` and ``b``."""
    return a if MODE_RANK[a] >= MODE_RANK[b] else b


@dataclass(frozen=True)
class AtmWindowRule:
    """Subscribe N strikes either side of the money for the K nearest expiries."""

    underlying: str
    strikes_each_side: int
    expiries: int
    mode: str
    owner: str


@dataclass(frozen=True)
class DesiredSubscriptions:
    """Everything clients want, merged: one mode per instrument, plus ATM rules."""

    generation: int
    instruments: Mapping[int, str] = field(default_factory=dict)
    atm_windows: tuple[AtmWindowRule, ...] = ()


def _validate_mode(mode: str) -> None:
    if mode not in MODE_RANK:
        raise SubscriptionError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def _validate_owner(owner: str) -> None:
    if not OWNER_PATTERN.match(owner):
        raise SubscriptionError(f"owner {owner!r} is invalid: 1-128 of A-Z a-z 0-9 _ . : @ -")


def _validate_token(token: int) -> None:
    if isinstance(token, bool) or not isinstance(token, int) or not 0 < token <= MAX_TOKEN:
        raise SubscriptionError(f"instrument_token must be an integer in 1..{MAX_TOKEN}")


class SubscriptionStore:
    """Read and write desired subscriptions in one DynamoDB table."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    # -- table (tests and the sandbox; CDK owns it in AWS) ----------------------------

    def create_table(self) -> None:
        """Create the table with the layout this store expects (on-demand billing)."""
        create_table(self._db, self._table, key_schema=KEY_SCHEMA, attributes=ATTRIBUTE_DEFINITIONS)

    # -- writes ------------------------------------------------------------------

    def _write(self, operation: dict[str, Any]) -> None:
        self._db.transact_write_items(TransactItems=[operation, self.generation_bump()])

    # -- transaction items (for callers that make a store write part of their own transaction)

    @property
    def table_name(self) -> str:
        """The table's name."""
        return self._table

    def generation_bump(self) -> dict[str, Any]:
        """The TransactWriteItems entry that bumps the generation: one per transaction."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": {"S": "META"}, "sk": {"S": "generation"}},
                "UpdateExpression": "ADD generation :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }

    def subscribe_item(self, token: int, mode: str, owner: str) -> dict[str, Any]:
        """The TransactWriteItems entry asking for ``token`` in ``mode`` on behalf of ``owner``.

        A transaction holding it must also hold :meth:`generation_bump`, or the
        feed will not notice the change.
        """
        _validate_token(token)
        _validate_mode(mode)
        _validate_owner(owner)
        item = {
            "pk": {"S": "SUB"},
            "sk": {"S": f"{token:010d}#{owner}"},
            "token": {"N": str(token)},
            "mode": {"S": mode},
            "owner": {"S": owner},
            "updated_at": {"S": datetime.now(UTC).isoformat()},
        }
        return {"Put": {"TableName": self._table, "Item": item}}

    def unsubscribe_item(self, token: int, owner: str) -> dict[str, Any]:
        """The TransactWriteItems entry withdrawing ``owner``'s interest in ``token``."""
        _validate_token(token)
        _validate_owner(owner)
        key = {"pk": {"S": "SUB"}, "sk": {"S": f"{token:010d}#{owner}"}}
        return {"Delete": {"TableName": self._table, "Key": key}}

    def subscribe(self, token: int, mode: str, owner: str) -> None:
        """Ask for ``token`` in ``mode`` on behalf of ``owner`` (replaces that owner's mode)."""
        self._write(self.subscribe_item(token, mode, owner))

    def unsubscribe(self, token: int, owner: str) -> None:
        """Withdraw ``owner``'s interest in ``token`` (others' interest stays)."""
        self._write(self.unsubscribe_item(token, owner))

    def put_atm_window(self, rule: AtmWindowRule) -> None:
        """Create or replace ``rule.owner``'s ATM window on ``rule.underlying``."""
        if not UNDERLYING_PATTERN.match(rule.underlying):
            raise SubscriptionError(f"underlying {rule.underlying!r} is invalid")
        if not 1 <= rule.strikes_each_side <= MAX_STRIKES_EACH_SIDE:
            raise SubscriptionError(f"strikes_each_side must be in 1..{MAX_STRIKES_EACH_SIDE}")
        if not 1 <= rule.expiries <= MAX_EXPIRIES:
            raise SubscriptionError(f"expiries must be in 1..{MAX_EXPIRIES}")
        _validate_mode(rule.mode)
        _validate_owner(rule.owner)
        item = {
            "pk": {"S": "ATM"},
            "sk": {"S": f"{rule.underlying}#{rule.owner}"},
            "underlying": {"S": rule.underlying},
            "strikes_each_side": {"N": str(rule.strikes_each_side)},
            "expiries": {"N": str(rule.expiries)},
            "mode": {"S": rule.mode},
            "owner": {"S": rule.owner},
        }
        self._write({"Put": {"TableName": self._table, "Item": item}})

    def remove_atm_window(self, underlying: str, owner: str) -> None:
        """Withdraw ``owner``'s ATM window on ``underlying``."""
        _validate_owner(owner)
        key = {"pk": {"S": "ATM"}, "sk": {"S": f"{underlying}#{owner}"}}
        self._write({"Delete": {"TableName": self._table, "Key": key}})

    # -- reads -------------------------------------------------------------------

    def generation(self) -> int:
        """The change counter: any write makes it larger."""
        response = self._db.get_item(
            TableName=self._table,
            Key={"pk": {"S": "META"}, "sk": {"S": "generation"}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return int(item["generation"]["N"]) if item else 0

    def _query(self, pk: str) -> Iterator[dict[str, Any]]:
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ConsistentRead=True,
        )
        for page in pages:
            yield from page["Items"]

    def snapshot(self) -> DesiredSubscriptions:
        """The merged desired set, stamped with the generation read before it.

        Reading the generation first means a write racing this read bumps the
        counter past the stamp, so the next poll re-reads: nothing is missed.
        """
        generation = self.generation()
        instruments: dict[int, str] = {}
        for item in self._query("SUB"):
            token, mode = int(item["token"]["N"]), item["mode"]["S"]
            instruments[token] = wider_mode(mode, instruments.get(token, mode))
        rules = tuple(
            AtmWindowRule(
                underlying=item["underlying"]["S"],
                strikes_each_side=int(item["strikes_each_side"]["N"]),
                expiries=int(item["expiries"]["N"]),
                mode=item["mode"]["S"],
                owner=item["owner"]["S"],
            )
            for item in self._query("ATM")
        )
        return DesiredSubscriptions(generation, instruments, rules)
