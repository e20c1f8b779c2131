"""An HTTP proxy in front of moto that throttles Kinesis writes on command (sandbox chaos).

Producers (the feed container, the Greeks function) get it as their Kinesis
endpoint (``AWS_ENDPOINT_URL_KINESIS``); everything passes through untouched
until :meth:`KinesisFaultProxy.throttle` opens a window, during which writes
are refused the two ways Kinesis refuses them when a shard is over its
throughput: a whole ``PutRecords``/``PutRecord`` call answered HTTP 400
``ProvisionedThroughputExceededException`` (nothing written), and a
``PutRecords`` call that succeeds partly, with some entries carrying that
error code (those entries not written). Refusals alternate between the two,
and every other entry of a partial call is refused, so a producer must retry
exactly the failed entries, in order, to lose and duplicate nothing.
:meth:`KinesisFaultProxy.down` and :meth:`~KinesisFaultProxy.up` make the
endpoint unreachable and reachable again (connections refused): an outage.

Runs its own event loop in a daemon thread, like :class:`sandbox.tcp_proxy.TcpProxy`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

T = TypeVar("T")
TARGET_HEADER = "X-Amz-Target"
PUT_RECORDS = "Kinesis_20131202.PutRecords"
PUT_RECORD = "Kinesis_20131202.PutRecord"
THROTTLED = "ProvisionedThroughputExceededException"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
)
JSON_TYPE = "application/x-amz-json-1.1"


class KinesisFaultProxy:
    """Forward 127.0.0.1:<port> to a moto server; throttle Kinesis writes on command."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url.rstrip("/")
        self.port = 0
        self.requests = 0
        self.calls_refused = 0
        self.entries_refused = 0
        self._throttle_until = 0.0
        self._refuse_remaining = 0
        self._refusals = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kinesis-proxy", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> str:
        """Start listening on an ephemeral loopback port; returns the URL."""
        self._thread.start()
        self.port = self._call(self._start())
        return self.url

    async def _start(self) -> int:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        return await self._listen(0)

    async def _listen(self, port: int) -> int:
        if self._runner is None:
            raise RuntimeError("proxy not started")
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    # -- control ---------------------------------------------------------------------------

    def throttle(self, seconds: float) -> None:
        """Refuse Kinesis writes for the next ``seconds`` (chaos runs: real elapsed time)."""
        self._throttle_until = time.monotonic() + seconds

    def refuse_next(self, calls: int) -> None:
        """Refuse the next ``calls`` write calls, however long they take to arrive.

        Tests use this rather than :meth:`throttle`: a time window can close
        before a slow (loaded) client sends anything, and the test then sees
        no throttling at all. Refusals alternate as with :meth:`throttle`.
        """
        if calls < 0:
            raise ValueError("calls must be >= 0")
        self._refuse_remaining = calls

    @property
    def throttling(self) -> bool:
        return self._refuse_remaining > 0 or time.monotonic() < self._throttle_until

    def down(self) -> None:
        """Stop listening and close kept-alive connections: new calls are refused."""
        self._call(self._down())

    async def _down(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server if self._runner is not None else None
        for handler in list(server.connections if server is not None else []):
            handler.force_close()

    def up(self) -> None:
        """Listen again on the same port (no-op while listening)."""
        if self._site is None:
            self._call(self._listen(self.port))

    def close(self) -> None:
        """Stop serving and stop the loop's thread."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- forwarding ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        target = request.headers.get(TARGET_HEADER, "")
        if self.throttling and target in (PUT_RECORDS, PUT_RECORD):
            self._refuse_remaining = max(0, self._refuse_remaining - 1)
            self._refusals += 1
            if target == PUT_RECORD or self._refusals % 2:
                self.calls_refused += 1
                return _throttled_call()
            return await self._partial(request, body)
        status, headers, payload = await self._forward(request, body)
        return web.Response(status=status, headers=headers, body=payload)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            raise RuntimeError("proxy not started")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method, self.target_url + request.path_qs, headers=headers, data=body
        ) as response:
            payload = await response.read()
            out = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            return response.status, out, payload

    async def _partial(self, request: web.Request, body: bytes) -> web.Response:
        """Write every other entry; refuse the rest the way Kinesis reports per-entry throttling."""
        document = json.loads(body)
        entries = document.get("Records", [])
        kept = [i for i in range(len(entries)) if i % 2]
        results: list[dict[str, Any]] = [
            {"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded for shard (sandbox chaos)."}
            for _ in entries
        ]
        if kept:
            forwarded = json.dumps({**document, "Records": [entries[i] for i in kept]}).encode()
            status, headers, payload = await self._forward(request, forwarded)
            if status != 200:
                return web.Response(status=status, headers=headers, body=payload)
            written = json.loads(payload)["Records"]
            for index, result in zip(kept, written, strict=True):
                results[index] = result
        failed = sum(1 for r in results if "ErrorCode" in r)
        self.entries_refused += failed
        reply = {"FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE"}
        return web.Response(body=json.dumps(reply).encode(), content_type=JSON_TYPE)


def _throttled_call() -> web.Response:
    body = {"__type": THROTTLED, "message": "Rate exceeded for stream (sandbox chaos)."}
    return web.Response(status=400, body=json.dumps(body).encode(), content_type=JSON_TYPE)
