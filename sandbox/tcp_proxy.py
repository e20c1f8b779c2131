"""A TCP proxy that misbehaves on command, for adversity tests and sandbox chaos.

Sits between a client and a real server (PostgreSQL, moto, the simulator) and
can drop every live connection, refuse new ones, or swallow traffic (a
"silent" peer), so tests show what the client does when the network fails,
without mocking the client. It runs its own event loop in a daemon thread so
that synchronous and asynchronous tests can both drive it.

With ``postgres_tls`` it also terminates TLS in PostgreSQL's own negotiation
(the client's SSLRequest), the way RDS Proxy terminates TLS in front of a
database: clients complete a verified TLS handshake, plaintext clients are
refused, and the server behind needs no TLS support of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 64 * 1024
PG_SSL_REQUEST = 80877103
PG_GSSENC_REQUEST = 80877104


class TlsRequiredError(Exception):
    """A PostgreSQL client tried to start a session without TLS."""


def _pg_error(code: str, message: str) -> bytes:
    """A PostgreSQL ErrorResponse message (severity FATAL)."""
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target``; see the control methods."""

    def __init__(
        self, target_host: str, target_port: int, *, postgres_tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self._postgres_tls = postgres_tls
        self._refuse = False
        self._blackhole = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.AbstractServer | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> int:
        """Start listening on an ephemeral loopback port; returns it."""
        self._thread.start()
        self.port = self._call(self._start())
        return self.port

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._refuse:
            client_w.transport.abort()
            return
        self.accepted += 1
        try:
            if self._postgres_tls is not None:
                await self._negotiate_postgres_tls(client_r, client_w, self._postgres_tls)
            server_r, server_w = await asyncio.open_connection(*self.target)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TlsRequiredError):
            client_w.transport.abort()
            return
        link = (client_w, server_w)
        self._links.add(link)
        pipes = [
            asyncio.ensure_future(self._pipe(client_r, server_w)),
            asyncio.ensure_future(self._pipe(server_r, client_w)),
        ]
        try:
            # When either side goes away, so does the other, as with a real dead peer.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._links.discard(link)
            for w in link:
                w.transport.abort()

    @staticmethod
    async def _negotiate_postgres_tls(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
    ) -> None:
        while True:
            length, code = struct.unpack("!II", await reader.readexactly(8))
            if length == 8 and code == PG_GSSENC_REQUEST:
                writer.write(b"N")  # no GSS encryption; the client may ask for TLS next
                continue
            if length == 8 and code == PG_SSL_REQUEST:
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(context)
                return
            writer.write(_pg_error("28000", "TLS is required: connect with sslmode=require"))
            await writer.drain()
            raise TlsRequiredError

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(CHUNK):
                if self._blackhole.is_set():
                    continue  # swallowed: the peer sees an open but silent connection
                writer.write(data)
                await writer.drain()

    # -- control -------------------------------------------------------------

    def drop_connections(self) -> int:
        """Reset every live connection (both sides see the TCP connection die)."""
        return self._call(self._drop())

    async def _drop(self) -> int:
        links = list(self._links)
        for client_w, server_w in links:
            client_w.transport.abort()
            server_w.transport.abort()
        return len(links)

    def refuse(self, refuse: bool = True) -> None:
        """Reset new connections as soon as they are accepted (server unreachable)."""
        self._refuse = refuse

    def blackhole(self, enabled: bool = True) -> None:
        """Swallow all traffic in both directions while keeping connections open."""
        if enabled:
            self._blackhole.set()
        else:
            self._blackhole.clear()

    @property
    def live_connections(self) -> int:
        """Connections currently being forwarded."""
        return len(self._links)

    def close(self) -> None:
        """Drop everything, stop listening and stop the proxy's thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _close(self) -> None:
        await self._drop()
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
