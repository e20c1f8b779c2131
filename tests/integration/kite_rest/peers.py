"""Loopback peers for the Kite REST client: a recording HTTP server and misbehaving sockets.

Every peer listens on 127.0.0.1 only and is a context manager that stops
what it started.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Reply:
    """What the recording server answers."""

    status: int = 200
    content_type: str = "application/json"
    body: bytes = b'{"status": "success", "data": null}'
    gzip: bool = False

    @classmethod
    def data(cls, data: Any) -> Reply:
        return cls(body=json.dumps({"status": "success", "data": data}).encode())

    @classmethod
    def error(cls, status: int, error_type: str, message: str = "refused") -> Reply:
        envelope = {"status": "error", "error_type": error_type, "message": message, "data": None}
        return cls(status=status, body=json.dumps(envelope).encode())


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived: what a Kite server sees of it."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def form(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)


@dataclass
class RecordingServer:
    """Records every request and answers each with ``reply``."""

    reply: Reply = field(default_factory=Reply)
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorder.requests.append(
                    Recorded(
                        self.command,
                        parts.path,
                        tuple(parse_qsl(parts.query, keep_blank_values=True)),
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                reply = recorder.reply
                payload = gzip.compress(reply.body) if reply.gzip else reply.body
                self.send_response(reply.status)
                if reply.content_type:
                    self.send_header("Content-Type", reply.content_type)
                if reply.gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def take(self) -> list[Recorded]:
        """The requests so far, forgetting them."""
        taken, self.requests[:] = list(self.requests), []
        return taken

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class SocketPeer:
    """A TCP peer that reads each request's head, then resets the connection or says nothing.

    ``mode="reset"``: an RST right after the request arrived (the request was
    sent; no answer). ``mode="silent"``: keeps the connection open without
    answering until the peer is closed (a read timeout for the client).
    """

    def __init__(self, mode: str) -> None:
        if mode not in ("reset", "silent"):
            raise ValueError(mode)
        self.mode = mode
        self.accepted = 0
        self.requests_seen = 0
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.settimeout(5)
            received = b""
            try:
                while b"\r\n\r\n" not in received:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            except OSError:
                pass
            if b"\r\n\r\n" in received:
                self.requests_seen += 1
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                self._held.append(conn)

    def __enter__(self) -> SocketPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self._held:
            conn.close()
        self._listener.close()


class RefusingPort:
    """A loopback port bound but not listening: every connection is refused."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> RefusingPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.close()
