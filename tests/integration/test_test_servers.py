"""The loopback servers every other integration test stands on behave as promised."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import asyncpg
import boto3
import pytest

from sandbox.moto_server import MotoServer
from sandbox.postgres import ConnectionInfo, EmbeddedPostgres, PostgresError, _make_tls_material
from sandbox.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def verified_tls(info: ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(info.ca_file))
    context.check_hostname = True
    return context


async def connect(info: ConnectionInfo, tls: ssl.SSLContext | bool) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=info.host,
        port=info.port,
        user=info.user,
        password=info.password,
        database=info.database,
        ssl=tls,
    )


async def test_postgres_accepts_verified_tls_and_refuses_plaintext(
    postgres_server: EmbeddedPostgres | None, postgres: ConnectionInfo, tmp_path: Path
) -> None:
    if postgres_server is None:
        pytest.skip("external DATABASE_URL: TLS material is not ours")
    # Given the embedded server's TLS endpoint
    # When a client connects verifying the server certificate, Then it gets a session
    conn = await connect(postgres, verified_tls(postgres))
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
    # When a client trusts some other certificate, Then verification fails
    other_cert, _ = _make_tls_material(tmp_path)
    stranger = ssl.create_default_context(cafile=str(other_cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(postgres, stranger)
    # When a client tries plaintext, Then it is turned away with a clear error
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="TLS is required"):
        await connect(postgres, False)


async def test_postgres_restart_keeps_data_and_drops_sessions() -> None:
    # Given a private server with a committed row and an open session
    with EmbeddedPostgres() as server:
        info = server.info
        conn = await asyncpg.connect(info.dsn)
        await conn.execute("create table t (x int); insert into t values (42)")
        # When the server crashes and comes back on the same port
        server.restart(mode="immediate")
        # Then the old session is dead
        with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, OSError)):
            await conn.fetchval("select 1")
        conn.terminate()
        # And the committed data survived
        conn = await asyncpg.connect(info.dsn)
        try:
            assert await conn.fetchval("select x from t") == 42
        finally:
            await conn.close()
    # And nothing is left running
    assert not server.running


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_tcp_proxy_forwards_drops_refuses_and_blackholes() -> None:
    # Given an echo server behind the proxy
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = TcpProxy("127.0.0.1", port)
    proxy_port = await asyncio.to_thread(proxy.start)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        # When bytes go through, Then they come back
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

        # When the proxy blackholes traffic, Then the connection stays open but silent
        proxy.blackhole(True)
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)
        proxy.blackhole(False)

        # When the proxy drops connections, Then the client sees the connection end
        assert await asyncio.to_thread(proxy.drop_connections) == 1
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()

        # When the proxy refuses, Then a new connection is reset at once
        proxy.refuse(True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
    finally:
        await asyncio.to_thread(proxy.close)
        server.close()
        await server.wait_closed()


def test_moto_server_serves_kinesis_and_resets(moto_server: MotoServer) -> None:
    # Given a stream created through the real HTTP API
    moto_server.reset()
    kinesis = boto3.client("kinesis", **moto_server.endpoint.client_kwargs())
    kinesis.create_stream(StreamName="ticks", ShardCount=1)
    assert kinesis.list_streams()["StreamNames"] == ["ticks"]
    # When the server is reset, Then the stream is gone
    moto_server.reset()
    assert kinesis.list_streams()["StreamNames"] == []
    # And the server listens on loopback only
    assert moto_server.url.startswith("http://127.0.0.1:")


def test_servers_stop_cleanly_and_idempotently() -> None:
    # Given a private moto server used as a context manager
    with MotoServer() as server:
        # When it is started again while running, Then it is the same endpoint
        assert server.start() == server.endpoint
    # Then it is stopped, and stopping again is harmless
    server.stop()

    # Given an embedded PostgreSQL that was never started
    pg = EmbeddedPostgres()
    # Then asking for its TLS front is a clear error, and closing is harmless
    with pytest.raises(PostgresError, match="not started"):
        _ = pg.front
    pg.close()
    assert not pg.running
    assert pg.tail_log() == "(no log)"


async def test_postgres_front_drops_client_sessions_on_command(
    postgres_server: EmbeddedPostgres | None, postgres: ConnectionInfo
) -> None:
    if postgres_server is None:
        pytest.skip("external DATABASE_URL: no TLS front to drive")
    # Given a session through the TLS front
    conn = await connect(postgres, verified_tls(postgres))
    # When the front drops its connections
    dropped = await asyncio.to_thread(postgres_server.front.drop_connections)
    # Then the client's session dies while the server keeps running
    assert dropped >= 1
    with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)):
        await conn.fetchval("select 1")
    conn.terminate()
    assert postgres_server.running
