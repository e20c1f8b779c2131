"""The WebSocket client waits for a handshake as long as API Gateway lets $connect run."""

from __future__ import annotations

from infra.limits import API_GATEWAY_INTEGRATION_TIMEOUT_S
from sandbox.ws_client import OPEN_TIMEOUT_S, StreamClient


def test_the_client_outwaits_the_gateways_connect_limit() -> None:
    # Given a client made with the defaults (as the sandbox's witness makes it)
    client = StreamClient("ws://127.0.0.1:1/dev", "token")
    # Then a slow but successful $connect (two cold functions) is not cut short
    assert client._open_timeout == OPEN_TIMEOUT_S > API_GATEWAY_INTEGRATION_TIMEOUT_S
