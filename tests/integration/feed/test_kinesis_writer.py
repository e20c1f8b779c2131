"""The Kinesis writer's outcomes against misbehaving HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from botocore.credentials import Credentials

from feed_container.kinesis import (
    KinesisAmbiguousError,
    KinesisThrottledError,
    KinesisUnavailableError,
    KinesisWriter,
)
from sandbox.postgres import free_port
from ticker_core.records import KinesisRecord, PutRecordsBatch

pytestmark = pytest.mark.integration
BATCH = PutRecordsBatch((KinesisRecord("NIFTY", b"{}", 1, 2),))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[KinesisWriter]]]:
    runners: list[web.AppRunner] = []
    writers: list[KinesisWriter] = []

    async def start(handler: Handler) -> KinesisWriter:
        app = web.Application()
        app.router.add_post("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        writer = KinesisWriter(
            endpoint_url=f"http://127.0.0.1:{port}",
            region="ap-south-1",
            credentials=Credentials("AKID" + secrets.token_hex(8), secrets.token_hex(20)),
            stream_name="ticks",
            timeout=0.5,
        )
        writers.append(writer)
        return writer

    yield start
    for writer in writers:
        await writer.close()
    for runner in runners:
        await runner.cleanup()


async def test_a_5xx_is_an_unknown_outcome(
    server: Callable[[Handler], Awaitable[KinesisWriter]],
) -> None:
    async def fail(_: web.Request) -> web.Response:
        return web.json_response({"__type": "InternalFailure"}, status=500)

    writer = await server(fail)
    with pytest.raises(KinesisAmbiguousError):
        await writer.put(BATCH)


async def test_a_throttled_call_says_nothing_was_written(
    server: Callable[[Handler], Awaitable[KinesisWriter]],
) -> None:
    async def throttle(_: web.Request) -> web.Response:
        return web.json_response({"__type": "LimitExceededException"}, status=400)

    writer = await server(throttle)
    with pytest.raises(KinesisThrottledError):
        await writer.put(BATCH)


async def test_no_answer_in_time_is_an_unknown_outcome(
    server: Callable[[Handler], Awaitable[KinesisWriter]],
) -> None:
    answer = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await answer.wait()  # no answer until the writer has given up
        return web.json_response({})

    writer = await server(hang)
    try:
        with pytest.raises(KinesisAmbiguousError):
            await writer.put(BATCH)
    finally:
        answer.set()


async def test_a_refused_connection_is_unavailable() -> None:
    writer = KinesisWriter(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="ap-south-1",
        credentials=Credentials("AKID" + secrets.token_hex(8), secrets.token_hex(20)),
        stream_name="ticks",
        timeout=0.5,
    )
    with pytest.raises(KinesisUnavailableError):
        await writer.put(BATCH)
    await writer.close()
