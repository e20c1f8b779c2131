"""The service's own loops: account discovery, readiness from supervised tasks."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag

from feed_container.service import Dependencies, FeedService
from feed_container.settings import FeedEnvironment, FeedSettings, OrderUpdatesQueueSettings
from ticker_adapters.credentials import CredentialNotFoundError, KiteSession
from ticker_adapters.settings import (
    KiteSettings,
    SubscriptionsTableSettings,
    TicksStreamSettings,
    VaultSettings,
)
from ticker_core.kite_wire import encode_text

KEY_ARN = "arn:aws:kms:ap-south-1:123456789012:key/8c1f2a3e-5d4b-4c6a-9e8f-0a1b2c3d"


class Vault:
    """Accounts with API credentials; per account a session, an error, or nothing yet."""

    def __init__(self, sessions: dict[str, KiteSession | Exception | None]) -> None:
        self.sessions = sessions

    def accounts(self) -> list[str]:
        return sorted(self.sessions)

    def session(self, account: str, *, force_refresh: bool = False) -> KiteSession:
        value = self.sessions[account]
        if value is None:
            raise CredentialNotFoundError(f"no session for {account}")
        if isinstance(value, Exception):
            raise value
        return value


class Pool:
    def __init__(self) -> None:
        self.added: list[str] = []

    def add_accounts(self, accounts: Iterable[str]) -> tuple[str, ...]:
        fresh = tuple(a for a in accounts if a not in self.added)
        self.added += fresh
        return fresh


def live_session() -> KiteSession:
    now = datetime.now(UTC)
    return KiteSession("key", secrets.token_hex(16), "AB1234", now, now + timedelta(hours=8))


def environment(queue_url: str | None = None) -> FeedEnvironment:
    return FeedEnvironment(
        feed=FeedSettings(),
        kite=KiteSettings(),
        vault=VaultSettings(kms_key_arn=KEY_ARN),
        ticks=TicksStreamSettings(name="ticks"),
        subscriptions=SubscriptionsTableSettings(name="subs"),
        order_updates=OrderUpdatesQueueSettings(url=queue_url),
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID" + secrets.token_hex(8))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secrets.token_hex(20))


@pytest.fixture
def service(aws_env: None) -> FeedService:
    return FeedService(environment(), Dependencies(kinesis_endpoint_url="http://127.0.0.1:9"))


async def test_one_unreadable_session_never_keeps_other_new_accounts_out(
    service: FeedService, caplog: pytest.LogCaptureFixture
) -> None:
    # Given three accounts reach the vault: one tampered (decryption fails with the
    # cipher's own error), one logged in, one not logged in yet
    service._vault_instance = Vault(
        {"tampered": InvalidTag(), "good": live_session(), "nologin": None}
    )
    pool = Pool()
    service.pool = pool  # type: ignore[assignment]
    # When the accounts loop looks
    with caplog.at_level(logging.WARNING, logger="feed_container.service"):
        added = await service.discover_accounts()
    # Then the logged-in account joins; the others wait, the unreadable one counted and logged
    assert added == ("good",)
    assert service.accounts == ("good",)
    assert service.accounts_waiting == ("nologin", "tampered")
    errors = service.metrics.value(
        "feed_account_session_errors_total", account="tampered", error="InvalidTag"
    )
    assert errors == 1
    assert [getattr(r, "account", None) for r in caplog.records] == ["tampered"]


async def test_readiness_names_a_task_that_failed_recently(service: FeedService) -> None:
    # Given a supervised loop that fails once
    async def broken() -> None:
        if not service.metrics.total("feed_task_failures_total"):
            raise RuntimeError("bug")

    await service.supervisor.spawn("emf", broken)
    # Then /readyz says so
    assert "task emf failed recently" in service.readiness()


def test_without_a_queue_order_messages_are_counted_and_dropped(service: FeedService) -> None:
    # Given no ORDER_UPDATES_QUEUE_URL
    assert service.order_updates is None
    # When Kite sends an order message, Then it is counted, and goes nowhere
    service.pipeline.on_text("a1", encode_text("order", {"order_id": "1", "status": "OPEN"}))
    assert service.metrics.value("feed_text_messages_total", account="a1", type="OrderUpdate") == 1


def test_with_a_queue_order_messages_are_queued_for_it(aws_env: None) -> None:
    # Given ORDER_UPDATES_QUEUE_URL set
    queue_url = "https://sqs.ap-south-1.amazonaws.com/123456789012/order-updates"
    service = FeedService(
        environment(queue_url), Dependencies(kinesis_endpoint_url="http://127.0.0.1:9")
    )
    # When Kite sends an order message
    service.pipeline.on_text("a1", encode_text("order", {"order_id": "1", "status": "OPEN"}))
    # Then it waits for SQS (nothing is sent before the service runs)
    assert service.order_updates is not None
    assert service.order_updates.pending == 1
    assert service.metrics.value("feed_order_updates_pending") == 1
