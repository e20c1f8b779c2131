"""Where the day's instruments come from: an :class:`InstrumentSource`.

The container needs the dump for partition keys (token -> underlying), the
exchange and tradingsymbol in every record, and ATM windows. Sources:

* ``kite``: ``GET /instruments`` from Kite (or the simulator) through the
  project's one Kite client (:mod:`ticker_adapters.kite_rest`, synchronous:
  run in a worker thread);
* ``file:///path/instruments.csv``: a dump on disk;
* ``snapshot``: the snapshot the instruments function publishes where
  ``INSTRUMENTS_BUCKET``/``INSTRUMENTS_PREFIX`` say
  (``ticker_adapters.instrument_snapshots``: pointer ``current.json`` under the
  prefix, gzip object checked against the pointer's SHA-256).

Anything with an async ``load() -> InstrumentRegistry`` plugs in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport
from ticker_adapters.settings import SnapshotSettings
from ticker_core.instruments import InstrumentRegistry, parse_instruments

log = logging.getLogger("feed_container.instruments")


class InstrumentSource(Protocol):
    """Something that gives the day's instruments."""

    async def load(self) -> InstrumentRegistry:
        """The instruments, indexed."""
        ...


async def registry_from_csv(text: str) -> InstrumentRegistry:
    """Parse a dump (off the loop): bad rows are skipped and logged, a bad dump raises."""
    result = await asyncio.to_thread(parse_instruments, text)
    if result.problems:
        log.warning(
            "instruments rows rejected",
            extra={"rejected": len(result.problems), "first": str(result.problems[0])},
        )
    return InstrumentRegistry(result.instruments)


KITE_CONNECT_TIMEOUT_SECONDS = 10.0
KITE_DUMP_READ_TIMEOUT_SECONDS = 60.0
"""The dump is several MB: a long read, unlike an order's."""


class KiteInstrumentSource:
    """``GET /instruments`` from Kite (a public endpoint: no session needed)."""

    def __init__(self, client: KiteRestClient) -> None:
        self._client = client

    @classmethod
    def at(cls, kite_rest_url: str, plaintext_hosts: Collection[str] = ()) -> KiteInstrumentSource:
        """The source for the Kite (or simulator) root ``kite_rest_url``."""
        transport = KiteTransport(
            kite_rest_url,
            connect_timeout=KITE_CONNECT_TIMEOUT_SECONDS,
            read_timeout=KITE_DUMP_READ_TIMEOUT_SECONDS,
            plaintext_hosts=plaintext_hosts,
        )
        return cls(KiteRestClient("", transport=transport))

    async def load(self) -> InstrumentRegistry:
        """The dump Kite serves now."""
        dump = await asyncio.to_thread(self._client.instruments)
        return await registry_from_csv(dump.decode("utf-8"))


class FileInstrumentSource:
    """A CSV file on local disk."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def load(self) -> InstrumentRegistry:
        """The file's dump."""
        return await registry_from_csv(
            await asyncio.to_thread(self._path.read_text, encoding="utf-8")
        )


class SnapshotInstrumentSource:
    """The instruments function's published snapshot in S3 (cached by its reader)."""

    def __init__(self, s3_client: Any, settings: SnapshotSettings) -> None:
        self._reader = InstrumentSnapshotReader.from_settings(s3_client, settings)

    async def load(self) -> InstrumentRegistry:
        """The snapshot the pointer names now."""
        snapshot = await asyncio.to_thread(self._reader.current)
        return snapshot.registry


def source_from_setting(
    value: str,
    *,
    kite_rest_url: str,
    snapshot: SnapshotSettings | None = None,
    s3_client: Any = None,
    plaintext_hosts: Collection[str] = (),
) -> InstrumentSource:
    """The source named by ``FEED_INSTRUMENTS_SOURCE``."""
    if value == "kite":
        return KiteInstrumentSource.at(kite_rest_url, plaintext_hosts)
    if value == "snapshot":
        if snapshot is None or s3_client is None:
            raise ValueError("the snapshot source needs the snapshot settings and an S3 client")
        return SnapshotInstrumentSource(s3_client, snapshot)
    parsed = urlparse(value)
    if parsed.scheme == "file":
        return FileInstrumentSource(Path(parsed.path))
    raise ValueError(f"unknown instruments source {value!r}")


async def load_registry(source: InstrumentSource) -> InstrumentRegistry:
    """Load from ``source`` and log the size."""
    registry = await source.load()
    log.info("instruments loaded", extra={"instruments": len(registry)})
    return registry
