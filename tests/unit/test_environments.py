"""Each deployable's environment model: one name per shared setting, every problem named at once.

These are the models the CDK app's environment contract instantiates, so they
must read only the environment (no AWS call, no import-time work).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from feed_container.settings import VARIABLE_PREFIXES, FeedEnvironment
from lambdas.greeks.settings import GreeksEnvironment
from lambdas.instruments.settings import InstrumentsEnvironment
from lambdas.migrate.settings import MigrateEnvironment
from lambdas.persist.settings import PersistEnvironment
from ticker_adapters.settings import SettingsError

KEY_ARN = "arn:aws:kms:ap-south-1:123456789012:key/8c1f2a3e-5d4b-4c6a-9e8f-0a1b2c3d4e5f"

READ_PREFIXES = (*VARIABLE_PREFIXES, "GREEKS_", "PERSIST_", "DB_")
DATABASE = {"DB_HOST": "127.0.0.1", "DB_USER": "ticker", "DB_TLS": "disable"}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment holding none of the variables the deployables read."""
    for name in list(os.environ):
        if name.startswith(READ_PREFIXES):
            monkeypatch.delenv(name)
    return monkeypatch


CASES: list[tuple[Callable[[], Any], dict[str, str]]] = [
    (
        FeedEnvironment.from_env,
        {
            "KITE_CREDENTIALS_KMS_KEY_ARN": KEY_ARN,
            "TICKS_STREAM_NAME": "ticks",
            "SUBSCRIPTIONS_TABLE_NAME": "subscriptions",
        },
    ),
    (GreeksEnvironment.from_env, {"GREEKS_STREAM_NAME": "greeks", "INSTRUMENTS_BUCKET": "ref"}),
    (
        InstrumentsEnvironment.from_env,
        {"INSTRUMENTS_BUCKET": "ref", "KITE_CREDENTIALS_KMS_KEY_ARN": KEY_ARN, **DATABASE},
    ),
    (PersistEnvironment.from_env, DATABASE),
    (MigrateEnvironment.from_env, DATABASE),
]


@pytest.mark.parametrize(("read", "required"), CASES)
def test_an_environment_with_its_required_variables_reads(
    environ: pytest.MonkeyPatch, read: Callable[[], Any], required: dict[str, str]
) -> None:
    # Given exactly the required variables, When the deployable reads its environment
    for name, value in required.items():
        environ.setenv(name, value)
    # Then it builds, and every other setting has its default
    assert read() is not None


@pytest.mark.parametrize(("read", "required"), CASES)
def test_every_missing_variable_is_named_in_one_error(
    environ: pytest.MonkeyPatch, read: Callable[[], Any], required: dict[str, str]
) -> None:
    # Given an empty environment, When the deployable reads it
    with pytest.raises(SettingsError) as raised:
        read()
    # Then one error names each required variable (the database's by its rule)
    named = set(raised.value.problems)
    expected = {name for name in required if not name.startswith("DB_")}
    assert expected <= named
    assert all(name.startswith(READ_PREFIXES) for name in named)
    assert ("DB_*" in named) == any(name.startswith("DB_") for name in required)


def test_shared_settings_have_one_name_in_every_deployable(environ: pytest.MonkeyPatch) -> None:
    # Given the vault and the snapshot named once, for the feed and the functions alike
    for name, value in {
        "KITE_CREDENTIALS_KMS_KEY_ARN": KEY_ARN,
        "KITE_CREDENTIALS_PREFIX": "prod/kite",
        "KITE_REST_URL": "http://127.0.0.1:9",
        "INSTRUMENTS_BUCKET": "ref",
        "INSTRUMENTS_PREFIX": "dumps/",
        "FEED_INSTRUMENTS_SOURCE": "snapshot",
        "TICKS_STREAM_NAME": "ticks",
        "SUBSCRIPTIONS_TABLE_NAME": "subscriptions",
        "GREEKS_STREAM_NAME": "greeks",
        **DATABASE,
    }.items():
        environ.setenv(name, value)
    # When each reads its environment, Then each sees the same values
    feed, instruments = FeedEnvironment.from_env(), InstrumentsEnvironment.from_env()
    greeks = GreeksEnvironment.from_env()
    assert feed.vault == instruments.vault
    assert feed.kite.rest_url == instruments.kite.rest_url == "http://127.0.0.1:9"
    assert feed.snapshot == instruments.snapshot == greeks.snapshot
    assert greeks.snapshot.prefix == "dumps/"


def test_a_secret_value_never_appears_in_the_error(environ: pytest.MonkeyPatch) -> None:
    # Given an invalid environment that also holds a database password
    environ.setenv("DB_PASSWORD", "s3cret-value-not-to-print")
    environ.setenv("DB_PORT", "not-a-port")
    # When it is read, Then the error names variables, never values
    with pytest.raises(SettingsError) as raised:
        PersistEnvironment.from_env()
    assert "DB_PORT" in raised.value.problems
    assert "s3cret" not in str(raised.value)
