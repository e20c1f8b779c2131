"""Injectable faults for the feed's tests: a disk that fills up, credentials that cannot refresh.

Each fault is a real object behind the seam the feed already has (the
spill's :class:`~feed_container.spill.FileSystem`, botocore's refreshable
credentials), switched on for a while and off again, so the code under test
runs its real paths: the write that fails halfway, botocore's own refresh.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from botocore.credentials import RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError


class FaultWindow:
    """A fault that is on for a while: ``start(seconds)``; ``active`` until then; ``hits``
    counts what it broke."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0
        self.hits = 0

    def start(self, seconds: float) -> None:
        self._until = self._clock() + seconds

    def stop(self) -> None:
        self._until = 0.0

    @property
    def active(self) -> bool:
        return self._clock() < self._until


class FullDisk(FaultWindow):
    """The local file system, full on demand: a write keeps half its bytes and raises
    ``ENOSPC`` (as a disk filling up mid-write does), and no space is free."""

    def open(self, path: Path, mode: str) -> BinaryIO:
        handle = cast(BinaryIO, path.open(mode))
        if mode.startswith("r") and "+" not in mode:
            return handle
        return cast(BinaryIO, _FillingFile(handle, self))

    def free_bytes(self, directory: Path) -> int:
        return 0 if self.active else shutil.disk_usage(directory).free


class _FillingFile:
    def __init__(self, handle: BinaryIO, disk: FullDisk) -> None:
        self._handle = handle
        self._disk = disk

    def write(self, data: bytes) -> int:
        if self._disk.active:
            self._disk.hits += 1
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._handle.write(data)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *_: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class FailingRefresh(FaultWindow):
    """Task-role credentials whose refresh (the ECS credentials endpoint) fails on demand.

    Built on botocore's own :class:`RefreshableCredentials`: while the fault
    is on, every refresh raises ``CredentialRetrievalError`` and the current
    credentials are within botocore's mandatory-refresh window, so every use
    fails as it does in production; once it is off, the next refresh returns
    ``access_key``/``secret_key`` valid for an hour.
    """

    def __init__(
        self, access_key: str, secret_key: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(clock=clock)
        self._keys = (access_key, secret_key)
        self.credentials = RefreshableCredentials.create_from_metadata(
            self._metadata(timedelta(hours=1)), refresh_using=self._refresh, method="container-role"
        )

    def start(self, seconds: float) -> None:
        super().start(seconds)
        # Expiring within botocore's mandatory refresh window: the next use refreshes.
        self.credentials._expiry_time = datetime.now(UTC) + timedelta(seconds=60)

    def _metadata(self, valid_for: timedelta) -> dict[str, str]:
        access_key, secret_key = self._keys
        return {
            "access_key": access_key,
            "secret_key": secret_key,
            "token": "",
            "expiry_time": (datetime.now(UTC) + valid_for).isoformat(),
        }

    def _refresh(self) -> dict[str, str]:
        if self.active:
            self.hits += 1
            raise CredentialRetrievalError(provider="container-role", error_msg="endpoint down")
        return self._metadata(timedelta(hours=1))
