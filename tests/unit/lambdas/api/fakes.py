"""In-memory stand-ins for the API function's dependencies (no sockets)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import (
    STATUS_CONSTANTS,
    BasePersistenceLayer,
    DataRecord,
)

from lambdas.api.app import ApiApp, build_app
from lambdas.api.broker import KiteApi
from lambdas.api.context import Dependencies
from lambdas.api.dal.lifecycle import Intent, IntentRecord
from lambdas.api.errors import KiteCallError, KiteFailureKind, OrderRateLimitedError
from lambdas.api.idempotency import IdempotentWrites
from lambdas.api.ingest import UpdateIngest
from lambdas.api.logic import ResolveSettings, Trading
from lambdas.api.models import Grant
from lambdas.api.updates import OrderUpdate
from lambdas.api.validation import OrderRules
from sandbox.api_gateway import proxy_event
from tests.factories import derivative, index_instrument
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType, instrument_token

TODAY = date(2026, 11, 30)
ACCOUNT = "AB1234"
OTHER_ACCOUNT = "ZZ9999"
TRADER = "sub-trader"
VIEWER = "sub-viewer"
ADMIN = "sub-admin"


def equity(symbol: str, exchange_token: int, *, tick: float = 0.05) -> Instrument:
    """An NSE equity."""
    return Instrument(
        instrument_token=instrument_token(exchange_token, "NSE"),
        exchange_token=exchange_token,
        tradingsymbol=symbol,
        name=symbol,
        last_price=0.0,
        expiry=None,
        strike=0.0,
        tick_size=tick,
        lot_size=1,
        instrument_type=InstrumentType.EQ,
        segment="NSE",
        exchange="NSE",
    )


NIFTY_FUT = derivative("NIFTY", date(2026, 12, 29), "FUT", 50_001, lot_size=75)
EXPIRED_FUT = derivative("NIFTY", date(2026, 11, 24), "FUT", 50_002, lot_size=75)
REGISTRY = InstrumentRegistry(
    [equity("INFY", 1594), equity("RELIANCE", 2885), NIFTY_FUT, EXPIRED_FUT,
     index_instrument("NIFTY 50", 256_265)]
)  # fmt: skip


class MemoryPersistence(BasePersistenceLayer):
    """Powertools' idempotency records in a dict, with DynamoDB's conditional-put semantics."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, DataRecord] = {}
        self._lock = threading.Lock()

    def _get_record(self, idempotency_key: str) -> DataRecord:
        with self._lock:
            record = self.records.get(idempotency_key)
        if record is None:
            raise IdempotencyItemNotFoundError
        return record

    def _put_record(self, data_record: DataRecord) -> None:
        now = dt.datetime.now()
        with self._lock:
            existing = self.records.get(data_record.idempotency_key)
            if existing is not None:
                expired = existing.expiry_timestamp and existing.expiry_timestamp < now.timestamp()
                progress_expired = (
                    existing.status == STATUS_CONSTANTS["INPROGRESS"]
                    and existing.in_progress_expiry_timestamp is not None
                    and existing.in_progress_expiry_timestamp < now.timestamp() * 1000
                )
                if not (expired or progress_expired):
                    # as the DynamoDB layer does with the item its failed put returns
                    self._validate_payload(data_payload=data_record, stored_data_record=existing)
                    raise IdempotencyItemAlreadyExistsError(old_data_record=existing)
            self.records[data_record.idempotency_key] = data_record

    def _update_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self.records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self.records.pop(data_record.idempotency_key, None)


