"""A local API Gateway WebSocket API on 127.0.0.1, with API Gateway's semantics (aiohttp).

What API Gateway does in front of the WebSocket functions, done the same way:

- **$connect** goes through the Lambda REQUEST authorizer first: no
  ``Sec-WebSocket-Protocol`` header (its identity source) is 401 without
  calling it, a ``Deny`` policy is 403, an authorizer failure 500. Then the
  ``$connect`` integration: anything but a 2xx refuses the handshake with
  that status; a 2xx accepts it, selecting the subprotocol the integration
  answered in its ``Sec-WebSocket-Protocol`` header. The authorizer's context
  reaches every later event of the connection as ``requestContext.authorizer``.
- **Messages** route on ``$request.body.action``: a text frame whose JSON
  ``action`` names a route goes there, anything else to ``$default``. Routes
  with a route response send the integration's ``body`` back to the client;
  a failed integration sends ``{"message": "Internal server error", ...}``.
  Messages over 128 KB close the connection (1009).
- **$disconnect** is invoked when the connection closes (best effort in AWS:
  :meth:`LocalWebSocketGateway.vanish` drops a connection without it, as
  when API Gateway loses one).
- **@connections** on the same port, under the stage: ``POST`` sends to a
  connection, ``GET`` describes it, ``DELETE`` closes it; an unknown id is
  410 with ``x-amzn-ErrorType: GoneException`` (what makes boto3 raise
  ``GoneException``). Requests must be SigV4-signed (the signature is not
  checked: moto's credentials are fake anyway).

Beyond API Gateway: each connection's outgoing messages wait in a bounded
:class:`SendBuffer` that conflates data messages (the latest record per
instrument, :func:`lambdas.ws.protocol.merge_records`), so a client that
stops reading costs the gateway a bounded amount of memory and, when it
reads again, gets the latest values rather than a backlog. The socket's
kernel send buffer is kept small for the same reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from lambdas.ws.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_HEADER,
    Channel,
    data_messages,
    merge_records,
    offered_protocols,
    parse_data_message,
)
from sandbox.esm import InvokeResult

STAGE = "v1"
API_ID = "sandboxws"
ACCOUNT_ID = "123456789012"
ROUTE_KEYS = frozenset({"$connect", "$disconnect", "$default", "subscribe", "unsubscribe", "ping"})
TWO_WAY = frozenset({"$default", "subscribe", "unsubscribe", "ping"})
"""Routes with a route response: the integration's body goes back to the client."""
SOCKET_SEND_BUFFER = 32 * 1024
Invoke = Callable[[dict[str, Any]], InvokeResult]


# --------------------------------------------------------------------------- send buffer


@dataclass
class _Data:
    records: dict[Channel, dict[int, bytes]] = field(default_factory=dict)

    def size(self) -> int:
        return sum(len(r) for records in self.records.values() for r in records.values())

    def count(self) -> int:
        return sum(len(records) for records in self.records.values())

    def messages(self) -> Iterator[bytes]:
        for channel, records in self.records.items():
            yield from data_messages(channel, records.values())


class SendBufferFullError(Exception):
    """A connection's buffer would pass its bounds: the gateway drops the connection."""


