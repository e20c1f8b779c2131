"""The desired-subscriptions store in DynamoDB.

The API writes what clients want streamed; the feed container reconciles its
connections against it continuously. The requests, their validation and the
merge are :mod:`ticker_core.subscriptions`; this module only keeps them.

Every write also bumps a generation counter in the same transaction, so a
reader polls one small item and re-reads the whole set only when it changed.
Shared by the feed container and the Lambdas; imports only the AWS SDK.

Table layout (partition key ``pk``, sort key ``sk``, both strings):
``SUB / {token:010d}#{owner}``, ``ATM / {underlying}#{owner}``, ``META / generation``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ticker_adapters.aws import create_table
from ticker_core.subscriptions import (
    AtmWindowRule,
    DesiredSubscriptions,
    SubscriptionError,
    merge_instruments,
    validate_mode,
    validate_owner,
    validate_token,
)

MAX_ITEMS_PER_TRANSACTION = 99
"""DynamoDB's 100 items per transaction, less the generation counter's update."""


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
        create_table(self._db, self._table, sort_key="sk")

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
        validate_token(token)
        validate_mode(mode)
        validate_owner(owner)
        item = _sub_item(token, mode, owner, datetime.now(UTC).isoformat())
        return {"Put": {"TableName": self._table, "Item": item}}

    def unsubscribe_item(self, token: int, owner: str) -> dict[str, Any]:
        """The TransactWriteItems entry withdrawing ``owner``'s interest in ``token``."""
        validate_token(token)
        validate_owner(owner)
        return {"Delete": {"TableName": self._table, "Key": _sub_key(token, owner)}}

    def subscribe(self, token: int, mode: str, owner: str) -> None:
        """Ask for ``token`` in ``mode`` on behalf of ``owner`` (replaces that owner's mode)."""
        self._write(self.subscribe_item(token, mode, owner))

    def unsubscribe(self, token: int, owner: str) -> None:
        """Withdraw ``owner``'s interest in ``token`` (others' interest stays)."""
        self._write(self.unsubscribe_item(token, owner))

    def put_atm_window(self, rule: AtmWindowRule) -> None:
        """Create or replace ``rule.owner``'s ATM window on ``rule.underlying``."""
        rule.validate()
        self._write({"Put": {"TableName": self._table, "Item": _atm_item(rule)}})

    def remove_atm_window(self, underlying: str, owner: str) -> None:
        """Withdraw ``owner``'s ATM window on ``underlying``."""
        validate_owner(owner)
        self._write({"Delete": {"TableName": self._table, "Key": _atm_key(underlying, owner)}})

    def change(self, change: SubscriptionChange) -> int:
        """Apply one owner's change as few transactions as DynamoDB allows; how many were run.

        Each transaction carries up to :data:`MAX_ITEMS_PER_TRANSACTION` entries
        and bumps the generation once. A reader polling between two of them sees
        part of the change and the rest at its next poll: every entry is
        independent, so no intermediate state is wrong, only incomplete.
        """
        validate_owner(change.owner)
        for token, mode in change.subscribe:
            validate_token(token)
            validate_mode(mode)
        for token in change.unsubscribe:
            validate_token(token)
        for rule in change.atm_windows:
            rule.validate()
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
        self._db.transact_write_items(TransactItems=[*operations, self.generation_bump()])

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
        instruments = merge_instruments(
            (int(item["token"]["N"]), item["mode"]["S"]) for item in self._query("SUB")
        )
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
