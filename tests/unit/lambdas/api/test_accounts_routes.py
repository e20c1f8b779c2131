"""Accounts, the Kite login and the scheduled check, through the resolver over fakes."""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from lambdas.api.accounts import LoginRequired
from lambdas.api.errors import KiteCallError, KiteFailureKind
from lambdas.api.login_state import issue
from tests.unit.lambdas.api.account_fakes import (
    ACCOUNT,
    ADMIN,
    API_KEY,
    NOW,
    STRANGER,
    TRADER,
    AccountRig,
    account_rig,
)
from ticker_adapters.credentials import KiteSession
from ticker_adapters.feed_status import AccountStatus, ConnectionStatus, FeedStatus

SECRET = secrets.token_hex(16)
OTHER_KEY = secrets.token_hex(8)
ACCOUNTS = "/admin/accounts"


def registered(rig: AccountRig | None = None) -> AccountRig:
    rig = rig or account_rig()
    status, _, _ = rig.call(
        "PUT", f"{ACCOUNTS}/{ACCOUNT}", body={"api_key": API_KEY, "api_secret": SECRET}
    )
    assert status == 200
    return rig


def login_link(rig: AccountRig, user: str = ADMIN) -> tuple[int, dict, str | None]:
    status, body, headers = rig.call("GET", f"/accounts/{ACCOUNT}/kite/login", user=user)
    if status != 302:
        return status, body, None
    url = urlsplit(headers["Location"])
    redirect_params = parse_qs(parse_qs(url.query)["redirect_params"][0])
    return status, body, redirect_params["state"][0]


def callback(
    rig: AccountRig, state: str | None, request_token: str | None, status: str = "success"
):
    query = "&".join(
        f"{k}={v}"
        for k, v in {"state": state, "request_token": request_token, "status": status}.items()
        if v is not None
    )
    return rig.call("GET", f"/kite/login/callback?action=login&type=login&{query}", user=None)


def logged_in(rig: AccountRig) -> AccountRig:
    _, _, state = login_link(rig)
    status, page, _ = callback(rig, state, rig.exchange.issue(API_KEY))
    assert status == 200, page
    return rig


# --------------------------------------------------------------------------- administration


def test_registering_stores_the_secret_in_the_vault_and_never_answers_it() -> None:
    # Given an administrator, When they register an account
    rig = account_rig()
    status, body, _ = rig.call(
        "PUT", f"{ACCOUNTS}/{ACCOUNT}", body={"api_key": API_KEY, "api_secret": SECRET}
    )
    # Then the vault holds key and secret, the registry the account, and no answer has the secret
    assert status == 200
    assert rig.vault.api[ACCOUNT].api_secret == SECRET
    account = body["data"]
    assert (account["account_id"], account["api_key"], account["state"]) == (
        ACCOUNT, API_KEY, "active",
    )  # fmt: skip
    assert account["session"] == {
        "logged_in": False, "expires_at": None, "last_login_at": None, "last_login_by": None,
        "login_required": True, "login_required_since": None,
    }  # fmt: skip
    listed = rig.call("GET", ACCOUNTS)[1]
    assert SECRET not in str(body)
    assert SECRET not in str(listed)
    assert SECRET not in str(rig.audit)


def test_only_administrators_manage_accounts() -> None:
    rig = registered()
    for method, path, body in [
        ("GET", ACCOUNTS, None),
        ("GET", f"{ACCOUNTS}/{ACCOUNT}", None),
        ("PUT", f"{ACCOUNTS}/{ACCOUNT}", {"api_key": API_KEY, "api_secret": SECRET}),
        ("DELETE", f"{ACCOUNTS}/{ACCOUNT}", None),
    ]:
        status, answer, _ = rig.call(method, path, body=body, user=TRADER)
        assert (status, answer["code"]) == (403, "forbidden"), (method, path)
    assert rig.registry.get(ACCOUNT) is not None
    assert ACCOUNT in rig.vault.api


def test_a_registration_is_validated_and_nothing_is_stored_when_it_is_bad() -> None:
    rig = account_rig()
    for body in (
        {"api_key": API_KEY},
        {"api_key": "x", "api_secret": SECRET},
        {"api_key": API_KEY, "api_secret": SECRET, "extra": 1},
    ):
        status, answer, _ = rig.call("PUT", f"{ACCOUNTS}/{ACCOUNT}", body=body)
        assert (status, answer["code"]) == (422, "validation_error")
    assert rig.vault.api == {}
    assert rig.registry.records == {}