@dataclass
class FakeKite:
    """A Kite account's book: place/modify/cancel record calls; failures can be scripted."""

    orders_book: list[dict[str, Any]] = field(default_factory=list)
    placed: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_next: list[KiteCallError] = field(default_factory=list)
    accept_before_failing: bool = False
    """With a scripted failure on place: put the order in the book first (accepted, answer lost)."""
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    def _fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def place_order(self, **params: Any) -> str:
        self.calls.append("place_order")
        if self.fail_next and not self.accept_before_failing:
            raise self.fail_next.pop(0)
        order_id = f"26113000{next(self._ids)}"
        self.placed.append(params)
        self.orders_book.append({"order_id": order_id, "status": "OPEN", **params})
        self._fail()  # accepted, and then the answer was lost
        return order_id

    def modify_order(self, variety: str, order_id: str, **params: Any) -> str:
        self.calls.append("modify_order")
        self._fail()
        return order_id

    def cancel_order(self, variety: str, order_id: str, parent_order_id: str | None = None) -> str:
        self.calls.append("cancel_order")
        self._fail()
        return order_id

    def exit_order(self, variety: str, order_id: str, parent_order_id: str | None = None) -> str:
        self.calls.append("exit_order")
        self._fail()
        return order_id

    def orders(self) -> list[dict[str, Any]]:
        self.calls.append("orders")
        return [dict(o) for o in self.orders_book]

    def order_history(self, order_id: str) -> list[dict[str, Any]]:
        self._fail()
        return [o for o in self.orders_book if o["order_id"] == order_id]

    def trades(self) -> list[dict[str, Any]]:
        return []

    def order_trades(self, order_id: str) -> list[dict[str, Any]]:
        return []

    def positions(self) -> dict[str, Any]:
        self._fail()
        return {"net": [], "day": []}

    def holdings(self) -> list[dict[str, Any]]:
        self._fail()
        return [
            {
                "tradingsymbol": "INFY",
                "exchange": "NSE",
                "quantity": 5,
                "mtf": {"quantity": 0, "used_quantity": 0},
                "a_field_kite_adds_later": {"x": 1},
            }
        ]

    def margins(self, segment: str | None = None) -> dict[str, Any]:
        return {"equity": {"enabled": True, "net": 1.0}, "commodity": {"enabled": False}}

    def profile(self) -> dict[str, Any]:
        self._fail()
        return {"user_id": ACCOUNT, "user_name": "Trader", "meta": {"silo": "x"}}

    def place_gtt(self, *args: Any) -> dict[str, Any]:
        self.calls.append("place_gtt")
        self._fail()
        return {"trigger_id": 123}

    def get_gtts(self) -> list[dict[str, Any]]:
        return []


class FakeBroker:
    """KiteBroker's contract over FakeKite books."""

    def __init__(self, books: dict[str, FakeKite]) -> None:
        self.books = books
        self.session_expired = False

    def call(self, account_id: str, operation: Callable[[KiteApi], Any]) -> Any:
        book = self.books.get(account_id)
        if book is None or self.session_expired:
            raise KiteCallError(KiteFailureKind.LOGIN_REQUIRED, "no session")
        return operation(book)  # type: ignore[arg-type]


