"""Accounts, the daily Kite login and subscriptions through the local API Gateway.

Against kite_sim (its login redirect and ``POST /session/token``), moto's
server (the vault, the registry, the subscriptions table, EventBridge) and
the API's functions in worker processes. The stack's accounts were
registered and logged in through these very routes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import kiteconnect
import pytest

from lambdas.api.login_state import issue
from sandbox.accounts import fetch, login
from sandbox.api_stack import Stack, api_stack
from sandbox.moto_server import MotoServer
from sandbox.postgres import ConnectionInfo
from sandbox.provision import client
from ticker_adapters.feed_status import (
    AccountStatus,
    ConnectionStatus,
    FeedStatus,
    FeedStatusStore,
)
from ticker_adapters.subscription_store import SubscriptionStore

pytestmark = pytest.mark.integration

INSTRUMENTS_PER_CONNECTION = 50  # capacity: 2 accounts x 3 x 50 = 300
KEY = secrets.token_hex(8)  # an API key for the extra accounts (generated, never committed)


def fake_secret() -> str:
    """A freshly generated stand-in for an API secret."""
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, postgres: ConnectionInfo) -> Iterator[Stack]:
    extra = {"API_INSTRUMENTS_PER_CONNECTION": str(INSTRUMENTS_PER_CONNECTION)}
    with api_stack(moto_server, postgres, environments=2, extra_env=extra) as running:
        yield running


def admin(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
    return stack.call(method, path, token=stack.api.admin.id_token, body=body)


def session_version(stack: Stack, account_id: str) -> str | None:
    secrets = client(stack.aws, "secretsmanager")
    name = f"{stack.resources.names.secrets_prefix}/{account_id}/session"
    try:
        return str(secrets.describe_secret(SecretId=name)["VersionIdsToStages"])
    except secrets.exceptions.ResourceNotFoundException:
        return None


def kite_request_token(stack: Stack, api_key: str, state: str = "x") -> str:
    """A request token from Kite's (the simulator's) login, as its redirect carries it."""
    query = f"api_key={api_key}&v=3&redirect_params={quote(f'state={state}')}"
    answer = fetch("GET", f"{stack.simulator.rest_url}/connect/login?{query}")
    return parse_qs(urlsplit(answer.location).query)["request_token"][0]


def start_login(stack: Stack, account_id: str, token: str | None = None) -> str:
    """The state of a login started through the API."""
    answer = fetch(
        "GET",
        f"{stack.api.url}/accounts/{account_id}/kite/login",
        token=token or stack.api.admin.id_token,
    )
    assert answer.status == 302, answer.body
    redirect_params = parse_qs(urlsplit(answer.location).query)["redirect_params"][0]
    return parse_qs(redirect_params)["state"][0]


def callback(stack: Stack, state: str, request_token: str, status: str = "success") -> Any:
    query = (
        f"action=login&type=login&status={status}&request_token={quote(request_token)}"
        f"&state={quote(state)}"
    )
    return fetch("GET", f"{stack.api.url}/kite/login/callback?{query}")


# --------------------------------------------------------------------------- accounts


def test_the_stacks_accounts_were_logged_in_through_the_api(stack: Stack) -> None:
    status, body, _ = admin(stack, "GET", "/admin/accounts")
    assert status == 200
    accounts = {a["account_id"]: a for a in body["data"]["accounts"]}
    assert set(accounts) == {a.user_id for a in stack.accounts}
    for account in stack.accounts:
        shown = accounts[account.user_id]
        assert (shown["state"], shown["api_key"]) == ("active", account.api_key)
        assert shown["session"]["logged_in"] is True
        assert shown["session"]["last_login_by"] == stack.api.admin.sub
        assert account.api_secret not in json.dumps(body)
    # and the trading routes work on the session the login stored
    status, body, _ = stack.trader_call("GET", f"/accounts/{stack.account}/portfolio/positions")
    assert status == 200


def test_register_list_get_and_retire_an_account(stack: Stack) -> None:
    path = "/admin/accounts/EXTRA01"
    key = secrets.token_hex(8)
    status, body, _ = admin(stack, "PUT", path, {"api_key": key, "api_secret": fake_secret()})
    assert status == 200
    assert body["data"]["session"]["login_required"] is True
    assert admin(stack, "GET", path)[1]["data"]["api_key"] == key
    vault_names = {
        s["Name"] for s in client(stack.aws, "secretsmanager").list_secrets()["SecretList"]
    }
    assert f"{stack.resources.names.secrets_prefix}/EXTRA01/api" in vault_names
    # When it is retired
    status, body, _ = admin(stack, "DELETE", path)
    # Then its secret is gone from the vault and it is listed as retired
    assert (status, body["data"]["state"]) == (200, "retired")
    vault_names = {
        s["Name"] for s in client(stack.aws, "secretsmanager").list_secrets()["SecretList"]
    }
    assert f"{stack.resources.names.secrets_prefix}/EXTRA01/api" not in vault_names
    assert admin(stack, "GET", path)[1]["data"]["state"] == "retired"


@pytest.mark.parametrize(
    ("method", "path", "body", "who", "status", "code"),
    [
        ("GET", "/admin/accounts", None, "trader", 403, "forbidden"),
        ("PUT", "/admin/accounts/X1", {"api_key": KEY, "api_secret": fake_secret()},
         "trader", 403, "forbidden"),
        ("GET", "/admin/accounts", None, None, 401, "unauthorized"),
        ("GET", "/admin/accounts/NOSUCH1", None, "admin", 404, "account_not_found"),
        ("DELETE", "/admin/accounts/NOSUCH1", None, "admin", 404, "account_not_found"),
        ("PUT", "/admin/accounts/X1", {"api_key": KEY}, "admin", 422, "validation_error"),
        ("GET", "/accounts/NOSUCH1/kite/login", None, "trader", 403, "forbidden"),
        ("GET", "/accounts/NOSUCH1/kite/login", None, "admin", 404, "account_not_found"),
    ],
)  # fmt: skip
def test_account_routes_refuse_as_documented(
    stack: Stack, method: str, path: str, body: Any, who: str | None, status: int, code: str
) -> None:
    token = {"admin": stack.api.admin.id_token, "trader": stack.api.trader.id_token}.get(who or "")
    got, answer, _ = stack.call(method, path, token=token, body=body)
    assert (got, answer["code"]) == (status, code)


# --------------------------------------------------------------------------- the login


def test_the_login_end_to_end_with_the_official_clients_checksum(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the simulator recording every exchange it receives
    simulator = stack.simulator
    received: list[dict[str, str]] = []
    original = simulator.sessions.create_session

    def recording(api_key: str, request_token: str, checksum: str) -> Any:
        received.append({"api_key": api_key, "request_token": request_token, "checksum": checksum})
        return original(api_key, request_token, checksum)

    monkeypatch.setattr(simulator.sessions, "create_session", recording)
    account = stack.accounts[1]
    before = session_version(stack, account.user_id)
    # When the trader logs the account in as a browser does (API -> Kite -> callback)
    page = login(stack.api.url, stack.api.trader.id_token, account.user_id)
    # Then the callback's page says so, and a new session is stored
    assert page.status == 200, page.body
    assert f"Account {account.user_id} is logged in to Kite until" in page.body.decode()
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert session_version(stack, account.user_id) != before
    # And the exchange carried exactly the checksum the official client computes
    (exchange,) = received
    official: dict[str, Any] = {}

    def captured_post(route: str, params: dict[str, Any] | None = None, **_: Any) -> Any:
        official.update(params or {})  # what the official client would send
        return {"access_token": "t", "user_id": account.user_id, "login_time": None}

    kite = kiteconnect.KiteConnect(api_key=account.api_key)
    monkeypatch.setattr(kite, "_post", captured_post)
    kite.generate_session(exchange["request_token"], api_secret=account.api_secret)
    assert exchange["checksum"] == official["checksum"]
    assert (
        exchange["checksum"]
        == hashlib.sha256(
            (account.api_key + exchange["request_token"] + account.api_secret).encode()
        ).hexdigest()
    )
    shown = admin(stack, "GET", f"/admin/accounts/{account.user_id}")[1]["data"]
    assert shown["session"]["last_login_by"] == stack.api.trader.sub


def _state_key(stack: Stack) -> bytes:
    value = client(stack.aws, "secretsmanager").get_secret_value(
        SecretId=stack.resources.login_state_secret_arn
    )["SecretString"]
    return str(value).encode()


def _refused(stack: Stack, answer: Any, status: int, code: str, before: str | None) -> None:
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("text/html")
    assert code in answer.body.decode()
    assert session_version(stack, stack.account) == before  # nothing stored


def test_a_tampered_state_is_refused(stack: Stack) -> None:
    before = session_version(stack, stack.account)
    state = start_login(stack, stack.account)
    payload, signature = state.split(".")
    tampered = f"{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{signature}"
    token = kite_request_token(stack, stack.accounts[0].api_key)
    _refused(stack, callback(stack, tampered, token), 400, "login_state_invalid", before)
    _refused(stack, callback(stack, "not-a-state", token), 400, "login_state_invalid", before)


def test_an_expired_state_is_refused(stack: Stack) -> None:
    before = session_version(stack, stack.account)
    account = stack.accounts[0]
    expired, _ = issue(
        _state_key(stack), account_id=account.user_id, api_key=account.api_key,
        user_id=stack.api.admin.sub, now=datetime.now(UTC) - timedelta(hours=1),
        ttl=timedelta(minutes=10),
    )  # fmt: skip
    token = kite_request_token(stack, account.api_key)
    _refused(stack, callback(stack, expired, token), 400, "login_state_expired", before)


def test_a_replayed_state_is_refused(stack: Stack) -> None:
    state = start_login(stack, stack.account)
    first = callback(stack, state, kite_request_token(stack, stack.accounts[0].api_key))
    assert first.status == 200, first.body
    before = session_version(stack, stack.account)
    again = callback(stack, state, kite_request_token(stack, stack.accounts[0].api_key))
    _refused(stack, again, 409, "login_state_replayed", before)


def test_a_request_token_for_another_api_key_is_refused(stack: Stack) -> None:
    before = session_version(stack, stack.account)
    state = start_login(stack, stack.account)
    foreign = kite_request_token(stack, stack.accounts[1].api_key)
    _refused(stack, callback(stack, state, foreign), 400, "kite_login_rejected", before)


def test_a_cancelled_login_is_refused(stack: Stack) -> None:
    before = session_version(stack, stack.account)
    state = start_login(stack, stack.account)
    answer = fetch(
        "GET", f"{stack.api.url}/kite/login/callback?status=cancelled&state={quote(state)}"
    )
    _refused(stack, answer, 400, "kite_login_cancelled", before)


# --------------------------------------------------------------------------- login check


def test_the_scheduled_check_reports_accounts_that_need_a_login(stack: Stack) -> None:
    # Given a bus rule that copies account events to a queue, and an account never logged in
    sqs, events = client(stack.aws, "sqs"), client(stack.aws, "events")
    queue = sqs.create_queue(QueueName="login-required-watch")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bus = stack.resources.names.event_bus
    events.put_rule(
        Name="login-required", EventBusName=bus,
        EventPattern=json.dumps({"source": ["ticker-service.accounts"]}),
    )  # fmt: skip
    events.put_targets(
        Rule="login-required", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}]
    )
    admin(stack, "PUT", "/admin/accounts/NEWACC1", {"api_key": KEY, "api_secret": fake_secret()})
    # When the scheduled function runs
    result = stack.login_check.invoke({"source": "aws.scheduler"})
    # Then it names that account (and only it), publishes it, and the list says so
    assert not result.failed, result.error_message
    assert result.payload["login_required"] == ["NEWACC1"]
    assert result.payload["events_published"] == 1
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2)
    (event,) = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    assert event["detail-type"] == "Kite Login Required"
    assert event["detail"]["account_id"] == "NEWACC1"
    assert event["detail"]["session_expired_at"] is None
    shown = admin(stack, "GET", "/admin/accounts/NEWACC1")[1]["data"]["session"]
    assert shown["login_required"] is True
    assert shown["login_required_since"] is not None
    admin(stack, "DELETE", "/admin/accounts/NEWACC1")


# --------------------------------------------------------------------------- subscriptions


def _equities(stack: Stack, count: int) -> list[str]:
    """``count`` NSE equities, from the market-data routes' search."""
    status, body, _ = stack.trader_call(
        "GET", f"/market/instruments?exchange=NSE&instrument_type=EQ&limit={count}"
    )
    assert status == 200, body
    return [f"NSE:{i['tradingsymbol']}" for i in body["data"]["instruments"]]