def test_the_list_shows_session_and_streaming_state() -> None:
    # Given a logged-in account the feed streams on two of its three connections
    rig = logged_in(registered())
    rig.statuses.append(
        FeedStatus(
            instance="feed-1", written_at=NOW, started_at=NOW, interval_seconds=5,
            generation=3, desired=10, streaming=8, not_fitted=0,
            accounts=(AccountStatus(ACCOUNT, (
                ConnectionStatus(0, True, 5), ConnectionStatus(1, True, 3),
                ConnectionStatus(2, False, 2),
            )),),
        )
    )  # fmt: skip
    # When the list is read a little later
    rig.clock.advance(4)
    (account,) = rig.call("GET", ACCOUNTS)[1]["data"]["accounts"]
    # Then it shows the session and the connections
    assert account["session"]["logged_in"] is True
    assert account["session"]["login_required"] is False
    assert account["session"]["last_login_by"] == ADMIN
    assert account["session"]["expires_at"].startswith("2026-12-01T00:30:00")  # 06:00 IST
    assert account["streaming"] == {
        "connections_open": 2, "connections": 3, "instruments": 10, "streaming": 8,
        "reported_at": NOW.isoformat().replace("+00:00", "Z"), "stale": False,
    }  # fmt: skip
    # And once the feed stops writing, the record is stale
    rig.clock.advance(60)
    (account,) = rig.call("GET", ACCOUNTS)[1]["data"]["accounts"]
    assert account["streaming"]["stale"] is True


def test_retiring_deletes_the_secrets_and_keeps_the_account_listed_as_retired() -> None:
    rig = logged_in(registered())
    status, body, _ = rig.call("DELETE", f"{ACCOUNTS}/{ACCOUNT}")
    assert status == 200
    assert body["data"]["state"] == "retired"
    assert body["data"]["retired_by"] == ADMIN
    assert body["data"]["session"]["logged_in"] is False
    assert body["data"]["session"]["login_required"] is False  # retired: nobody must log in
    assert ACCOUNT not in rig.vault.api
    assert ACCOUNT not in rig.vault.sessions
    # And a retired account cannot be logged in until registered again
    status, answer, _ = login_link(rig)
    assert (status, answer["code"]) == (409, "account_retired")
    registered(rig)
    assert login_link(rig)[0] == 302


def test_an_unknown_account_is_404_for_administrators() -> None:
    rig = account_rig()
    for method in ("GET", "DELETE"):
        status, body, _ = rig.call(method, f"{ACCOUNTS}/NOSUCH1")
        assert (status, body["code"]) == (404, "account_not_found")


# --------------------------------------------------------------------------- login


def test_the_login_redirects_to_kite_with_a_state_for_the_account_and_the_caller() -> None:
    rig = registered()
    status, body, headers = rig.call("GET", f"/accounts/{ACCOUNT}/kite/login", user=TRADER)
    assert status == 302
    url = urlsplit(headers["Location"])
    query = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://kite.example.com/connect/login"
    assert query["api_key"] == [API_KEY]
    assert query["v"] == ["3"]
    assert "state" in parse_qs(query["redirect_params"][0])
    assert body["data"]["login_url"] == headers["Location"]
    assert body["data"]["expires_at"].startswith("2026-11-30T03:10:00")
    assert headers["Cache-Control"] == "no-store"


def test_only_administrators_and_the_accounts_traders_start_a_login() -> None:
    rig = registered()
    status, body, _ = rig.call("GET", f"/accounts/{ACCOUNT}/kite/login", user=STRANGER)
    assert (status, body["code"]) == (403, "forbidden")
    # an unknown account answers the same to a non-administrator
    status, body, _ = rig.call("GET", "/accounts/NOSUCH1/kite/login", user=STRANGER)
    assert (status, body["code"]) == (403, "forbidden")


def test_the_callback_stores_the_session_encrypted_in_the_vault_and_mirrors_it() -> None:
    # Given a login started by the trader
    rig = registered()
    _, _, state = login_link(rig, user=TRADER)
    # When Kite sends the browser back with a request token issued to the account's app
    status, page, headers = callback(rig, state, rig.exchange.issue(API_KEY))
    # Then the session is in the vault, the registry says who logged in, and a page says so
    assert status == 200
    assert "logged in to Kite until 2026-12-01 06:00 IST" in page
    session = rig.vault.sessions[ACCOUNT]
    assert session.api_key == API_KEY
    assert session.user_id == ACCOUNT
    assert session.expires_at.isoformat() == "2026-12-01T00:30:00+00:00"
    assert rig.registry.get(ACCOUNT).last_login_by == TRADER  # type: ignore[union-attr]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Type"].startswith("text/html")
    assert ("kite login completed", {
        "account_id": ACCOUNT, "by": TRADER, "expires_at": "2026-12-01T00:30:00+00:00",
    }) in rig.audit  # fmt: skip


def _refused(rig: AccountRig, answer: tuple, status: int, code: str) -> None:
    got_status, page, _ = answer
    assert (got_status, code in page) == (status, True), page
    assert ACCOUNT not in rig.vault.sessions
    assert rig.registry.get(ACCOUNT).last_login_at is None  # type: ignore[union-attr]
    assert ("kite login refused", {"code": code}) in rig.audit


