"""The sandbox logs simulated accounts in as an app does and asks for instruments to stream."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandbox.kite import (
    KiteSimError,
    SimAccount,
    SimAdmin,
    login,
    register_accounts,
    rotate_session,
)
from sandbox.moto_server import AwsEndpoint
from sandbox.processes import ManagedProcess, ProcessError
from sandbox.provision import client, provision
from sandbox.subscriptions import plan_subscriptions, write_plan
from ticker_adapters.credentials import CredentialVault
from ticker_adapters.envelope import KmsEnvelopeCipher
from ticker_adapters.subscription_store import SubscriptionStore
from ticker_core.instruments import InstrumentRegistry, parse_instruments

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimAdmin, dict]]:
    admin_token = secrets.token_urlsafe(16)
    log = tmp_path_factory.mktemp("sim") / "kite_sim.log"
    process = ManagedProcess.python(
        "kite_sim",
        "kite_sim",
        ["--json", "--accounts", "2", "--stocks", "5", "--seed", "3"],
        env={**os.environ, "KITE_SIM_ADMIN_TOKEN": admin_token},
        log_path=log,
    ).start()
    try:
        info = process.wait_for_json_line("rest_url", timeout=60)
        yield SimAdmin(info["rest_url"], admin_token), info
    finally:
        pid = process.pid
        process.stop()
        assert pid is not None
        assert not psutil.pid_exists(pid)


def test_the_admin_api_needs_its_token(sim: tuple[SimAdmin, dict]) -> None:
    admin, info = sim
    with pytest.raises(KiteSimError, match="401"):
        SimAdmin(info["rest_url"], "wrong").info()
    assert len(admin.accounts()) == 2


def test_login_and_vault_registration_store_encrypted_sessions(
    sim: tuple[SimAdmin, dict], aws: AwsEndpoint
) -> None:
    admin, info = sim
    resources = provision(aws, shards=1)
    vault = CredentialVault(
        client(aws, "secretsmanager"),
        KmsEnvelopeCipher(client(aws, "kms"), resources.kms_key_arn),
        prefix=resources.names.secrets_prefix,
    )
    accounts = admin.accounts()
    # When the sandbox registers the simulated accounts
    ids = register_accounts(vault, info["rest_url"], accounts)
    # Then each has its API credentials and a working session in the vault
    assert ids == [a.user_id for a in accounts] == vault.accounts()
    for account in accounts:
        assert vault.api_credentials(account.user_id).api_secret == account.api_secret
        session = vault.session(account.user_id)
        assert session.api_key == account.api_key
        assert len(session.access_token) >= 16
    # And the stored secret is ciphertext, not the token
    raw = client(aws, "secretsmanager").get_secret_value(
        SecretId=f"{resources.names.secrets_prefix}/{ids[0]}/session"
    )["SecretString"]
    assert vault.session(ids[0]).access_token not in raw
    # When the token is expired and the session rotated, Then the vault holds a new one
    before = vault.session(ids[0]).access_token
    assert admin.expire_tokens(accounts[0].api_key) >= 1
    rotate_session(vault, info["rest_url"], accounts[0])
    assert vault.session(ids[0], force_refresh=True).access_token != before


def test_login_with_a_wrong_secret_is_refused(sim: tuple[SimAdmin, dict]) -> None:
    admin, info = sim
    account = admin.accounts()[0]
    with pytest.raises(KiteSimError):
        login(info["rest_url"], SimAccount(account.user_id, account.api_key, "not-the-secret"))


def test_the_subscription_plan_lands_in_the_store(
    sim: tuple[SimAdmin, dict], aws: AwsEndpoint
) -> None:
    admin, _ = sim
    registry = InstrumentRegistry(parse_instruments(admin.instruments_csv()).instruments)
    plan = plan_subscriptions(registry, target_instruments=200)
    resources = provision(aws, shards=1)
    store = SubscriptionStore(client(aws, "dynamodb"), resources.names.subscriptions_table)
    write_plan(store, plan)
    snapshot = store.snapshot()
    assert dict(snapshot.instruments) == plan.instruments
    assert {r.underlying for r in snapshot.atm_windows} >= {"NIFTY", "BANKNIFTY"}
    kinds = {registry.by_token(t).segment for t in plan.instruments}
    assert {"NSE", "INDICES", "NFO-FUT"} <= kinds
    assert plan.estimated_instruments >= 200
    assert any("ATM window NIFTY" in line for line in plan.describe())


def test_closing_the_market_stops_new_ticks(sim: tuple[SimAdmin, dict]) -> None:
    admin, _ = sim
    clock = admin.close_market()
    assert clock["market_open"] is False
    assert clock["session_loop"] is False


def test_a_child_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess.python(
        "bad", "kite_sim", ["--no-such-flag"], env=dict(os.environ),
        log_path=tmp_path / "bad.log",
    ).start()  # fmt: skip
    with pytest.raises(ProcessError, match="bad exited"):
        process.wait_for_json_line("rest_url", timeout=30)
    process.stop()
