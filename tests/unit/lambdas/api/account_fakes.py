"""In-memory stand-ins for the accounts, login, subscriptions and market routes (no sockets)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from lambdas.api.accounts import Accounts, ExchangedSession, LoginSettings
from lambdas.api.app import TRADING_ROUTERS, ApiApp, build_app
from lambdas.api.context import Dependencies
from lambdas.api.dal.accounts import ACTIVE, RETIRED, AccountRecord
from lambdas.api.dal.market import MinuteSeries
from lambdas.api.errors import KiteCallError
from lambdas.api.market import MarketData, MarketSettings
from lambdas.api.routers import market as market_router
from lambdas.api.subscriptions import StreamingLimits, SubscriptionService
from sandbox.api_gateway import proxy_event
from tests.unit.lambdas.api.fakes import MemoryGrants
from ticker_adapters.credentials import (
    ApiCredentials,
    CredentialNotFoundError,
    KiteSession,
)
from ticker_adapters.feed_status import FeedStatus
from ticker_adapters.subscription_store import (
    InstrumentEntry,
    StoredSubscriptions,
    SubscriptionChange,
)
from ticker_core.instruments import InstrumentRegistry

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # 08:30 IST
ADMIN = "sub-admin"
TRADER = "sub-trader"
STRANGER = "sub-stranger"
ACCOUNT = "AB1234"
API_KEY = secrets.token_hex(8)  # generated: no key is committed, not even a fake one


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class MemoryRegistry:
    """The account registry's contract in dicts."""

    def __init__(self) -> None:
        self.records: dict[str, AccountRecord] = {}
        self.claimed: set[str] = set()

    def get(self, account_id: str) -> AccountRecord | None:
        return self.records.get(account_id)

    def all(self) -> list[AccountRecord]:
        return list(self.records.values())

    def register(self, account_id: str, api_key: str, by: str, at: datetime) -> AccountRecord:
        held = self.records.get(account_id)
        record = AccountRecord(account_id, api_key, ACTIVE, at, by)
        if held is not None and held.api_key == api_key:
            record = replace(
                record,
                last_login_at=held.last_login_at,
                last_login_by=held.last_login_by,
                session_expires_at=held.session_expires_at,
                login_required_since=held.login_required_since,
            )
        self.records[account_id] = record
        return record

    def retire(self, account_id: str, by: str, at: datetime) -> AccountRecord | None:
        held = self.records.get(account_id)
        if held is None:
            return None
        record = replace(
            held,
            state=RETIRED,
            retired_at=at,
            retired_by=by,
            session_expires_at=None,
            login_required_since=None,
        )
        self.records[account_id] = record
        return record

    def record_login(
        self, account_id: str, by: str, at: datetime, expires_at: datetime
    ) -> AccountRecord | None:
        held = self.records.get(account_id)
        if held is None or not held.active:
            return None
        record = replace(
            held,
            last_login_at=at,
            last_login_by=by,
            session_expires_at=expires_at,
            login_required_since=None,
        )
        self.records[account_id] = record
        return record

    def mark_login_required(self, account_id: str, since: datetime) -> None:
        held = self.records.get(account_id)
        if held is not None and held.active and held.login_required_since is None:
            self.records[account_id] = replace(held, login_required_since=since)

    def claim_state(self, nonce: str, expires_at: datetime) -> bool:
        if nonce in self.claimed:
            return False
        self.claimed.add(nonce)
        return True


class MemoryVault:
    """The credential vault's contract in dicts."""

    def __init__(self) -> None:
        self.api: dict[str, ApiCredentials] = {}
        self.sessions: dict[str, KiteSession] = {}

    def put_api_credentials(self, account_id: str, credentials: ApiCredentials) -> None:
        self.api[account_id] = credentials

    def api_credentials(self, account_id: str, *, force_refresh: bool = False) -> ApiCredentials:
        try:
            return self.api[account_id]
        except KeyError:
            raise CredentialNotFoundError(account_id) from None

    def put_session(self, account_id: str, session: KiteSession) -> None:
        self.sessions[account_id] = session

    def session(self, account_id: str, *, force_refresh: bool = False) -> KiteSession:
        try:
            return self.sessions[account_id]
        except KeyError:
            raise CredentialNotFoundError(account_id) from None

    def delete_account(self, account_id: str) -> None:
        self.api.pop(account_id, None)
        self.sessions.pop(account_id, None)


