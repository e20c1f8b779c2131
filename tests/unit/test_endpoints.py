"""Credentials travel in clear only to this machine."""

from __future__ import annotations

import pytest

from ticker_adapters.endpoints import is_loopback, require_tls_off_loopback


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
