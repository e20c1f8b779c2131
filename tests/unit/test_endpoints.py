"""Credentials travel in clear only to this machine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ticker_adapters.endpoints import is_loopback, require_tls_off_loopback
from ticker_adapters.settings import KiteSettings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "ws.kite.trade", "localhost.evil.com", "", None])
def test_other_hosts_are_not_loopback(host: str | None) -> None:
    assert not is_loopback(host)


def test_tls_urls_go_anywhere_plain_ones_only_to_loopback() -> None:
    # Given a WebSocket URL rule (wss anywhere, ws to loopback)
    assert require_tls_off_loopback("wss://ws.kite.trade", schemes=("wss",))
    assert require_tls_off_loopback("ws://127.0.0.1:8400/ws", schemes=("wss",))
    # When plain ws:// names another host, Then it is refused, naming the host and the fix
    with pytest.raises(ValueError, match=r"'ws\.kite\.trade'.*wss://"):
        require_tls_off_loopback("ws://ws.kite.trade", schemes=("wss",))
    # And REST follows the same rule with http/https
    with pytest.raises(ValueError, match="loopback"):
        require_tls_off_loopback("http://api.kite.trade", schemes=("https",))
    # And other schemes are refused outright
    with pytest.raises(ValueError, match="unsupported scheme"):
        require_tls_off_loopback("ftp://127.0.0.1", schemes=("https",))


def test_the_refusal_never_repeats_the_query() -> None:
    token = "tok" + "en-value-123"
    with pytest.raises(ValueError, match="loopback") as caught:
        require_tls_off_loopback(f"ws://10.0.0.1/?access_token={token}", schemes=("wss",))
    assert token not in str(caught.value)


def test_a_host_named_for_plain_text_passes_and_only_that_host() -> None:
    # Given a private simulator host explicitly allowed in clear (a staging stack's kite_sim)
    allowed = ("kite-sim.ticker.internal",)
    # When its plain URL is checked, Then it passes (the name compared without case)
    url = "http://Kite-Sim.ticker.internal:8000"
    assert require_tls_off_loopback(url, schemes=("https",), plaintext_hosts=allowed) == url
    # And any other host is still refused
    with pytest.raises(ValueError, match="loopback"):
        require_tls_off_loopback(
            "http://api.kite.trade", schemes=("https",), plaintext_hosts=allowed
        )


def test_the_shared_kite_settings_refuse_clear_text_unless_the_host_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the simulator's private URLs
    monkeypatch.setenv("KITE_REST_URL", "http://kite-sim.ticker.internal:8000")
    monkeypatch.setenv("KITE_WS_URL", "ws://kite-sim.ticker.internal:8000")
    # When the host is not named, Then the settings refuse them
    with pytest.raises(ValidationError, match="loopback"):
        KiteSettings()
    # When it is named, Then they pass, and the host list is parsed from the variable
    monkeypatch.setenv("KITE_PLAINTEXT_HOSTS", "kite-sim.ticker.internal, other.internal")
    assert KiteSettings().plaintext_hosts == ("kite-sim.ticker.internal", "other.internal")
