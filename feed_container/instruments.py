"""Where the day's instruments come from: an :class:`InstrumentSource`.

The container needs the dump for partition keys (token -> underlying), the
exchange and tradingsymbol in every record, and ATM windows. Sources:

* ``kite``: ``GET /instruments`` from Kite (or the simulator) through
  :mod:`feed_container.broker`;
* ``file:///path/instruments.csv``: a snapshot on disk;
* ``s3://bucket/key``: the snapshot the instruments Lambda publishes.

Anything with an async ``load() -> str`` (the CSV text) plugs in.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from feed_container.broker import KiteRest
from ticker_core.instruments import InstrumentRegistry, parse_instruments

log = logging.getLogger("feed_container.instruments")


class InstrumentSource(Protocol):
    """Something that fetches the day's instruments dump as Kite's CSV."""

    async def load(self) -> str:
        """The CSV text."""
        ...


class KiteInstrumentSource:
    """``GET /instruments`` from Kite."""

    def __init__(self, rest: KiteRest) -> None:
        self._rest = rest

    async def load(self) -> str:
        """The dump Kite serves now."""
        return await self._rest.instruments_csv()


class FileInstrumentSource:
    """A CSV file on local disk."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def load(self) -> str:
        """The file's text."""
        return await asyncio.to_thread(self._path.read_text, encoding="utf-8")


class S3InstrumentSource:
    """An S3 object (the instruments Lambda's published snapshot)."""

    def __init__(self, s3_client: Any, bucket: str, key: str) -> None:
        self._s3 = s3_client
        self._bucket = bucket
        self._key = key

    async def load(self) -> str:
        """The object's body as text."""

        def get() -> str:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key)["Body"]
            return str(body.read().decode("utf-8"))

        return await asyncio.to_thread(get)


def source_from_setting(
    value: str, *, kite_rest_url: str, s3_client: Any = None
) -> InstrumentSource:
    """The source named by ``FEED_INSTRUMENTS_SOURCE``."""
    if value == "kite":
        return KiteInstrumentSource(KiteRest(kite_rest_url))
    parsed = urlparse(value)
    if parsed.scheme == "file":
        return FileInstrumentSource(Path(parsed.path))
    if parsed.scheme == "s3":
        if s3_client is None:
            raise ValueError("an s3:// instruments source needs an S3 client")
        return S3InstrumentSource(s3_client, parsed.netloc, parsed.path.lstrip("/"))
    raise ValueError(f"unknown instruments source {value!r}")


async def load_registry(source: InstrumentSource) -> InstrumentRegistry:
    """Fetch and parse; bad rows are skipped (and logged), a bad dump raises."""
    text = await source.load()
    result = await asyncio.to_thread(parse_instruments, text)
    if result.problems:
        log.warning(
            "instruments rows rejected",
            extra={"rejected": len(result.problems), "first": str(result.problems[0])},
        )
    registry = InstrumentRegistry(result.instruments)
    log.info("instruments loaded", extra={"instruments": len(registry)})
    return registry