def test_a_tampered_state_is_refused_and_nothing_is_stored() -> None:
    rig = registered()
    _, _, state = login_link(rig)
    assert state is not None
    payload, signature = state.split(".")
    tampered = f"{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{signature}"
    _refused(rig, callback(rig, tampered, rig.exchange.issue(API_KEY)), 400, "login_state_invalid")
    _refused(rig, callback(rig, None, rig.exchange.issue(API_KEY)), 400, "login_state_invalid")
    assert rig.exchange.calls == []  # Kite was never asked


def test_a_state_signed_with_another_key_is_refused() -> None:
    rig = registered()
    forged, _ = issue(
        b"k" * 32, account_id=ACCOUNT, api_key=API_KEY, user_id=ADMIN, now=NOW,
        ttl=timedelta(minutes=10),
    )  # fmt: skip
    _refused(rig, callback(rig, forged, rig.exchange.issue(API_KEY)), 400, "login_state_invalid")


def test_an_expired_state_is_refused() -> None:
    rig = registered()
    _, _, state = login_link(rig)
    rig.clock.advance(600)
    _refused(rig, callback(rig, state, rig.exchange.issue(API_KEY)), 400, "login_state_expired")


def test_a_replayed_state_is_refused_and_the_first_session_stays() -> None:
    rig = registered()
    _, _, state = login_link(rig)
    assert callback(rig, state, rig.exchange.issue(API_KEY))[0] == 200
    first = rig.vault.sessions[ACCOUNT]
    status, page, _ = callback(rig, state, rig.exchange.issue(API_KEY))
    assert (status, "login_state_replayed" in page) == (409, True)
    assert rig.vault.sessions[ACCOUNT] is first


def test_a_request_token_for_another_api_key_is_refused() -> None:
    rig = registered()
    _, _, state = login_link(rig)
    foreign = rig.exchange.issue("anotherapp01")
    _refused(rig, callback(rig, state, foreign), 400, "kite_login_rejected")


def test_a_cancelled_login_is_refused() -> None:
    rig = registered()
    _, _, state = login_link(rig)
    _refused(rig, callback(rig, state, None, status="cancelled"), 400, "kite_login_cancelled")


def test_kite_logging_in_another_user_is_refused() -> None:
    rig = registered()
    rig.exchange.user_ids[API_KEY] = "ZZ9999"
    _, _, state = login_link(rig)
    _refused(rig, callback(rig, state, rig.exchange.issue(API_KEY)), 400, "kite_user_mismatch")


def test_an_account_changed_since_the_login_started_is_refused() -> None:
    # Given a login started, then the account given another app
    rig = registered()
    _, _, state = login_link(rig)
    rig.call(
        "PUT", f"{ACCOUNTS}/{ACCOUNT}", body={"api_key": secrets.token_hex(8), "api_secret": SECRET}
    )
    _refused(rig, callback(rig, state, rig.exchange.issue(API_KEY)), 409, "account_changed")


def test_kite_unreachable_answers_503_and_stores_nothing() -> None:
    rig = registered()
    rig.exchange.failure = KiteCallError(KiteFailureKind.NOT_SENT, "connection refused")
    _, _, state = login_link(rig)
    _refused(rig, callback(rig, state, rig.exchange.issue(API_KEY)), 503, "kite_unavailable")


# --------------------------------------------------------------------------- scheduled check


def test_the_check_finds_accounts_without_a_live_session_and_the_list_says_so() -> None:
    # Given two accounts: one logged in now, one whose session expired this morning
    rig = logged_in(registered())
    rig.call("PUT", f"{ACCOUNTS}/CD5678", body={"api_key": OTHER_KEY, "api_secret": SECRET})
    rig.vault.sessions["CD5678"] = KiteSession(
        OTHER_KEY, "tok", "CD5678", NOW - timedelta(days=1), NOW - timedelta(hours=2)
    )
    accounts = rig.call("GET", ACCOUNTS)[1]  # warm: nothing noted yet
    assert accounts["data"]["accounts"][1]["session"]["login_required_since"] is None
    # When the scheduled check runs
    required = _check(rig)
    # Then only the expired one is reported, with when it expired, and the list notes it
    assert required == [LoginRequired("CD5678", OTHER_KEY, NOW - timedelta(hours=2))]
    listed = {a["account_id"]: a for a in rig.call("GET", ACCOUNTS)[1]["data"]["accounts"]}
    assert listed["CD5678"]["session"]["login_required"] is True
    assert listed["CD5678"]["session"]["login_required_since"].startswith("2026-11-30T03:00:00")
    assert listed[ACCOUNT]["session"]["login_required"] is False
    # And a day later both are reported (the first login expired at 06:00 IST)
    rig.clock.advance(24 * 3600)
    assert [r.account_id for r in _check(rig)] == [ACCOUNT, "CD5678"]


def _check(rig: AccountRig) -> list[LoginRequired]:
    return rig.accounts.check_logins()
