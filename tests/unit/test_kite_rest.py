"""The Kite REST client's pure parts: the retry decision, the root check, GTT payload checks."""

from __future__ import annotations

import secrets

import pytest

from ticker_adapters.kite_rest import KiteRestClient, KiteTransport, check_root, retry_transient
from ticker_core.kite_errors import (
    KiteGeneralError,
    KiteInputError,
    KiteNetworkError,
    KiteOutcomeUnknownError,
    KiteTokenError,
)

MADE_UP_PASSWORD = secrets.token_hex(4)  # new each run; never in a test id


def test_the_default_decision_retries_transient_failures_up_to_the_bound() -> None:
    decide = retry_transient(3)
    assert decide(KiteNetworkError("oms"), 1)
    assert decide(KiteOutcomeUnknownError("reset"), 2)
    assert not decide(KiteNetworkError("oms"), 3)  # three attempts made
    assert not decide(KiteTokenError("expired"), 1)
    assert not decide(KiteGeneralError("bug"), 1)
    assert not retry_transient(1)(KiteNetworkError("oms"), 1)
    with pytest.raises(ValueError, match="max_attempts"):
        retry_transient(0)


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("https://api.kite.trade/", "https://api.kite.trade"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("http://localhost:80/", "http://localhost:80"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_a_root_is_https_or_loopback(root: str, expected: str) -> None:
    assert check_root(root) == expected


@pytest.mark.parametrize(
    "root",
    [
        "http://api.kite.trade",
        "http://10.0.0.5:8000",
        "ftp://127.0.0.1",
        "https://api.kite.trade?x=1",
        f"https://user:{MADE_UP_PASSWORD}@api.kite.trade",
        "api.kite.trade",
    ],
    # Named without the made-up password: ids must be the same in every worker's collection.
    ids=lambda root: root.replace(MADE_UP_PASSWORD, "PASSWORD"),
)
def test_any_other_root_is_refused(root: str) -> None:
    with pytest.raises(ValueError, match=r"in clear|scheme|without a host|bare URL"):
        KiteTransport(root)


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeouts"):
        KiteTransport(read_timeout=0)


@pytest.mark.parametrize(
    ("trigger_type", "values", "orders", "problem"),
    [
        ("oco", [1.0], [{}], "unknown GTT type"),
        ("single", [1.0, 2.0], [{}], "1 trigger value"),
        ("two-leg", [1.0], [{}], "2 trigger value"),
        ("single", [1.0], [{"transaction_type": "BUY", "quantity": 1}], "lacks order_type"),
    ],
)
def test_a_malformed_gtt_is_refused_before_anything_is_sent(
    trigger_type: str, values: list[float], orders: list[dict[str, object]], problem: str
) -> None:
    # Given a client whose root nobody listens on (nothing may be sent: this layer has no sockets)
    kite = KiteRestClient("key", "token", transport=KiteTransport("http://127.0.0.1:9"))
    with pytest.raises(KiteInputError, match=problem):
        kite.place_gtt(trigger_type, "INFY", "NSE", values, 1500.0, orders)
    with pytest.raises(KiteInputError, match=problem):
        kite.modify_gtt(1, trigger_type, "INFY", "NSE", values, 1500.0, orders)