class MemoryLifecycle:
    """The lifecycle store's intents and updates in memory."""

    def __init__(self) -> None:
        self.intents: dict[tuple[str, str, str, int], IntentRecord] = {}
        self.updates: dict[tuple[Any, ...], tuple[OrderUpdate, str, bool]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def record_intent(self, intent: Intent) -> tuple[IntentRecord, bool]:
        key = (intent.user_id, intent.idempotency_key, intent.operation, intent.item)
        with self._lock:
            if key in self.intents:
                return self.intents[key], False
            record = IntentRecord(
                intent_id=next(self._ids),
                status="sent",
                kite_tag=intent.kite_tag,
                order_id=intent.order_id,
                trigger_id=None,
                error_code=None,
                error_message=None,
                request=intent.request,
                created_at=datetime.now(UTC),
            )
            self.intents[key] = record
            return record, True

    def settle_intent(self, intent_id: int, status: str, **changes: Any) -> None:
        with self._lock:
            for key, record in self.intents.items():
                if record.intent_id == intent_id:
                    values = {k: v for k, v in changes.items() if v is not None}
                    self.intents[key] = IntentRecord(
                        **{**record.__dict__, "status": status, **values}
                    )

    def store_updates(self, updates: Sequence[OrderUpdate], source: str) -> list[bool]:
        out = []
        for u in updates:
            key = (u.account_id, u.order_id, u.update_time, u.status, u.filled_quantity)
            new = key not in self.updates
            if new:
                self.updates[key] = (u, source, False)
            out.append(new)
        return out

    def unpublished(self, limit: int = 100) -> list[tuple[OrderUpdate, str]]:
        return [(u, s) for u, s, done in self.updates.values() if not done][:limit]

    def mark_published(self, updates: Sequence[OrderUpdate]) -> None:
        for u in updates:
            key = (u.account_id, u.order_id, u.update_time, u.status, u.filled_quantity)
            update, source, _ = self.updates[key]
            self.updates[key] = (update, source, True)


class MemoryPublisher:
    """The bus: records what was put on it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, updates: Sequence[tuple[OrderUpdate, str]]) -> list[OrderUpdate]:
        self.events.extend(u.event_detail(s) for u, s in updates)
        return [u for u, _ in updates]


class CountingLimiter:
    """Counts slots taken; refuses once ``capacity`` is used up."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.taken = 0

    def acquire(self, account_id: str) -> float:
        if self.taken >= self.capacity:
            raise OrderRateLimitedError(headers={"Retry-After": "1"})
        self.taken += 1
        return 0.0


class MemoryGrants:
    """Grants in a dict."""

    def __init__(self, grants: dict[tuple[str, str], str]) -> None:
        self.grants = dict(grants)

    def role(self, user_id: str, account_id: str) -> str | None:
        return self.grants.get((user_id, account_id))

    def put(self, user_id: str, account_id: str, role: str, granted_by: str) -> Grant:
        self.grants[(user_id, account_id)] = role
        return Grant(user_id=user_id, account_id=account_id, role=role)  # type: ignore[arg-type]

    def delete(self, user_id: str, account_id: str) -> bool:
        return self.grants.pop((user_id, account_id), None) is not None

    def for_user(self, user_id: str) -> list[Grant]:
        return [g for g in self.all() if g.user_id == user_id]

    def all(self) -> list[Grant]:
        return [
            Grant(user_id=u, account_id=a, role=r)  # type: ignore[arg-type]
            for (u, a), r in sorted(self.grants.items())
        ]


@dataclass
class Rig:
    """An ApiApp over fakes, and the fakes to look at."""

    app: ApiApp
    broker: FakeBroker
    kite: FakeKite
    lifecycle: MemoryLifecycle
    persistence: MemoryPersistence
    limiter: CountingLimiter
    grants: MemoryGrants
    publisher: MemoryPublisher
    secrets: dict[str, str]

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        user: str | None = TRADER,
        groups: str = "",
        headers: dict[str, str] | None = None,
        raw_body: bytes | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One request through the app as API Gateway would pass it."""
        path_only, _, query = path.partition("?")
        pairs = list((headers or {}).items())
        data = (
            raw_body
            if raw_body is not None
            else (json.dumps(body).encode() if body is not None else b"")
        )
        if data and not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
        claims = None
        if user is not None:
            claims = {"sub": user, "cognito:username": user, "token_use": "id"}
            if groups:
                claims["cognito:groups"] = groups
        event = proxy_event(
            method=method, path=path_only, query=query, headers=pairs, body=data, claims=claims
        )
        response = self.app(event, None)
        flat = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
        flat.update(response.get("headers") or {})
        text = response.get("body") or ""
        return int(response["statusCode"]), (json.loads(text) if text else {}), flat


def rig(
    *,
    cors_origins: Sequence[str] = ("https://app.example.com",),
    market_protection_default: float | None = None,
    limiter_capacity: int = 1000,
    max_body_bytes: int = 16 * 1024,
) -> Rig:
    """An app with a trader (trade) and a viewer (view) on ACCOUNT."""
    kite = FakeKite()
    lifecycle = MemoryLifecycle()
    persistence = MemoryPersistence()
    limiter = CountingLimiter(limiter_capacity)
    grants = MemoryGrants({(TRADER, ACCOUNT): "trade", (VIEWER, ACCOUNT): "view"})
    publisher = MemoryPublisher()
    secrets = {ACCOUNT: "s3cr3t-for-tests"}
    broker = FakeBroker({ACCOUNT: kite})
    trading = Trading(
        broker=broker,
        lifecycle=lifecycle,
        limiter=limiter,
        registry=lambda: REGISTRY,
        rules=OrderRules(market_protection_default=market_protection_default),
        today=lambda: TODAY,
        sleep=lambda s: None,
        resolve=ResolveSettings(attempts=2, delay_seconds=0),
    )
    deps = Dependencies(
        trading=trading,
        grants=grants,
        writes=IdempotentWrites(persistence),
        updates=UpdateIngest(lifecycle, publisher),
        api_secret=secrets.get,
    )
    app = ApiApp(
        build_app(deps, list(cors_origins)),
        cors_origins=cors_origins,
        max_body_bytes=max_body_bytes,
    )
    return Rig(app, broker, kite, lifecycle, persistence, limiter, grants, publisher, secrets)


LIMIT_BUY = {
    "exchange": "NSE",
    "tradingsymbol": "INFY",
    "transaction_type": "BUY",
    "quantity": 1,
    "product": "CNC",
    "order_type": "LIMIT",
    "price": 1500.05,
}
