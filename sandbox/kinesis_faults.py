"""An HTTP proxy in front of moto's server that makes Kinesis misbehave on command.

moto answers every PutRecords in full; real Kinesis refuses entries when a
shard is over its throughput, throttles whole calls and has outages. This
proxy sits on 127.0.0.1 between the AWS SDK and moto (point
``AWS_ENDPOINT_URL`` or the client's ``endpoint_url`` at it) and, for
PutRecords only, can:

* ``fail_entries(every=n, calls=k)``: in the next ``k`` calls, refuse every
  ``n``-th entry (counted across those calls) with
  ``ProvisionedThroughputExceededException``. Refused entries are **not**
  forwarded, so they are not written, exactly as with Kinesis; the answer
  merges moto's results with the refusals in request order.
* ``throttle_calls(k)``: answer the next ``k`` calls with HTTP 400
  ``ProvisionedThroughputExceededException`` without forwarding them.
* ``down()`` / ``up()``: stop listening (connections are refused) and listen
  again on the same port: an outage.

Everything else is forwarded unchanged. It runs its own event loop in a
daemon thread so synchronous and asynchronous tests, the sandbox and
benchmarks can all drive it. Counters say what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import ClientSession, web

T = TypeVar("T")
PUT_RECORDS = "Kinesis_20131202.PutRecords"
THROTTLED = "ProvisionedThroughputExceededException"
_FORWARDED_HEADERS = ("Content-Type", "X-Amz-Target", "X-Amz-Date", "Authorization")


class KinesisFaultProxy:
    """Forward 127.0.0.1:<port> to moto, injecting Kinesis faults into PutRecords."""

    def __init__(self, target_url: str, port: int = 0) -> None:
        self.target_url = target_url.rstrip("/")
        self.port = port
        self.put_calls = 0
        self.entries_refused = 0
        self.calls_throttled = 0
        self._fail_every = 0
        self._fail_calls = 0
        self._entry_seq = 0
        self._throttle_calls = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kinesis-faults", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        """The endpoint URL to give the AWS SDK."""
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> str:
        """Start listening; returns the URL."""
        self._thread.start()
        self._call(self._start())
        return self.url

    async def _start(self) -> None:
        self._session = ClientSession()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None  # nosec B101 # set by _start
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server  # the bound port of an ephemeral bind
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    # -- control -----------------------------------------------------------------

    def fail_entries(self, every: int, calls: int = 1) -> None:
        """Refuse every ``every``-th entry (counted across calls) of the next ``calls`` calls."""
        self._fail_every, self._fail_calls = every, calls

    def throttle_calls(self, calls: int) -> None:
        """Answer the next ``calls`` PutRecords calls with a whole-call throttle."""
        self._throttle_calls = calls

    def down(self) -> None:
        """Stop listening: new connections are refused."""
        self._call(self._down())

    async def _down(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        # Kept-alive connections would go on being served: close them too.
        server = self._runner.server if self._runner is not None else None
        for handler in list(server.connections if server is not None else []):
            handler.force_close()

    def up(self) -> None:
        """Listen again on the same port (no-op while listening)."""
        if self._site is None:
            self._call(self._listen())

    def close(self) -> None:
        """Stop the proxy and its thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def __enter__(self) -> KinesisFaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- proxying ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if target != PUT_RECORDS:
            return await self._forward(request, body)
        self.put_calls += 1
        if self._throttle_calls > 0:
            self._throttle_calls -= 1
            self.calls_throttled += 1
            error = {"__type": THROTTLED, "message": "Rate exceeded for stream (injected)."}
            return web.json_response(error, status=400, content_type="application/x-amz-json-1.1")
        if self._fail_calls <= 0 or self._fail_every <= 0:
            return await self._forward(request, body)
        self._fail_calls -= 1
        return await self._partial(request, body)

    async def _partial(self, request: web.Request, body: bytes) -> web.Response:
        payload = json.loads(body)
        records = payload["Records"]
        refused = set()
        for i in range(len(records)):
            self._entry_seq += 1
            if self._entry_seq % self._fail_every == 0:
                refused.add(i)
        payload["Records"] = [r for i, r in enumerate(records) if i not in refused]
        answers: list[dict[str, Any]] = []
        if payload["Records"]:
            response = await self._forward(request, json.dumps(payload).encode())
            if response.status != 200:
                return response
            answers = json.loads(response.body)["Records"]  # type: ignore[arg-type]
        merged, forwarded = [], iter(answers)
        for i in range(len(records)):
            if i in refused:
                merged.append(
                    {"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded for shard (injected)."}
                )
            else:
                merged.append(next(forwarded))
        self.entries_refused += len(refused)
        failed = sum(1 for r in merged if "ErrorCode" in r)
        answer = {"FailedRecordCount": failed, "Records": merged}
        return web.json_response(answer, content_type="application/x-amz-json-1.1")

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None  # nosec B101 # set by _start
        headers = {k: request.headers[k] for k in _FORWARDED_HEADERS if k in request.headers}
        async with self._session.request(
            request.method, self.target_url + request.path_qs, data=body, headers=headers
        ) as upstream:
            content = await upstream.read()
            return web.Response(
                body=content,
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")},
            )
