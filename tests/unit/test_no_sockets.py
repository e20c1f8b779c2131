"""The guard in tests/unit/conftest.py: a unit test that opens a network socket fails."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import pytest
from pytest_socket import SocketBlockedError

pytestmark = pytest.mark.filterwarnings("ignore:A test tried to use socket")


def test_creating_a_network_socket_fails() -> None:
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)


def test_connecting_to_loopback_fails_too() -> None:
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    with pytest.raises(SocketBlockedError):
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)  # nosec B310 # never sent


async def test_an_asyncio_connection_fails_while_the_loop_itself_runs() -> None:
    # The running loop (its self-pipe is a Unix socket pair) is allowed; a TCP connection is not
    with pytest.raises(SocketBlockedError):
        await asyncio.open_connection("127.0.0.1", 9)