class SendBuffer:
    """One connection's unsent messages, bounded, data conflated (sans-I/O).

    Messages keep their order, except that a data message merges into data
    still waiting at the tail (newer records replace older ones of the same
    instrument). If more than ``max_segments`` alternating runs pile up, all
    waiting data merges into the newest run. ``pending_bytes`` never passes
    ``max_control_bytes`` plus the records of ``max_records`` instruments.
    """

    def __init__(
        self, *, max_control_bytes: int = 1 << 20, max_records: int = 20_000, max_segments: int = 8
    ) -> None:
        self._segments: deque[bytes | _Data] = deque()
        self._max_control = max_control_bytes
        self._max_records = max_records
        self._max_segments = max_segments
        self.control_bytes = 0
        self.data_bytes = 0
        self.records = 0
        self.conflated = 0
        """Records replaced by a newer one before they were sent."""

    @property
    def pending_bytes(self) -> int:
        """What the buffer holds."""
        return self.control_bytes + self.data_bytes

    def __len__(self) -> int:
        return len(self._segments)

    def put(self, message: bytes) -> None:
        """Queue one message; :class:`SendBufferFullError` when it would pass the bounds."""
        parsed = parse_data_message(message)
        if parsed is None:
            if self.control_bytes + len(message) > self._max_control:
                raise SendBufferFullError("control messages")
            self._segments.append(message)
            self.control_bytes += len(message)
            return
        channel, records = parsed
        tail = self._segments[-1] if self._segments else None
        if not isinstance(tail, _Data):
            tail = _Data()
            self._segments.append(tail)
        self._merge(tail, channel, records)
        if len(self._segments) > self._max_segments:
            self._collapse()
        if self.records > self._max_records:
            raise SendBufferFullError("data records")

    def _merge(self, into: _Data, channel: Channel, records: dict[int, bytes]) -> None:
        existing = into.records.setdefault(channel, {})
        for token, record in records.items():
            old = existing.get(token)
            if old is not None:
                self.conflated += 1
                self.data_bytes -= len(old)
                self.records -= 1
            self.data_bytes += len(record)
            self.records += 1
        merge_records(existing, records)

    def _collapse(self) -> None:
        """Merge every waiting data run into the newest one (oldest first)."""
        runs = [s for s in self._segments if isinstance(s, _Data)]
        newest = runs[-1]
        merged = _Data()
        for run in runs:
            for channel, records in run.records.items():
                self.data_bytes -= sum(len(r) for r in records.values())
                self.records -= len(records)
                self._merge(merged, channel, records)
        self._segments = deque(
            merged if s is newest else s
            for s in self._segments
            if not isinstance(s, _Data) or s is newest
        )

    def take(self) -> list[bytes]:
        """The messages of the oldest waiting run (removed from the buffer)."""
        if not self._segments:
            return []
        segment = self._segments.popleft()
        if isinstance(segment, bytes):
            self.control_bytes -= len(segment)
            return [segment]
        self.data_bytes -= segment.size()
        self.records -= segment.count()
        return list(segment.messages())


# --------------------------------------------------------------------------- connections


@dataclass
class ClientConnection:
    """One WebSocket connection the gateway holds."""

    connection_id: str
    socket: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    authorizer: dict[str, Any]
    source_ip: str
    user_agent: str
    connected_at: float
    buffer: SendBuffer
    last_active: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    notify_disconnect: bool = True
    posts: int = 0
    sent: int = 0
    max_pending_bytes: int = 0
    writer: asyncio.Task[None] | None = None


@dataclass
class GatewayStats:
    """What the gateway did (tests and the report read it)."""

    connections: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    posts: int = 0
    gone: Counter[str] = field(default_factory=Counter)
    """410 answers per connection id."""
    messages_in: int = 0
    integration_errors: int = 0
    dropped_full: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def new_connection_id() -> str:
    """An id shaped like API Gateway's (12 base64 characters and a pad)."""
    return base64.b64encode(secrets.token_bytes(10)).decode()[:15] + "="


