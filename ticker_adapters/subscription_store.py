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

MODES = ("ltp", "quote", "full")  # ascending: a wider mode carries everything a narrower one does
MODE_RANK = {mode: rank for rank, mode in enumerate(MODES)}
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
UNDERLYING_PATTERN = re.compile(r"^[A-Z0-9&_-]{1,32}$")
MAX_TOKEN = 2**32 - 1
MAX_STRIKES_EACH_SIDE = 50
MAX_EXPIRIES = 6
MAX_ITEMS_PER_TRANSACTION = 99
"""DynamoDB's 100 items per transaction, less the generation counter's update."""
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


def _validate_rule(rule: AtmWindowRule) -> None:
    if not UNDERLYING_PATTERN.match(rule.underlying):
        raise SubscriptionError(f"underlying {rule.underlying!r} is invalid")
    if not 1 <= rule.strikes_each_side <= MAX_STRIKES_EACH_SIDE:
        raise SubscriptionError(f"strikes_each_side must be in 1..{MAX_STRIKES_EACH_SIDE}")
    if not 1 <= rule.expiries <= MAX_EXPIRIES:
        raise SubscriptionError(f"expiries must be in 1..{MAX_EXPIRIES}")
    _validate_mode(rule.mode)
    _validate_owner(rule.owner)


def _sub_key(token: int, owner: str) -> dict[str, Any]:
    return {"pk": {"S": "SUB"}, "sk": {"S": f"{token:010d}#{owner}"}}


def _sub_item(token: int, mode: str, owner: str, updated_at: str) -> dict[str, Any]:
    return {
        **_sub_key(token, owner),
        "token": {"N": str(token)},
        "mode": {"S": mode},
        "owner": {"S": owner},
        "updated_at": {"S": updated_at},
    }


def _atm_key(underlying: str, owner: str) -> dict[str, Any]:
    return {"pk": {"S": "ATM"}, "sk": {"S": f"{underlying}#{owner}"}}


def _atm_item(rule: AtmWindowRule) -> dict[str, Any]:
    return {
        **_atm_key(rule.underlying, rule.owner),
        "underlying": {"S": rule.underlying},
        "strikes_each_side": {"N": str(rule.strikes_each_side)},
        "expiries": {"N": str(rule.expiries)},
        "mode": {"S": rule.mode},
        "owner": {"S": rule.owner},
    }


def _rule(item: Mapping[str, Any]) -> AtmWindowRule:
    return AtmWindowRule(
        underlying=item["underlying"]["S"],
        strikes_each_side=int(item["strikes_each_side"]["N"]),
        expiries=int(item["expiries"]["N"]),
        mode=item["mode"]["S"],
        owner=item["owner"]["S"],
    )


@dataclass(frozen=True)
class InstrumentEntry:
    """One owner's request for one instrument, as stored."""

    token: int
    mode: str
    owner: str


@dataclass(frozen=True)
class StoredSubscriptions:
    """Every entry as stored, owner by owner (not merged), with the generation read first."""

    generation: int
    instruments: tuple[InstrumentEntry, ...] = ()
    atm_windows: tuple[AtmWindowRule, ...] = ()


@dataclass(frozen=True)
class SubscriptionChange:
    """What one owner adds and withdraws in one request."""

    owner: str
    subscribe: tuple[tuple[int, str], ...] = ()
    unsubscribe: tuple[int, ...] = ()
    atm_windows: tuple[AtmWindowRule, ...] = ()
    remove_atm_windows: tuple[str, ...] = ()


