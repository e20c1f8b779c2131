"""Connections in DynamoDB: one item per connection (with a TTL) and one per user.

Table layout (partition key ``pk``, a string; TTL attribute ``expires_at``):

``CONN#<connection id>``
    ``user_id``, ``username``, ``connected_at``, ``expires_at`` (epoch
    seconds; API Gateway ends a connection within two hours, so an item whose
    ``$disconnect`` never came expires), ``version`` (every write bumps it),
    ``ticks`` and ``greeks`` (number sets: the instruments subscribed on each
    channel), ``lease_until`` while a message of the connection is being
    applied, ``rate_second``/``rate_count`` (the messages-per-second window).
``USER#<sub>``
    ``connections``: a string set of the user's connection ids. Adding to it is
    conditional on its size, which makes the per-user limit exact under
    concurrent connects; ids of connections that expired or vanished without
    a ``$disconnect`` are pruned when the limit is reached.

DynamoDB's TTL deletes lag (up to days), so readers check ``expires_at``
themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from lambdas.ws.protocol import Channel
from lambdas.ws.state import BusyError, Connection, ConnectionGoneError, Identity
from ticker_adapters.aws import CONDITION_FAILED, create_table, error_code

TTL_ATTRIBUTE = "expires_at"
BATCH_GET_KEYS = 100
RATE_ATTEMPTS = 4


def connection_key(connection_id: str) -> dict[str, Any]:
    """The key of a connection's item."""
    return {"pk": {"S": f"CONN#{connection_id}"}}


def user_key(user_id: str) -> dict[str, Any]:
    """The key of a user's item."""
    return {"pk": {"S": f"USER#{user_id}"}}


def _tokens(item: Mapping[str, Any], name: str) -> set[int]:
    return {int(n) for n in item.get(name, {}).get("NS", [])}


def connection_from_item(item: Mapping[str, Any]) -> Connection:
    """A connection item as a :class:`Connection`."""
    subscriptions: dict[int, frozenset[Channel]] = {}
    for channel in Channel:
        for token in _tokens(item, channel.value):
            subscriptions[token] = subscriptions.get(token, frozenset()) | {channel}
    return Connection(
        connection_id=item["pk"]["S"].removeprefix("CONN#"),
        identity=Identity(item["user_id"]["S"], item["username"]["S"]),
        connected_at=float(item["connected_at"]["N"]),
        expires_at=float(item["expires_at"]["N"]),
        subscriptions=subscriptions,
        version=int(item["version"]["N"]),
    )