@dataclass
class FakeExchange:
    """Kite's request-token exchange: answers for the tokens it issued, refuses the rest."""

    user_ids: dict[str, str] = field(default_factory=dict)
    """api_key -> the Kite user its logins log in."""
    issued: dict[str, str] = field(default_factory=dict)
    """request_token -> the api_key it was issued to."""
    failure: KiteCallError | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def issue(self, api_key: str) -> str:
        token = secrets.token_urlsafe(12)
        self.issued[token] = api_key
        return token

    def exchange(self, api_key: str, api_secret: str, request_token: str) -> ExchangedSession:
        from lambdas.api.errors import KiteFailureKind

        self.calls.append((api_key, request_token))
        if self.failure is not None:
            raise self.failure
        if self.issued.pop(request_token, None) != api_key:
            raise KiteCallError(KiteFailureKind.LOGIN_REQUIRED, "Token is invalid or has expired.")
        return ExchangedSession(secrets.token_urlsafe(16), self.user_ids.get(api_key, ACCOUNT))


class MemorySubscriptionStore:
    """The subscription store's contract in a list."""

    def __init__(self) -> None:
        self.generation_value = 0
        self.instruments: dict[tuple[int, str], str] = {}
        self.windows: dict[tuple[str, str], Any] = {}
        self.changes: list[SubscriptionChange] = []

    def generation(self) -> int:
        return self.generation_value

    def entries(self) -> StoredSubscriptions:
        return StoredSubscriptions(
            self.generation_value,
            tuple(InstrumentEntry(t, m, o) for (t, o), m in sorted(self.instruments.items())),
            tuple(self.windows.values()),
        )

    def change(self, change: SubscriptionChange) -> int:
        self.changes.append(change)
        for token in change.unsubscribe:
            self.instruments.pop((token, change.owner), None)
        for token, mode in change.subscribe:
            self.instruments[(token, change.owner)] = mode
        for underlying in change.remove_atm_windows:
            self.windows.pop((underlying, change.owner), None)
        for rule in change.atm_windows:
            self.windows[(rule.underlying, rule.owner)] = rule
        self.generation_value += 1
        return 1


@dataclass
class FakeMarketStore:
    """Stored ticks and minute bars, as the dal returns them."""

    ticks: dict[int, dict[str, Any]] = field(default_factory=dict)
    bars: dict[int, MinuteSeries] = field(default_factory=dict)
    bar_calls: list[tuple[tuple[int, ...], datetime, datetime]] = field(default_factory=list)

    def latest_ticks(self, tokens: Any, since: datetime) -> dict[int, Any]:
        found = {t: self.ticks[t] for t in tokens if t in self.ticks}
        return {t: row for t, row in found.items() if row["ts"] >= since}

    def latest_prices(self, tokens: Any, since: datetime) -> dict[int, Any]:
        return self.latest_ticks(tokens, since)

    def minute_bars(self, tokens: Any, start: datetime, end: datetime) -> list[MinuteSeries]:
        self.bar_calls.append((tuple(tokens), start, end))
        out = []
        for token in tokens:
            bars = self.bars.get(token, MinuteSeries.empty())
            out.append(
                bars.take((bars.minute >= start.timestamp()) & (bars.minute < end.timestamp()))
            )
        return out


@dataclass
class FakeHistory:
    """Kite's historical API: canned candles, or a failure."""

    candles_by_token: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    failure: KiteCallError | None = None
    calls: list[tuple[int, datetime, datetime, str]] = field(default_factory=list)

    def candles(
        self, instrument_token: int, start: datetime, end: datetime, interval: str
    ) -> list[dict[str, Any]]:
        self.calls.append((instrument_token, start, end, interval))
        if self.failure is not None:
            raise self.failure
        return list(self.candles_by_token.get(instrument_token, []))