def test_subscriptions_are_written_for_the_feed_and_beyond_capacity_refused(stack: Stack) -> None:
    store = SubscriptionStore(
        client(stack.aws, "dynamodb"), stack.resources.names.subscriptions_table
    )
    generation = store.generation()
    # Given the trader subscribes a few instruments and an ATM window
    symbols = _equities(stack, 5)
    status, body, _ = stack.trader_call(
        "POST", "/subscriptions",
        body={"subscribe": [{"instrument": s, "mode": "full"} for s in symbols],
              "atm_windows": [{"underlying": "NIFTY", "strikes_each_side": 3}]},
    )  # fmt: skip
    assert status == 200, body
    # Then the feed's store has them, owned by the trader, generation moved
    stored = store.entries()
    assert stored.generation > generation
    assert {e.owner for e in stored.instruments} == {stack.api.trader.sub}
    assert len(stored.instruments) == 5
    assert [r.underlying for r in stored.atm_windows] == ["NIFTY"]
    capacity = body["data"]["capacity"]
    assert capacity["capacity"] == 2 * 3 * INSTRUMENTS_PER_CONNECTION
    # When a change would need more than 300 instruments (the widest NIFTY window)
    wide = {"underlying": "NIFTY", "strikes_each_side": 50, "expiries": 6, "mode": "full"}
    status, body, _ = stack.trader_call("POST", "/subscriptions", body={"atm_windows": [wide]})
    # Then it is refused with the numbers and nothing is written
    assert (status, body["code"]) == (409, "capacity_exceeded"), body
    assert (body["capacity"], body["accounts"], body["instruments_per_connection"]) == (300, 2, 50)
    assert body["planned"] > 300
    assert body["current"] == capacity["planned"]
    assert store.entries() == stored


def test_the_status_route_reads_the_feeds_record(stack: Stack) -> None:
    store = FeedStatusStore(
        client(stack.aws, "dynamodb"), stack.resources.names.subscriptions_table
    )
    now = datetime.now(UTC)
    store.put(
        FeedStatus(
            instance="feed-test", written_at=now, started_at=now - timedelta(minutes=5),
            interval_seconds=5, generation=7, desired=120, streaming=118, not_fitted=2,
            not_fitted_sample=(1, 2),
            accounts=(AccountStatus(stack.account, (ConnectionStatus(0, True, 118),)),),
        )
    )  # fmt: skip
    status, body, _ = stack.trader_call("GET", "/subscriptions/status")
    assert status == 200
    feed = body["data"]["feed"]
    assert (feed["instance"], feed["desired"], feed["streaming"], feed["not_fitted"]) == (
        "feed-test", 120, 118, 2,
    )  # fmt: skip
    assert feed["stale"] is False
    shown = admin(stack, "GET", f"/admin/accounts/{stack.account}")[1]["data"]
    assert shown["streaming"]["connections_open"] == 1
    assert shown["streaming"]["streaming"] == 118