class DynamoConnectionStore:
    """:class:`lambdas.ws.state.ConnectionStore` on one DynamoDB table."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name
        self.pruned = 0
        """Connection ids removed from users' sets as stale (for metrics)."""

    def create_table(self) -> None:
        """Create the table with its TTL (tests and the sandbox; CDK owns it in AWS)."""
        create_table(self._db, self._table, ttl_attribute=TTL_ATTRIBUTE)

    def _update(
        self, key: dict[str, Any], expression: str, condition: str, values: dict[str, Any]
    ) -> bool:
        """A conditional update: False when the condition did not hold."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise
        return True

    # -- reads ------------------------------------------------------------------------

    def get(self, connection_id: str, *, now: float | None = None) -> Connection | None:
        """The connection, or None when it is not registered (or expired at ``now``)."""
        item = self._db.get_item(
            TableName=self._table, Key=connection_key(connection_id), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        connection = connection_from_item(item)
        if now is not None and connection.expires_at <= now:
            return None
        return connection

    def user_connections(self, user_id: str) -> set[str]:
        """The connection ids counted against the user's limit."""
        item = self._db.get_item(
            TableName=self._table, Key=user_key(user_id), ConsistentRead=True
        ).get("Item")
        return set(item.get("connections", {}).get("SS", [])) if item else set()

    # -- open / close -----------------------------------------------------------------

    def open(self, connection: Connection, *, max_per_user: int, now: float) -> bool:
        """Register the connection unless its user is at ``max_per_user`` (see the module)."""
        item = {
            **connection_key(connection.connection_id),
            "user_id": {"S": connection.identity.user_id},
            "username": {"S": connection.identity.username},
            "connected_at": {"N": repr(connection.connected_at)},
            TTL_ATTRIBUTE: {"N": str(int(connection.expires_at))},
            "version": {"N": "0"},
        }
        self._db.put_item(TableName=self._table, Item=item)
        user_id = connection.identity.user_id
        for attempt in range(2):
            if self._count_connection(user_id, connection.connection_id, max_per_user):
                return True
            if attempt == 0 and not self._prune(user_id, now):
                break  # nothing stale to make room with
        self._db.delete_item(TableName=self._table, Key=connection_key(connection.connection_id))
        return False

    def _count_connection(self, user_id: str, connection_id: str, limit: int) -> bool:
        return self._update(
            user_key(user_id),
            "ADD connections :ids",
            "attribute_not_exists(connections) OR size(connections) < :limit "
            "OR contains(connections, :id)",
            {
                ":ids": {"SS": [connection_id]},
                ":id": {"S": connection_id},
                ":limit": {"N": str(limit)},
            },
        )

    def _prune(self, user_id: str, now: float) -> bool:
        """Drop the user's connection ids that are gone or expired; True if any were."""
        ids = sorted(self.user_connections(user_id))
        alive: set[str] = set()
        for start in range(0, len(ids), BATCH_GET_KEYS):
            keys = [connection_key(i) for i in ids[start : start + BATCH_GET_KEYS]]
            for item in self._batch_get(keys):
                if float(item[TTL_ATTRIBUTE]["N"]) > now:
                    alive.add(item["pk"]["S"].removeprefix("CONN#"))
        stale = [i for i in ids if i not in alive]
        if not stale:
            return False
        self._db.update_item(
            TableName=self._table,
            Key=user_key(user_id),
            UpdateExpression="DELETE connections :stale",
            ExpressionAttributeValues={":stale": {"SS": stale}},
        )
        self.pruned += len(stale)
        return True

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            self._table: {
                "Keys": keys,
                "ConsistentRead": True,
                "ProjectionExpression": "pk, #ttl",
                "ExpressionAttributeNames": {"#ttl": TTL_ATTRIBUTE},
            }
        }
        for _ in range(8):
            response = self._db.batch_get_item(RequestItems=request)
            items.extend(response.get("Responses", {}).get(self._table, []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return items
        raise RuntimeError("DynamoDB left keys unprocessed after 8 rounds")

    def close(self, connection_id: str) -> Connection | None:
        """Remove the connection and its place in its user's set; what was removed."""
        old = self._db.delete_item(
            TableName=self._table, Key=connection_key(connection_id), ReturnValues="ALL_OLD"
        ).get("Attributes")
        if not old:
            return None
        removed = connection_from_item(old)
        self._db.update_item(
            TableName=self._table,
            Key=user_key(removed.identity.user_id),
            UpdateExpression="DELETE connections :ids",
            ExpressionAttributeValues={":ids": {"SS": [connection_id]}},
        )
        return removed

    # -- messages ---------------------------------------------------------------------

    def take_message_slot(self, connection_id: str, *, per_second: int, now: float) -> bool:
        """Count one message in the connection's current second (a fixed one-second window)."""
        second = {"N": str(int(now))}
        key = connection_key(connection_id)
        for _ in range(RATE_ATTEMPTS):
            # The usual case: another message in the current second.
            if self._update(
                key,
                "ADD rate_count :one",
                "attribute_exists(pk) AND rate_second = :second AND rate_count < :limit",
                {":one": {"N": "1"}, ":second": second, ":limit": {"N": str(per_second)}},
            ):
                return True
            # The first message of a new second.
            if self._update(
                key,
                "SET rate_second = :second, rate_count = :one",
                "attribute_exists(pk) AND "
                "(attribute_not_exists(rate_second) OR rate_second < :second)",
                {":one": {"N": "1"}, ":second": second},
            ):
                return True
            item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get(
                "Item"
            )
            if not item:
                raise ConnectionGoneError(connection_id)
            window = int(item.get("rate_second", {}).get("N", "-1"))
            if window >= int(second["N"]) and int(item["rate_count"]["N"]) >= per_second:
                return False
            # else a racing message opened the second between our two writes: count again
        return False

    # -- lease and commit -------------------------------------------------------------

    def lease(self, connection_id: str, *, now: float, seconds: float) -> Connection:
        """The connection, leased until ``now + seconds`` (see ``ConnectionStore.lease``)."""
        key = connection_key(connection_id)
        item = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if not item:
            raise ConnectionGoneError(connection_id)
        if float(item.get("lease_until", {}).get("N", "0")) > now:
            raise BusyError(connection_id)
        version = int(item["version"]["N"])
        if not self._update(
            key,
            "SET lease_until = :until, version = :next",
            "version = :version",
            {
                ":until": {"N": repr(now + seconds)},
                ":version": {"N": str(version)},
                ":next": {"N": str(version + 1)},
            },
        ):
            raise BusyError(connection_id)  # changed since read: look again
        leased = connection_from_item(item)
        return Connection(
            leased.connection_id,
            leased.identity,
            leased.connected_at,
            leased.expires_at,
            leased.subscriptions,
            version + 1,
        )

    def commit(self, connection: Connection) -> None:
        """Write the subscriptions and end the lease (conditional on the leased version)."""
        sets: dict[str, list[str]] = {channel.value: [] for channel in Channel}
        for token, channels in sorted(connection.subscriptions.items()):
            for channel in channels:
                sets[channel.value].append(str(token))
        assignments = ["version = :next"]
        removals = ["lease_until"]
        values: dict[str, Any] = {
            ":version": {"N": str(connection.version)},
            ":next": {"N": str(connection.version + 1)},
        }
        for name, tokens in sets.items():
            if tokens:
                assignments.append(f"{name} = :{name}")
                values[f":{name}"] = {"NS": tokens}
            else:
                removals.append(name)  # DynamoDB has no empty sets
        if not self._update(
            connection_key(connection.connection_id),
            f"SET {', '.join(assignments)} REMOVE {', '.join(removals)}",
            "version = :version",
            values,
        ):
            if self.get(connection.connection_id) is None:
                raise ConnectionGoneError(connection.connection_id)
            raise BusyError(connection.connection_id)  # the lease expired and was taken

    def release(self, connection: Connection) -> None:
        """End the lease without a change; a lost race or a gone connection is fine."""
        self._update(
            connection_key(connection.connection_id),
            "SET version = :next REMOVE lease_until",
            "version = :version",
            {
                ":version": {"N": str(connection.version)},
                ":next": {"N": str(connection.version + 1)},
            },
        )
