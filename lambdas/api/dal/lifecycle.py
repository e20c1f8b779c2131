"""The order lifecycle in PostgreSQL (``trading`` schema, see migration 0006).

Intents are written before Kite is called and settled with its answer;
updates are stored once per identity whichever way they arrive, and the
latest state of each order is kept beside them. An update that carries a
tag whose intent's outcome was unknown settles that intent: the order did
reach Kite. The API's routes are synchronous (Powertools' resolver), so
each method runs its coroutine on the execution environment's one loop.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from lambdas.api.errors import ServiceUnavailableError
from lambdas.api.updates import OrderUpdate
from lambdas.common.runtime import Lazy, LoopRunner

T = TypeVar("T")


@dataclass(frozen=True)
class Intent:
    """What a write asks Kite to do, before it is asked."""

    user_id: str
    account_id: str
    idempotency_key: str
    operation: str
    request: dict[str, Any]
    item: int = 0
    kite_tag: str | None = None
    order_id: str | None = None


@dataclass(frozen=True)
class IntentRecord:
    """An intent as stored."""

    intent_id: int
    status: str
    kite_tag: str | None
    order_id: str | None
    trigger_id: int | None
    error_code: str | None
    error_message: str | None
    request: dict[str, Any]
    created_at: datetime


def _record(row: asyncpg.Record) -> IntentRecord:
    request = row["request"]
    return IntentRecord(
        intent_id=int(row["intent_id"]),
        status=str(row["status"]),
        kite_tag=row["kite_tag"],
        order_id=row["order_id"],
        trigger_id=row["trigger_id"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        request=json.loads(request) if isinstance(request, str) else dict(request),
        created_at=row["created_at"],
    )


class PostgresLifecycle:
    """Intents, updates and orders."""

    def __init__(self, pool: Lazy[asyncpg.Pool], runner: LoopRunner) -> None:
        self._pool = pool
        self._runner = runner

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self._runner.run(coro)
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
            # The database restarted or is unreachable: the next call opens a new pool.
            stale = self._pool.reset()
            if stale is not None:
                stale.terminate()
            raise ServiceUnavailableError() from exc

    # -- intents ----------------------------------------------------------------------------

    def record_intent(self, intent: Intent) -> tuple[IntentRecord, bool]:
        """Store ``intent`` as sent; returns the stored record and whether it is new.

        An intent already stored for the same user, key, operation and item is
        returned as it is (a retry after a crash or after the idempotency
        record expired): the caller resolves it instead of calling Kite again.
        """
        return self._run(self._record_intent(intent))

    async def _record_intent(self, intent: Intent) -> tuple[IntentRecord, bool]:
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "insert into trading.order_intents (user_id, account_id, idempotency_key, "
                "operation, item, kite_tag, request, status, order_id) "
                "values ($1, $2, $3, $4, $5, $6, $7::jsonb, 'sent', $8) "
                "on conflict (user_id, idempotency_key, operation, item) do nothing "
                "returning intent_id, status, kite_tag, order_id, trigger_id, error_code, "
                "error_message, request, created_at",
                intent.user_id,
                intent.account_id,
                intent.idempotency_key,
                intent.operation,
                intent.item,
                intent.kite_tag,
                json.dumps(intent.request, sort_keys=True),
                intent.order_id,
            )
            if row is not None:
                return _record(row), True
            row = await conn.fetchrow(
                "select intent_id, status, kite_tag, order_id, trigger_id, error_code, "
                "error_message, request, created_at from trading.order_intents "
                "where user_id = $1 and idempotency_key = $2 and operation = $3 and item = $4",
                intent.user_id,
                intent.idempotency_key,
                intent.operation,
                intent.item,
            )
            if row is None:  # deleted between the two statements: nothing does that
                raise RuntimeError("intent vanished")
            return _record(row), False

    def settle_intent(
        self,
        intent_id: int,
        status: str,
        *,
        order_id: str | None = None,
        trigger_id: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Record Kite's answer (or its absence) to an intent."""
        self._run(self._settle(intent_id, status, order_id, trigger_id, error_code, error_message))

    async def _settle(
        self,
        intent_id: int,
        status: str,
        order_id: str | None,
        trigger_id: int | None,
        error_code: str | None,
        error_message: str | None,
    ) -> None:
        pool = await self._pool.get()
        await pool.execute(
            "update trading.order_intents set status = $2, "
            "order_id = coalesce($3, order_id), trigger_id = coalesce($4, trigger_id), "
            "error_code = $5, error_message = $6, updated_at = now() where intent_id = $1",
            intent_id,
            status,
            order_id,
            trigger_id,
            error_code,
            error_message,
        )

    # -- updates ----------------------------------------------------------------------------

    def store_updates(self, updates: Sequence[OrderUpdate], source: str) -> list[bool]:
        """Store each update once; per update, whether it was new."""
        return self._run(self._store_updates(updates, source))

    async def _store_updates(self, updates: Sequence[OrderUpdate], source: str) -> list[bool]:
        pool = await self._pool.get()
        stored: list[bool] = []
        async with pool.acquire() as conn, conn.transaction():
            for update in updates:
                inserted = await conn.fetchval(
                    "insert into trading.order_updates (account_id, order_id, update_time, "
                    "status, filled_quantity, source, payload) "
                    "values ($1, $2, $3, $4, $5, $6, $7::jsonb) "
                    "on conflict do nothing returning true",
                    update.account_id,
                    update.order_id,
                    update.update_time,
                    update.status,
                    update.filled_quantity,
                    source,
                    json.dumps(update.payload, default=str),
                )
                stored.append(bool(inserted))
                if not inserted:
                    continue
                payload = update.payload
                await conn.execute(
                    "insert into trading.orders (account_id, order_id, status, tag, exchange, "
                    "tradingsymbol, transaction_type, quantity, filled_quantity, last_update_at, "
                    "state) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb) "
                    "on conflict (account_id, order_id) do update set status = excluded.status, "
                    "tag = coalesce(excluded.tag, trading.orders.tag), "
                    "quantity = excluded.quantity, filled_quantity = excluded.filled_quantity, "
                    "last_update_at = excluded.last_update_at, state = excluded.state "
                    "where excluded.last_update_at > trading.orders.last_update_at "
                    "or (excluded.last_update_at = trading.orders.last_update_at "
                    "and excluded.filled_quantity >= trading.orders.filled_quantity)",
                    update.account_id,
                    update.order_id,
                    update.status,
                    update.tag,
                    _text(payload.get("exchange")),
                    _text(payload.get("tradingsymbol")),
                    _text(payload.get("transaction_type")),
                    _number(payload.get("quantity")),
                    update.filled_quantity,
                    update.update_time,
                    json.dumps(payload, default=str),
                )
                if update.tag:
                    # The order reached Kite: an intent whose outcome was unknown is settled.
                    await conn.execute(
                        "update trading.order_intents set status = 'accepted', order_id = $3, "
                        "updated_at = now() where account_id = $1 and kite_tag = $2 "
                        "and operation = 'place' and status in ('sent', 'unknown')",
                        update.account_id,
                        update.tag,
                        update.order_id,
                    )
        return stored

    def unpublished(self, limit: int = 100) -> list[tuple[OrderUpdate, str]]:
        """Stored updates not yet on the bus, oldest first, with their source."""
        return self._run(self._unpublished(limit))

    async def _unpublished(self, limit: int) -> list[tuple[OrderUpdate, str]]:
        pool = await self._pool.get()
        rows = await pool.fetch(
            "select account_id, order_id, update_time, status, filled_quantity, source, payload "
            "from trading.order_updates where published_at is null "
            "order by received_at limit $1",
            limit,
        )
        out = []
        for row in rows:
            payload = row["payload"]
            payload = json.loads(payload) if isinstance(payload, str) else dict(payload)
            tag = payload.get("tag")
            out.append(
                (
                    OrderUpdate(
                        account_id=row["account_id"],
                        order_id=row["order_id"],
                        update_time=row["update_time"],
                        status=row["status"],
                        filled_quantity=float(row["filled_quantity"]),
                        tag=tag if isinstance(tag, str) else None,
                        payload=payload,
                    ),
                    str(row["source"]),
                )
            )
        return out

    def mark_published(self, updates: Sequence[OrderUpdate]) -> None:
        """Record that ``updates`` are on the bus."""
        if updates:
            self._run(self._mark_published(updates))

    async def _mark_published(self, updates: Sequence[OrderUpdate]) -> None:
        pool = await self._pool.get()
        await pool.executemany(
            "update trading.order_updates set published_at = now() where account_id = $1 "
            "and order_id = $2 and update_time = $3 and status = $4 and filled_quantity = $5",
            [
                (u.account_id, u.order_id, u.update_time, u.status, u.filled_quantity)
                for u in updates
            ],
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