@dataclass
class AccountRig:
    """An ApiApp over the fakes, and the fakes to look at."""

    app: ApiApp
    market_app: ApiApp
    registry: MemoryRegistry
    vault: MemoryVault
    exchange: FakeExchange
    grants: MemoryGrants
    store: MemorySubscriptionStore
    market_store: FakeMarketStore
    history: FakeHistory
    statuses: list[FeedStatus]
    clock: Clock
    audit: list[tuple[str, dict[str, str]]]
    state_key: bytes
    accounts: Accounts

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        user: str | None = ADMIN,
        groups: str | None = None,
        market: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        """One request through the app as API Gateway would pass it (JSON or text body)."""
        path_only, _, query = path.partition("?")
        data = json.dumps(body).encode() if body is not None else b""
        headers = [("Content-Type", "application/json")] if data else []
        claims = None
        if user is not None:
            claims = {"sub": user, "cognito:username": user, "token_use": "id"}
            group = groups if groups is not None else ("admin" if user == ADMIN else "")
            if group:
                claims["cognito:groups"] = group
        event = proxy_event(
            method=method, path=path_only, query=query, headers=headers, body=data, claims=claims
        )
        response = (self.market_app if market else self.app)(event, None)
        flat = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
        flat.update(response.get("headers") or {})
        text = response.get("body") or ""
        content_type = next((v for k, v in flat.items() if k.lower() == "content-type"), "")
        parsed: Any = json.loads(text) if text and "json" in content_type else text
        return int(response["statusCode"]), parsed, flat


def account_rig(
    *,
    registry: InstrumentRegistry | None = None,
    limits: StreamingLimits | None = None,
    rate: float = 0.065,
) -> AccountRig:
    """An app with an administrator, a trader (trade on ACCOUNT) and a stranger."""
    from tests.unit.lambdas.api.fakes import REGISTRY

    clock = Clock()
    registry_store = MemoryRegistry()
    vault = MemoryVault()
    exchange = FakeExchange()
    grants = MemoryGrants({(TRADER, ACCOUNT): "trade"})
    store = MemorySubscriptionStore()
    statuses: list[FeedStatus] = []
    audit: list[tuple[str, dict[str, str]]] = []
    state_key = secrets.token_bytes(32)
    instruments = registry or REGISTRY
    accounts = Accounts(
        registry=registry_store,
        vault=vault,
        grants=grants,
        state_key=lambda: state_key,
        exchange=exchange,
        feed_status=lambda: statuses[0] if statuses else None,
        settings=LoginSettings("https://kite.example.com/connect/login", timedelta(minutes=10)),
        clock=clock,
        audit=lambda event, fields: audit.append((event, fields)),
    )
    subscriptions = SubscriptionService(
        store=store,
        registry=lambda: instruments,
        active_accounts=accounts.active_count,
        feed_statuses=lambda: list(statuses),
        limits=limits or StreamingLimits(),
        now=clock,
    )
    market_store = FakeMarketStore()
    history = FakeHistory()
    market = MarketData(
        registry=lambda: instruments,
        store=market_store,
        history=history,
        settings=MarketSettings(rate=rate),
        clock=clock,
    )
    inert = cast(Any, None)
    deps = Dependencies(
        trading=inert,
        grants=grants,
        writes=inert,
        updates=inert,
        api_secret=lambda _: None,
        accounts=accounts,
        subscriptions=subscriptions,
        market=market,
    )
    app = ApiApp(build_app(deps, routers=TRADING_ROUTERS))
    market_app = ApiApp(build_app(deps, routers=(market_router,)))
    return AccountRig(
        app, market_app, registry_store, vault, exchange, grants, store, market_store,
        history, statuses, clock, audit, state_key, accounts,
    )  # fmt: skip
