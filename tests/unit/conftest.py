"""tests/unit opens no sockets: creating one (or resolving a host name) fails the test.

Unit tests run at the lowest layer, without servers; anything that needs a
socket belongs in tests/integration. Unix socket pairs stay allowed: asyncio's
event loop wakes itself through one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_sockets() -> Iterator[None]:
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
