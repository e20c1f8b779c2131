"""The feed's status record: what it plans and streams, written often, read by the API.

The feed container writes one record per running instance every few
seconds; the API's status route and accounts list read them. The record
says, for the desired set the feed last applied: how many instruments are
desired, how many ride on a connected WebSocket (streaming), how many no
connection had room for (not fitted, with a sample of their tokens), and per
account each connection's state and load, plus the accounts waiting for a
Kite login. A reader judges freshness by ``written_at`` against the writer's
own ``interval_seconds``: a feed that stopped writing is a feed that
stopped, whatever its last record said.

The records live in the desired-subscriptions table under their own
partition key (``STATUS`` / instance id), beside what they report on; the
subscription store never reads that partition. Each item expires by TTL
(``expires_at``) an hour after it was written, so a replaced task's record
goes away on its own. Shared by the feed container (writer) and the API
(reader); imports only the standard library (the DynamoDB client is passed in).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FORMAT_VERSION = 1
STATUS_PARTITION = "STATUS"
TTL_ATTRIBUTE = "expires_at"
RECORD_LIFETIME = timedelta(hours=1)
MAX_SAMPLE = 100
"""Tokens listed in ``not_fitted_sample`` (the count is always exact)."""
STALE_AFTER_INTERVALS = 3
"""A record older than this many of its writer's intervals is stale."""


class FeedStatusError(ValueError):
    """A stored status record that cannot be read (another version, or malformed)."""


@dataclass(frozen=True)
class ConnectionStatus:
    """One WebSocket slot of an account."""

    index: int
    connected: bool
    instruments: int


@dataclass(frozen=True)
class AccountStatus:
    """One account's connections, as the feed holds them."""

    account_id: str
    connections: tuple[ConnectionStatus, ...] = ()

    @property
    def connections_open(self) -> int:
        """Connections streaming now."""
        return sum(1 for c in self.connections if c.connected)

    @property
    def instruments(self) -> int:
        """Instruments assigned to this account's connections."""
        return sum(c.instruments for c in self.connections)

    @property
    def streaming(self) -> int:
        """Instruments on this account's connected connections."""
        return sum(c.instruments for c in self.connections if c.connected)


@dataclass(frozen=True)
class FeedStatus:
    """One feed instance's plan and state at ``written_at``."""

    instance: str
    written_at: datetime
    started_at: datetime
    interval_seconds: float
    generation: int | None
    """The desired-subscriptions generation the plan reflects (None: none read yet)."""
    desired: int
    streaming: int
    not_fitted: int
    not_fitted_sample: tuple[int, ...] = ()
    accounts: tuple[AccountStatus, ...] = ()
    accounts_waiting: tuple[str, ...] = ()
    """Accounts with API credentials but no live Kite session yet."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def age_seconds(self, now: datetime) -> float:
        """Seconds since the record was written."""
        return max(0.0, (now - self.written_at).total_seconds())

    def is_stale(self, now: datetime) -> bool:
        """Whether the writer has missed several of its own intervals."""
        return self.age_seconds(now) > STALE_AFTER_INTERVALS * max(self.interval_seconds, 1.0)

    def account(self, account_id: str) -> AccountStatus | None:
        """The status of one account's connections, if the feed holds it."""
        return next((a for a in self.accounts if a.account_id == account_id), None)

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "instance": self.instance,
                "written_at": self.written_at.isoformat(),
                "started_at": self.started_at.isoformat(),
                "interval_seconds": self.interval_seconds,
                "generation": self.generation,
                "desired": self.desired,
                "streaming": self.streaming,
                "not_fitted": self.not_fitted,
                "not_fitted_sample": list(self.not_fitted_sample[:MAX_SAMPLE]),
                "accounts": [
                    {
                        "account_id": a.account_id,
                        "connections": [
                            {
                                "index": c.index,
                                "connected": c.connected,
                                "instruments": c.instruments,
                            }
                            for c in a.connections
                        ],
                    }
                    for a in self.accounts
                ],
                "accounts_waiting": list(self.accounts_waiting),
                "extra": dict(self.extra),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> FeedStatus:
        """The record from its stored form; :class:`FeedStatusError` when it is not one."""
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT_VERSION:
                raise FeedStatusError(f"unknown status format {raw.get('format')!r}")
            return cls(
                instance=str(raw["instance"]),
                written_at=_aware(raw["written_at"]),
                started_at=_aware(raw["started_at"]),
                interval_seconds=float(raw["interval_seconds"]),
                generation=None if raw["generation"] is None else int(raw["generation"]),
                desired=int(raw["desired"]),
                streaming=int(raw["streaming"]),
                not_fitted=int(raw["not_fitted"]),
                not_fitted_sample=tuple(int(t) for t in raw["not_fitted_sample"]),
                accounts=tuple(
                    AccountStatus(
                        str(a["account_id"]),
                        tuple(
                            ConnectionStatus(
                                int(c["index"]), bool(c["connected"]), int(c["instruments"])
                            )
                            for c in a["connections"]
                        ),
                    )
                    for a in raw["accounts"]
                ),
                accounts_waiting=tuple(str(a) for a in raw["accounts_waiting"]),
                extra=dict(raw.get("extra") or {}),
            )
        except FeedStatusError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FeedStatusError("malformed status record") from exc


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("naive timestamp")
    return value


class FeedStatusStore:
    """The status records in the desired-subscriptions table (partition ``STATUS``)."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    def put(self, status: FeedStatus) -> None:
        """Write (replace) this instance's record."""
        expires = int((status.written_at + RECORD_LIFETIME).timestamp())
        self._db.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": STATUS_PARTITION},
                "sk": {"S": status.instance},
                "status": {"S": status.to_json()},
                TTL_ATTRIBUTE: {"N": str(expires)},
            },
        )

    def read_all(self) -> list[FeedStatus]:
        """Every instance's latest record, newest first (unreadable ones are skipped)."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": STATUS_PARTITION}},
        )
        records = []
        for page in pages:
            for item in page["Items"]:
                try:
                    records.append(FeedStatus.from_json(item["status"]["S"]))
                except (FeedStatusError, KeyError):
                    continue
        return sorted(records, key=lambda r: r.written_at, reverse=True)

    def latest(self) -> FeedStatus | None:
        """The newest record (None when there is none); freshness is the reader's call."""
        records = self.read_all()
        return records[0] if records else None
