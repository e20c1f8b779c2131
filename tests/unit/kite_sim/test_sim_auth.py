"""Login flow, sessions and expiry of the simulator's session store."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from kite_sim.auth import SessionStore, generate_account, next_daily_expiry
from kite_sim.clock import ManualClock, MarketClock
from kite_sim.errors import InputError, PermissionDeniedError, TokenError
from ticker_core.kite_checksums import session_checksum
from ticker_core.tz import IST


@pytest.fixture
def clock() -> MarketClock:
    return MarketClock(ManualClock(), datetime(2024, 6, 3, 9, 15, tzinfo=IST))


@pytest.fixture
def store(clock: MarketClock) -> SessionStore:
    return SessionStore([generate_account(0), generate_account(1)], clock)


def test_login_exchange_gives_a_working_access_token(store: SessionStore) -> None:
    # Given an app's request token from the login redirect
    account = store.accounts[0]
    request_token = store.begin_login(account.api_key)
    # When it is exchanged with the right checksum
    checksum = session_checksum(account.api_key, request_token, account.api_secret)
    session = store.create_session(account.api_key, request_token, checksum)
    # Then the access token authenticates, by header too
    assert store.authenticate(account.api_key, session.access_token) is session
    header = f"token {account.api_key}:{session.access_token}"
    assert store.authenticate_header(header) is session


def test_wrong_checksum_and_reused_request_token_are_refused(store: SessionStore) -> None:
    account = store.accounts[0]
    request_token = store.begin_login(account.api_key)
    with pytest.raises(TokenError):
        store.create_session(account.api_key, request_token, "0" * 64)
    good = session_checksum(account.api_key, request_token, account.api_secret)
    store.create_session(account.api_key, request_token, good)
    # When the same request token is used a second time
    with pytest.raises(TokenError):
        store.create_session(account.api_key, request_token, good)


def test_request_token_expires_after_five_minutes(store: SessionStore, clock: MarketClock) -> None:
    account = store.accounts[0]
    request_token = store.begin_login(account.api_key)
    clock.advance(301)
    good = session_checksum(account.api_key, request_token, account.api_secret)
    with pytest.raises(TokenError):
        store.create_session(account.api_key, request_token, good)


def test_access_token_expires_at_six_next_morning(store: SessionStore, clock: MarketClock) -> None:
    # Given a session opened at 09:15 IST
    session = store.issue_session(store.accounts[0].api_key)
    assert session.expires_at == datetime(2024, 6, 4, 6, 0, tzinfo=IST)
    # When the market clock passes 06:00 the next day
    clock.set(datetime(2024, 6, 4, 6, 0, 1, tzinfo=IST))
    # Then the token is refused
    with pytest.raises(TokenError):
        store.authenticate(session.account.api_key, session.access_token)


def test_next_daily_expiry_before_six_is_same_day() -> None:
    early = datetime(2024, 6, 3, 5, 0, tzinfo=IST)
    assert next_daily_expiry(early) == datetime(2024, 6, 3, 6, 0, tzinfo=IST)


def test_token_of_another_app_is_refused(store: SessionStore) -> None:
    a, b = store.accounts
    session = store.issue_session(a.api_key)
    with pytest.raises(TokenError):
        store.authenticate(b.api_key, session.access_token)
    with pytest.raises(TokenError):
        store.authenticate_header(f"bearer {a.api_key}:{session.access_token}")
    with pytest.raises(TokenError):
        store.authenticate(None, None)


def test_expire_by_key_and_invalidate(store: SessionStore) -> None:
    a, b = store.accounts
    sa, sb = store.issue_session(a.api_key), store.issue_session(b.api_key)
    assert store.expire(api_key=a.api_key) == 1
    with pytest.raises(TokenError):
        store.authenticate(a.api_key, sa.access_token)
    assert store.authenticate(b.api_key, sb.access_token) is sb
    assert store.invalidate(b.api_key, sb.access_token) is True
    with pytest.raises(TokenError):
        store.authenticate(b.api_key, sb.access_token)
    with pytest.raises(TokenError):
        store.invalidate(b.api_key, "nope")
    assert store.expire() == 0


def test_unknown_api_key_is_an_input_error(store: SessionStore) -> None:
    with pytest.raises(InputError):
        store.begin_login("unknown")


def test_registered_ip_check() -> None:
    account = generate_account(0)
    account.require_ip("127.0.0.1")
    account.registered_ips = {"10.0.0.0/24"}
    assert account.ip_allowed("10.0.0.7")
    assert not account.ip_allowed("not-an-ip")
    assert not account.ip_allowed(None)
    with pytest.raises(PermissionDeniedError):
        account.require_ip("127.0.0.1")
    account.enforce_ip = False
    assert account.ip_allowed("127.0.0.1")


def test_market_clock_speed_and_set() -> None:
    base = ManualClock()
    clock = MarketClock(base, datetime(2024, 6, 3, 9, 15, tzinfo=IST), speed=2.0)
    base.advance(10)
    assert clock.now() == datetime(2024, 6, 3, 9, 15, 20, tzinfo=IST)
    clock.set_speed(0.0)
    base.advance(10)
    assert clock.now() == datetime(2024, 6, 3, 9, 15, 20, tzinfo=IST)
    clock.advance(40)
    assert clock.now() - datetime(2024, 6, 3, 9, 15, tzinfo=IST) == timedelta(seconds=60)
    with pytest.raises(ValueError, match="backwards"):
        base.advance(-1)
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2024, 6, 3))  # naive
    with pytest.raises(ValueError, match="speed"):
        clock.set_speed(-1)
