"""The WebSocket API in the sandbox: its functions, the local gateway, and a witness client.

:func:`start_websocket_api` starts the local WebSocket gateway
(:mod:`sandbox.ws_gateway`) in front of the authorizer and routes functions;
the fan-out functions, one per stream, post to the gateway's
``@connections`` endpoint and are driven by their event source mappings (as
every mapping, from ``lambdas/event_source_mappings.toml``). :class:`Witness`
is a client of the running API that subscribes to an option chain for the
whole run and counts what it receives, for the report; :func:`client_command`
is the one-line command ``make run`` prints to watch the same chain.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from lambdas.ws.protocol import SUBPROTOCOL, Channel
from sandbox.esm import InvokeResult
from sandbox.ws_client import StreamClient
from sandbox.ws_gateway import LocalWebSocketGateway
from ticker_core.instruments import InstrumentRegistry

AUTHORIZER = "ws-authorizer"
ROUTES = "ws"
FANOUTS = {Channel.TICKS: "fanout-ticks", Channel.GREEKS: "fanout-greeks"}
"""The fan-out function on each stream (their mappings: ``lambdas/event_source_mappings.toml``)."""


def start_websocket_api(
    *,
    authorizer: Callable[[dict[str, Any]], InvokeResult],
    integration: Callable[[dict[str, Any]], InvokeResult],
    region: str,
) -> LocalWebSocketGateway:
    """The local gateway in front of the two functions, serving."""
    return LocalWebSocketGateway(
        authorizer=authorizer, integration=integration, region=region
    ).start()


def endpoints(gateway: LocalWebSocketGateway) -> dict[str, str]:
    """What ``endpoints.json`` says about the WebSocket API."""
    return {"websocket_url": gateway.url, "websocket_subprotocol": SUBPROTOCOL}


def nearest_chain(registry: InstrumentRegistry, underlying: str, today: date) -> str | None:
    """``UNDERLYING:YYYY-MM-DD`` of the nearest live expiry, if the underlying has options."""
    live = [e for e in registry.expiries(underlying) if e >= today]
    return f"{underlying}:{live[0].isoformat()}" if live else None


def client_command(endpoints_path: Path, chain: str, *, python: str = "python") -> str:
    """The one-line command that watches ``chain`` live (ticks and Greeks)."""
    return f"{python} -m sandbox.ws_client --endpoints {endpoints_path} --chain {chain}"


@dataclass
class WitnessCounts:
    """What the witness received."""

    subscribed: int = 0
    messages: int = 0
    ticks: int = 0
    greeks: int = 0
    instruments_with_ticks: set[int] = field(default_factory=set)
    instruments_with_greeks: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        """For the report."""
        return {
            "instruments_subscribed": self.subscribed,
            "messages": self.messages,
            "tick_records": self.ticks,
            "greeks_records": self.greeks,
            "instruments_with_ticks": len(self.instruments_with_ticks),
            "instruments_with_greeks": len(self.instruments_with_greeks),
            "errors": self.errors,
        }


class Witness:
    """A client of the running WebSocket API, subscribed to one chain for the whole run."""

    def __init__(self, url: str, token: str, chain: str) -> None:
        self._url = url
        self._token = token
        underlying, _, expiry = chain.partition(":")
        self._chain = {"underlying": underlying, "expiry": expiry}
        self.counts = WitnessCounts()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Connect and subscribe (waits until subscribed), then receive in the background."""
        self._thread = threading.Thread(target=self._run, name="ws-witness", daemon=True)
        self._thread.start()
        if not self._subscribed.wait(timeout) and not self.counts.errors:
            self.counts.errors.append(f"not subscribed after {timeout:g}s")

    def stop(self) -> None:
        """Disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _on_data(self, channel: Channel, records: list[dict[str, Any]]) -> None:
        counts = self.counts
        counts.messages += 1
        tokens = {int(r["instrument_token"]) for r in records}
        if channel is Channel.TICKS:
            counts.ticks += len(records)
            counts.instruments_with_ticks |= tokens
        else:
            counts.greeks += len(records)
            counts.instruments_with_greeks |= tokens

    def _run(self) -> None:
        try:
            asyncio.run(self._watch())
        except Exception as exc:  # counted: the report says the witness failed and why
            self.counts.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self._subscribed.set()

    async def _watch(self) -> None:
        async with StreamClient(self._url, self._token, on_data=self._on_data) as client:
            reply = await client.request({"action": "subscribe", "chains": [self._chain]})
            if reply.get("type") != "subscribed":
                self.counts.errors.append(f"subscribe refused: {reply.get('code')}")
                return
            self.counts.subscribed = len(reply["instruments"])
            self._subscribed.set()
            while not self._stop.is_set():
                try:  # checks for the stop every half second; the reader task receives
                    async with asyncio.timeout(0.5):
                        await client.closed()
                    self.counts.errors.append("the server closed the connection")
                    return
                except TimeoutError:
                    pass


def websocket_facts(
    gateway: LocalWebSocketGateway | None, chain: str | None, witness: Witness | None
) -> dict[str, Any]:
    """The report's ``websocket`` section: what the gateway saw and the witness received."""
    return {
        "chain": chain,
        "witness": witness.counts.facts() if witness else None,
        "gateway": (
            {
                "connections": gateway.stats.connections,
                "refused": {str(k): v for k, v in gateway.stats.refused.items()},
                "posts": gateway.stats.posts,
                "gone": sum(gateway.stats.gone.values()),
                "messages_in": gateway.stats.messages_in,
                "dropped_full": gateway.stats.dropped_full,
            }
            if gateway
            else None
        ),
    }