class LocalWebSocketGateway:
    """The WebSocket API in front of an authorizer and one routes function (see the module)."""

    def __init__(
        self,
        *,
        authorizer: Invoke,
        integration: Invoke,
        region: str = "ap-south-1",
        stage: str = STAGE,
        buffer_factory: Callable[[], SendBuffer] = SendBuffer,
        invoke_workers: int = 16,
    ) -> None:
        self._authorizer = authorizer
        self._integration = integration
        self.region = region
        self.stage = stage
        self._buffer_factory = buffer_factory
        self._executor = ThreadPoolExecutor(invoke_workers, thread_name_prefix="ws-invoke")
        self._connections: dict[str, ClientConnection] = {}
        self._handlers: set[asyncio.Task[Any]] = set()
        self.stats = GatewayStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._started = threading.Event()
        self._startup_error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where clients connect (the stage in the path, as API Gateway's default domain)."""
        return f"ws://127.0.0.1:{self._port}/{self.stage}"

    @property
    def management_url(self) -> str:
        """The ``@connections`` endpoint base (what the fan-out's SDK client is given)."""
        return f"http://127.0.0.1:{self._port}/{self.stage}"

    def start(self, port: int = 0) -> LocalWebSocketGateway:
        """Serve on 127.0.0.1 in a background thread (its own event loop)."""
        self._thread = threading.Thread(
            target=self._serve, args=(port,), name="ws-gateway", daemon=True
        )
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the WebSocket gateway did not start")
        if self._startup_error is not None:
            raise RuntimeError("the WebSocket gateway did not start") from self._startup_error
        return self

    def _serve(self, port: int) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start_site(port))
        except BaseException as exc:
            self._startup_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _start_site(self, port: int) -> None:
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        base = f"/{self.stage}"
        app.router.add_get(base, self._websocket)
        app.router.add_route("POST", base + "/@connections/{id}", self._post)
        app.router.add_route("GET", base + "/@connections/{id}", self._describe)
        app.router.add_route("DELETE", base + "/@connections/{id}", self._delete)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=256)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        for connection in list(self._connections.values()):
            await connection.socket.close(code=1001, message=b"going away")
        if self._handlers:  # each one invokes its connection's $disconnect as it ends
            await asyncio.wait(self._handlers, timeout=30)
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Close every connection (each gets its ``$disconnect``) and stop serving."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalWebSocketGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the gateway's loop from another thread; its result."""
        if self._loop is None:
            raise RuntimeError("the gateway is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    # -- what tests and the report look at ----------------------------------------------

    def connection_ids(self) -> list[str]:
        """The open connections."""

        async def ids() -> list[str]:
            return list(self._connections)

        return list(self._call(ids()))

    def pending_bytes(self, connection_id: str) -> tuple[int, int]:
        """(bytes waiting now, the most that ever waited) for one connection."""

        async def read() -> tuple[int, int]:
            connection = self._connections.get(connection_id)
            if connection is None:
                return 0, 0
            return connection.buffer.pending_bytes, connection.max_pending_bytes

        now, most = self._call(read())
        return int(now), int(most)

    def counts(self, connection_id: str) -> dict[str, int]:
        """Posts received, messages sent and records conflated for one connection."""

        async def read() -> dict[str, int]:
            connection = self._connections.get(connection_id)
            if connection is None:
                return {}
            return {
                "posts": connection.posts,
                "sent": connection.sent,
                "conflated": connection.buffer.conflated,
            }

        return dict(self._call(read()))

    def vanish(self, connection_id: str) -> bool:
        """Drop a connection abruptly *without* its ``$disconnect`` (API Gateway lost it)."""

        async def drop() -> bool:
            connection = self._connections.pop(connection_id, None)
            if connection is None:
                return False
            connection.notify_disconnect = False
            if isinstance(connection.transport, asyncio.WriteTransport):
                connection.transport.abort()
            return True

        return bool(self._call(drop()))

    # -- events -----------------------------------------------------------------------

    def _context(
        self, route: str, event_type: str, connection_id: str, **extra: Any
    ) -> dict[str, Any]:
        return {
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "messageDirection": "IN",
            "stage": self.stage,
            "requestTimeEpoch": _now_ms(),
            "requestId": str(uuid.uuid4()),
            "domainName": f"127.0.0.1:{self._port}",
            "connectionId": connection_id,
            "apiId": API_ID,
            **extra,
        }

    async def _invoke(self, function: Invoke, event: dict[str, Any]) -> InvokeResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, event)

    # -- the handshake ----------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        headers = dict(request.headers)
        protocol_header = request.headers.get(PROTOCOL_HEADER)
        source_ip = request.remote or "127.0.0.1"
        user_agent = request.headers.get("User-Agent", "")
        if not protocol_header:  # the authorizer's identity source is missing
            return self._refuse(401, "Unauthorized")
        connection_id = new_connection_id()
        identity = {"sourceIp": source_ip, "userAgent": user_agent}
        connected_at = _now_ms()
        context = self._context(
            "$connect", "CONNECT", connection_id, connectedAt=connected_at, identity=identity
        )
        authorizer_event = {
            "type": "REQUEST",
            "methodArn": (
                f"arn:aws:execute-api:{self.region}:{ACCOUNT_ID}:{API_ID}/{self.stage}/$connect"
            ),
            "headers": headers,
            "multiValueHeaders": {k: request.headers.getall(k) for k in request.headers},
            "queryStringParameters": dict(request.query),
            "multiValueQueryStringParameters": {k: request.query.getall(k) for k in request.query},
            "stageVariables": {},
            "requestContext": context,
        }
        result = await self._invoke(self._authorizer, authorizer_event)
        allowed, authorizer = _policy(result)
        if result.failed:
            return self._refuse(500, "Internal server error")
        if not allowed:
            return self._refuse(403, "Forbidden")
        connect_event = {
            "headers": headers,
            "multiValueHeaders": {k: request.headers.getall(k) for k in request.headers},
            "queryStringParameters": dict(request.query) or None,
            "requestContext": {**context, "authorizer": authorizer},
            "isBase64Encoded": False,
        }
        answer = await self._invoke(self._integration, connect_event)
        status, response_headers, body = _integration_answer(answer)
        if not 200 <= status < 300:
            self.stats.refused[status] += 1
            return web.Response(status=status, body=body, content_type="application/json")
        selected = response_headers.get(PROTOCOL_HEADER)
        offered = offered_protocols(protocol_header)
        ws = web.WebSocketResponse(
            protocols=(selected,) if selected and selected in offered else (),
            max_msg_size=MAX_MESSAGE_BYTES,
            compress=False,
            writer_limit=SOCKET_SEND_BUFFER,
        )
        await ws.prepare(request)
        raw = request.transport.get_extra_info("socket") if request.transport else None
        if raw is not None:  # asyncio's TransportSocket: the options of the real one
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        connection = ClientConnection(
            connection_id,
            ws,
            request.transport,
            authorizer,
            source_ip,
            user_agent,
            connected_at / 1000,
            self._buffer_factory(),
            last_active=time.time(),
        )
        self._connections[connection_id] = connection
        self.stats.connections += 1
        connection.writer = asyncio.create_task(self._write(connection))
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        code = 1006
        try:
            code = await self._read(connection, identity, connected_at)
        finally:
            self._connections.pop(connection_id, None)
            connection.writer.cancel()
            if connection.notify_disconnect:
                await self._disconnect(connection, identity, connected_at, code)
            if handler is not None:
                self._handlers.discard(handler)
        return ws

    def _refuse(self, status: int, message: str) -> web.Response:
        self.stats.refused[status] += 1
        return web.json_response({"message": message}, status=status)

    async def _read(
        self, connection: ClientConnection, identity: dict[str, str], connected_at: int
    ) -> int:
        ws = connection.socket
        async for message in ws:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            connection.last_active = time.time()
            self.stats.messages_in += 1
            text = message.data if message.type == WSMsgType.TEXT else None
            body = text if text is not None else base64.b64encode(message.data).decode()
            route = _route(text)
            context = self._context(
                route,
                "MESSAGE",
                connection.connection_id,
                connectedAt=connected_at,
                identity=identity,
                messageId=str(uuid.uuid4()),
                authorizer=connection.authorizer,
            )
            event = {
                "requestContext": context,
                "body": body,
                "isBase64Encoded": text is None,
            }
            result = await self._invoke(self._integration, event)
            if route not in TWO_WAY:
                continue
            if result.failed:
                self.stats.integration_errors += 1
                reply = json.dumps(
                    {
                        "message": "Internal server error",
                        "connectionId": connection.connection_id,
                        "requestId": context["requestId"],
                    }
                ).encode()
            else:
                _, _, reply = _integration_answer(result)
            if reply:
                self._enqueue(connection, reply)
        return int(ws.close_code or 1006)

    async def _disconnect(
        self, connection: ClientConnection, identity: dict[str, str], connected_at: int, code: int
    ) -> None:
        event = {
            "headers": {},
            "requestContext": {
                **self._context(
                    "$disconnect",
                    "DISCONNECT",
                    connection.connection_id,
                    connectedAt=connected_at,
                    identity=identity,
                    authorizer=connection.authorizer,
                ),
                "disconnectStatusCode": code,
                "disconnectReason": "",
            },
            "isBase64Encoded": False,
        }
        await self._invoke(self._integration, event)

    # -- sending ----------------------------------------------------------------------

    def _enqueue(self, connection: ClientConnection, message: bytes) -> bool:
        try:
            connection.buffer.put(message)
        except SendBufferFullError:
            self.stats.dropped_full += 1
            self._connections.pop(connection.connection_id, None)
            asyncio.get_running_loop().create_task(
                connection.socket.close(code=1008, message=b"send buffer full")
            )
            return False
        connection.max_pending_bytes = max(
            connection.max_pending_bytes, connection.buffer.pending_bytes
        )
        connection.wake.set()
        return True

    async def _write(self, connection: ClientConnection) -> None:
        """Send what the buffer holds, one run at a time; new posts conflate meanwhile."""
        ws = connection.socket
        try:
            while not ws.closed:
                await connection.wake.wait()
                connection.wake.clear()
                while messages := connection.buffer.take():
                    for message in messages:
                        await ws.send_str(message.decode())
                        connection.sent += 1
        except (ConnectionError, RuntimeError):
            return  # the socket closed under us; the reader sees it and disconnects

    # -- @connections -----------------------------------------------------------------

    async def _management(self, request: web.Request) -> ClientConnection | web.Response:
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("AWS4-HMAC-SHA256"):
            return web.json_response({"message": "Missing Authentication Token"}, status=403)
        connection_id = request.match_info["id"]
        connection = self._connections.get(connection_id)
        if connection is None or connection.socket.closed:
            self.stats.gone[connection_id] += 1
            return web.json_response(
                {"message": None}, status=410, headers={"x-amzn-ErrorType": "GoneException"}
            )
        return connection

    async def _post(self, request: web.Request) -> web.Response:
        found = await self._management(request)
        if isinstance(found, web.Response):
            return found
        data = await request.read()
        if len(data) > MAX_MESSAGE_BYTES:
            return web.json_response(
                {"message": "Message too long"},
                status=413,
                headers={"x-amzn-ErrorType": "PayloadTooLargeException"},
            )
        self.stats.posts += 1
        found.posts += 1
        if not self._enqueue(found, data):
            self.stats.gone[found.connection_id] += 1
            return web.json_response(
                {"message": None}, status=410, headers={"x-amzn-ErrorType": "GoneException"}
            )
        return web.Response(status=200)

    async def _describe(self, request: web.Request) -> web.Response:
        found = await self._management(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(  # the wire names are camelCase (boto3 maps them)
            {
                "connectedAt": _iso(found.connected_at),
                "identity": {"sourceIp": found.source_ip, "userAgent": found.user_agent},
                "lastActiveAt": _iso(found.last_active),
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        found = await self._management(request)
        if isinstance(found, web.Response):
            return found
        await found.socket.close(code=1000, message=b"")
        return web.Response(status=204)


def _route(text: str | None) -> str:
    """API Gateway's route selection on ``$request.body.action``."""
    if text is None:
        return "$default"
    try:
        body = json.loads(text)
    except ValueError:
        return "$default"
    action = body.get("action") if isinstance(body, dict) else None
    if isinstance(action, str) and action in ROUTE_KEYS and not action.startswith("$"):
        return action
    return "$default"


def _policy(result: InvokeResult) -> tuple[bool, dict[str, Any]]:
    """Whether an authorizer's answer allows ``$connect``, and the context routes will see."""
    payload = result.payload if isinstance(result.payload, dict) else {}
    statements = (payload.get("policyDocument") or {}).get("Statement") or []
    allowed = bool(statements) and all(
        isinstance(s, dict) and s.get("Effect") == "Allow" for s in statements
    )
    context = payload.get("context") if isinstance(payload.get("context"), dict) else {}
    return allowed, {"principalId": payload.get("principalId"), **(context or {})}


def _integration_answer(result: InvokeResult) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a Lambda proxy answer; 500 for a failed or malformed one."""
    payload = result.payload
    if result.failed or not isinstance(payload, dict):
        return 500, {}, b'{"message": "Internal server error"}'
    status = payload.get("statusCode", 200)
    if isinstance(status, bool) or not isinstance(status, int):
        return 500, {}, b'{"message": "Internal server error"}'
    headers = payload.get("headers") or {}
    body = payload.get("body") or ""
    if not isinstance(body, str) or not isinstance(headers, dict):
        return 500, {}, b'{"message": "Internal server error"}'
    data = base64.b64decode(body) if payload.get("isBase64Encoded") else body.encode()
    return status, {str(k): str(v) for k, v in headers.items()}, data