class SubscriptionStore:
    """Read and write desired subscriptions in one DynamoDB table."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    # -- table (tests and the sandbox; CDK owns it in AWS) ----------------------------

    def create_table(self) -> None:
        """Create the table with the layout this store expects (on-demand billing)."""
        self._db.create_table(
            TableName=self._table,
            KeySchema=KEY_SCHEMA,
            AttributeDefinitions=ATTRIBUTE_DEFINITIONS,
            BillingMode="PAY_PER_REQUEST",
        )
        self._db.get_waiter("table_exists").wait(TableName=self._table)

    # -- writes ------------------------------------------------------------------

    def _bump(self) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": {"S": "META"}, "sk": {"S": "generation"}},
                "UpdateExpression": "ADD generation :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }

    def _write(self, operation: dict[str, Any]) -> None:
        self._db.transact_write_items(TransactItems=[operation, self._bump()])

    def subscribe(self, token: int, mode: str, owner: str) -> None:
        """Ask for ``token`` in ``mode`` on behalf of ``owner`` (replaces that owner's mode)."""
        _validate_token(token)
        _validate_mode(mode)
        _validate_owner(owner)
        item = _sub_item(token, mode, owner, datetime.now(UTC).isoformat())
        self._write({"Put": {"TableName": self._table, "Item": item}})

    def unsubscribe(self, token: int, owner: str) -> None:
        """Withdraw ``owner``'s interest in ``token`` (others' interest stays)."""
        _validate_token(token)
        _validate_owner(owner)
        self._write({"Delete": {"TableName": self._table, "Key": _sub_key(token, owner)}})

    def put_atm_window(self, rule: AtmWindowRule) -> None:
        """Create or replace ``rule.owner``'s ATM window on ``rule.underlying``."""
        _validate_rule(rule)
        self._write({"Put": {"TableName": self._table, "Item": _atm_item(rule)}})

    def remove_atm_window(self, underlying: str, owner: str) -> None:
        """Withdraw ``owner``'s ATM window on ``underlying``."""
        _validate_owner(owner)
        self._write({"Delete": {"TableName": self._table, "Key": _atm_key(underlying, owner)}})

    def change(self, change: SubscriptionChange) -> int:
        """Apply one owner's change as few transactions as DynamoDB allows; how many were run.

        Each transaction carries up to :data:`MAX_ITEMS_PER_TRANSACTION` entries
        and bumps the generation once. A reader polling between two of them sees
        part of the change and the rest at its next poll: every entry is
        independent, so no intermediate state is wrong, only incomplete.
        """
        _validate_owner(change.owner)
        for token, mode in change.subscribe:
            _validate_token(token)
            _validate_mode(mode)
        for token in change.unsubscribe:
            _validate_token(token)
        for rule in change.atm_windows:
            _validate_rule(rule)
            if rule.owner != change.owner:
                raise SubscriptionError("every ATM window of a change belongs to its owner")
        now = datetime.now(UTC).isoformat()
        operations: list[dict[str, Any]] = [
            {"Delete": {"TableName": self._table, "Key": _sub_key(t, change.owner)}}
            for t in dict.fromkeys(change.unsubscribe)
        ]
        operations += [
            {"Put": {"TableName": self._table, "Item": _sub_item(t, m, change.owner, now)}}
            for t, m in dict(change.subscribe).items()
        ]
        operations += [
            {"Delete": {"TableName": self._table, "Key": _atm_key(u, change.owner)}}
            for u in dict.fromkeys(change.remove_atm_windows)
        ]
        operations += [
            {"Put": {"TableName": self._table, "Item": _atm_item(rule)}}
            for rule in {r.underlying: r for r in change.atm_windows}.values()
        ]
        transactions = 0
        for start in range(0, len(operations), MAX_ITEMS_PER_TRANSACTION):
            self._write_many(operations[start : start + MAX_ITEMS_PER_TRANSACTION])
            transactions += 1
        return transactions

    def _write_many(self, operations: list[dict[str, Any]]) -> None:
        self._db.transact_write_items(TransactItems=[*operations, self._bump()])

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
        rules = tuple(_rule(item) for item in self._query("ATM"))
        return DesiredSubscriptions(generation, instruments, rules)

    def entries(self) -> StoredSubscriptions:
        """Every owner's entries as stored (what the API shows), generation read first."""
        generation = self.generation()
        instruments = tuple(
            InstrumentEntry(int(item["token"]["N"]), item["mode"]["S"], item["owner"]["S"])
            for item in self._query("SUB")
        )
        rules = tuple(_rule(item) for item in self._query("ATM"))
        return StoredSubscriptions(generation, instruments, rules)
