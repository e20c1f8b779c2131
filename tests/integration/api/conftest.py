"""The trading API on loopback for the acceptance tests (``sandbox.api_stack``): one per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.api_stack import Stack, api_stack
from sandbox.moto_server import MotoServer
from sandbox.postgres import ConnectionInfo

__all__ = ["Stack"]


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, postgres: ConnectionInfo) -> Iterator[Stack]:
    with api_stack(moto_server, postgres) as running:
        yield running
