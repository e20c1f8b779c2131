"""``python -m sandbox.ws_client``: an option chain's live ticks and Greeks over the WebSocket API.

    python -m sandbox.ws_client --endpoints .run/<stamp>/endpoints.json --chain NIFTY:2026-12-03

Connects to the WebSocket URL in ``endpoints.json`` as one of the sandbox's
users (its Cognito ID token offered as a subprotocol, beside
``ticker.v1``), subscribes to the chain (and any ``--instruments``) on both
channels, and prints the chain every ``--every`` seconds: last price, implied
volatility and delta of each call and put around the money. The same
:class:`StreamClient` is the sandbox's own witness and the tests' client.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from lambdas.ws.protocol import MAX_MESSAGE_BYTES, SUBPROTOCOL, Channel


class ReplyTimeoutError(Exception):
    """The server did not answer a request in time."""


DataHandler = Callable[[Channel, list[dict[str, Any]]], None]

#: How long the opening handshake may take. API Gateway gives $connect (the Lambda
#: authorizer, then the integration) up to 29 s, and a cold authorizer followed by a cold
#: connect function can use much of it: the sandbox's witness timed out at 15 s on a
#: fresh checkout (no bytecode yet) of a loaded machine. Waiting less than the gateway
#: would turns a slow accept into a failed connection.
OPEN_TIMEOUT_S = 35.0


class StreamClient:
    """One connection to the WebSocket API: requests with replies, and the data that streams.

    A reader task takes every message as it arrives: data goes to ``on_data``
    (by default appended to :attr:`data`), a reply resolves the request it
    answers. :meth:`pause` stops reading (the client falls behind, as a slow
    client does); :meth:`resume` reads again.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        open_timeout: float = OPEN_TIMEOUT_S,
        max_queue: int = 64,
        on_data: DataHandler | None = None,
        **connect_options: Any,
    ) -> None:
        self.url = url
        self._token = token
        self._open_timeout = open_timeout
        self._max_queue = max_queue
        self._options = connect_options
        self._on_data = on_data or (lambda channel, records: self.data.append((channel, records)))
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reading = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.socket: ClientConnection | None = None
        self.data: list[tuple[Channel, list[dict[str, Any]]]] = []
        self.other: list[dict[str, Any]] = []
        """Messages that were neither data nor a reply to a request of ours."""
        self.messages = 0
        self.error: Exception | None = None
        """What ended the reader (a close, or a message it could not take)."""

    async def __aenter__(self) -> StreamClient:
        self.socket = await connect(
            self.url,
            subprotocols=[Subprotocol(SUBPROTOCOL), Subprotocol(self._token)],
            open_timeout=self._open_timeout,
            max_size=MAX_MESSAGE_BYTES,
            max_queue=self._max_queue,
            compression=None,
            proxy=None,
            **self._options,
        )
        self._reading.set()
        self._reader = asyncio.create_task(self._read(self.socket))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self._reader is not None:
            self._reading.set()
            await asyncio.gather(self._reader, return_exceptions=True)

    def pause(self) -> None:
        """Stop reading: what the server sends waits (in the socket, then in the gateway)."""
        self._reading.clear()

    def resume(self) -> None:
        """Read again."""
        self._reading.set()

    @property
    def reading(self) -> bool:
        """Whether the reader is taking messages."""
        return self._reading.is_set()

    async def _read(self, socket: ClientConnection) -> None:
        """Take messages until the connection closes; what ended it fails waiting requests.

        The reader never dies silently: a close, an unreadable message or a
        failing ``on_data`` ends it with that error, which :meth:`closed`
        raises and every request still waiting receives.
        """
        try:
            while True:
                await self._reading.wait()
                raw = await socket.recv()
                self.messages += 1
                self._dispatch(json.loads(raw))
        except (ConnectionClosed, ValueError, KeyError, TypeError) as exc:
            self.error = exc
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, ConnectionClosed):
                await socket.close(code=1002, reason="unreadable message")
                raise

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in (Channel.TICKS, Channel.GREEKS):
            self._on_data(Channel(kind), message["data"])
            return
        future = self._pending.get(str(message.get("id")))
        if future is not None and not future.done():
            future.set_result(message)
        elif kind is None and "message" in message and self._pending:
            # API Gateway's own error (an integration failure) names no request: the oldest
            oldest = next(f for f in self._pending.values() if not f.done())
            oldest.set_result(message)
        else:
            self.other.append(message)

    async def request(self, payload: dict[str, Any], within: float = 30.0) -> dict[str, Any]:
        """Send one action and wait for its reply (data arriving meanwhile goes to ``on_data``)."""
        if self.socket is None:
            raise RuntimeError("not connected")
        request_id = str(next(self._ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.socket.send(json.dumps({**payload, "id": request_id}))
            async with asyncio.timeout(within):
                return await future
        except TimeoutError:
            raise ReplyTimeoutError(
                f"no reply to {payload.get('action')!r} in {within:g}s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def closed(self) -> None:
        """Until the connection closes (raises what broke the reader, if it broke)."""
        if self._reader is not None:
            await asyncio.shield(self._reader)


# --------------------------------------------------------------------------- the chain view


@dataclass
class ChainView:
    """The latest tick and Greeks per instrument, and the chain's rows to print."""

    labels: dict[int, dict[str, Any]] = field(default_factory=dict)
    """token -> the instrument as the subscribe reply described it."""
    ticks: dict[int, dict[str, Any]] = field(default_factory=dict)
    greeks: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: int = 0
    tick_records: int = 0
    greeks_records: int = 0

    def add(self, channel: Channel, records: list[dict[str, Any]]) -> None:
        """One data message."""
        self.messages += 1
        latest = self.ticks if channel is Channel.TICKS else self.greeks
        for record in records:
            latest[int(record["instrument_token"])] = record
        if channel is Channel.TICKS:
            self.tick_records += len(records)
        else:
            self.greeks_records += len(records)

    def rows(self, around: int) -> list[str]:
        """The chain, ``around`` strikes either side of the money: call | strike | put."""
        strikes: dict[float, dict[str, int]] = {}
        for token, greek in self.greeks.items():
            if greek.get("strike") is not None:
                strikes.setdefault(float(greek["strike"]), {})[greek["option_type"]] = token
        if not strikes:
            return ["  (no Greeks yet)"]
        ordered = sorted(strikes)
        money = min(
            range(len(ordered)),
            key=lambda i: abs(abs(self._delta(strikes[ordered[i]].get("CE"))) - 0.5),
        )
        lines = [
            f"  {'CE ltp':>9} {'iv':>6} {'delta':>6} | {'strike':^9} | "
            f"{'PE ltp':>9} {'iv':>6} {'delta':>6}"
        ]
        for strike in ordered[max(0, money - around) : money + around + 1]:
            row = strikes[strike]
            lines.append(
                f"  {self._cell(row.get('CE'))} | {strike:^9g} | {self._cell(row.get('PE'))}"
            )
        return lines

    def _delta(self, token: int | None) -> float:
        value = self.greeks.get(token or -1, {}).get("delta")
        return float(value) if isinstance(value, int | float) else math.inf

    def _cell(self, token: int | None) -> str:
        tick = self.ticks.get(token or -1, {})
        greek = self.greeks.get(token or -1, {})
        price = tick.get("last_price", greek.get("price"))
        iv, delta = greek.get("iv"), greek.get("delta")
        return (
            f"{_number(price, '9.2f')} {_number(iv * 100 if iv is not None else None, '5.1f')}%"
            f" {_number(delta, '6.3f')}"
        )


def _number(value: Any, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if isinstance(value, int | float) else "-".rjust(width)


# --------------------------------------------------------------------------- the command


def _chain(text: str) -> dict[str, str]:
    underlying, _, expiry = text.partition(":")
    if not underlying or not expiry:
        raise argparse.ArgumentTypeError("a chain is UNDERLYING:YYYY-MM-DD")
    return {"underlying": underlying, "expiry": expiry}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.ws_client", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--endpoints", type=Path, required=True, help="the run's endpoints.json")
    parser.add_argument("--chain", type=_chain, action="append", default=[], help="NIFTY:DATE")
    parser.add_argument("--instruments", default="", help="tokens or EXCHANGE:SYMBOL, commas")
    parser.add_argument("--user", default="sandbox-trader", help="a user in endpoints.json")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between prints")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after (0: Ctrl-C)")
    parser.add_argument("--around", type=int, default=5, help="strikes either side of the money")
    args = parser.parse_args(list(argv))
    if not args.chain and not args.instruments:
        parser.error("name a --chain or --instruments")
    return args


async def watch(args: argparse.Namespace, out: TextIO) -> int:
    """Connect, subscribe, print until ``--seconds`` pass (or forever)."""
    endpoints = json.loads(args.endpoints.read_text())
    user = next((u for u in endpoints["users"] if u["username"] == args.user), None)
    if user is None:
        print(f"no user {args.user!r} in {args.endpoints}", file=out)
        return 2
    view = ChainView()
    instruments: list[int | str] = [
        int(i) if i.isdigit() else i for i in args.instruments.split(",") if i.strip()
    ]
    async with StreamClient(endpoints["websocket_url"], user["id_token"], on_data=view.add) as c:
        reply = await c.request(
            {"action": "subscribe", "instruments": instruments, "chains": args.chain}
        )
        if reply.get("type") != "subscribed":
            print(f"subscribe refused: {reply.get('code')}: {reply.get('message')}", file=out)
            return 1
        for described in reply["instruments"]:
            view.labels[described["instrument_token"]] = described
        print(
            f"subscribed to {len(reply['instruments'])} instruments on ticks and greeks "
            f"({endpoints['websocket_url']}, as {args.user})",
            file=out,
            flush=True,
        )
        started = time.monotonic()
        while not args.seconds or time.monotonic() - started < args.seconds:
            try:  # the print cadence; the reader task receives meanwhile
                async with asyncio.timeout(args.every):
                    await c.closed()
                print(f"the connection closed: {c.error!r}", file=out)
                return 1
            except TimeoutError:
                pass
            print(
                f"\n{time.strftime('%H:%M:%S')}  {view.messages} messages: "
                f"{view.tick_records} ticks, {view.greeks_records} greeks",
                file=out,
            )
            for line in view.rows(args.around):
                print(line, file=out)
            out.flush()
    return 0 if view.tick_records else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the watcher (Ctrl-C stops it)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(watch(args, sys.stdout))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
