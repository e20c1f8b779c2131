"""AWS limits the stack is built around, once (standard library only: the sandbox, which
imitates these services on this machine, imports them too without loading the CDK)."""

from __future__ import annotations

API_GATEWAY_INTEGRATION_TIMEOUT_S = 29
"""How long API Gateway waits for an integration, REST (its default) and WebSocket (its
maximum, $connect included): the API functions' timeouts match it, and a client waiting
for a WebSocket handshake must outwait it."""
