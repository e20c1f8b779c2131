"""The day's instruments snapshot in S3: its layout, its pointer, and a cached reader.

The instruments function publishes Kite's dump once a day; the greeks
function, the feed container and the API read it. Layout under a prefix
(``instruments/`` by default)::

    instruments/2026-11-27/<sha256>.csv.gz   the dump (gzip), named by the SHA-256 of its CSV
    instruments/current.json                 the pointer: which snapshot is current

The pointer (:class:`SnapshotPointer`) is JSON: format version, IST date,
SHA-256 of the uncompressed CSV, the object key, when it was published and
the dump's :class:`ticker_core.instruments.DumpSummary` (tomorrow's baseline).

Publication order makes a half-published snapshot invisible: the snapshot
object is written first (content-addressed, so writing it again is harmless),
the pointer last. S3 writes are atomic per object and reads after a write are
strongly consistent, so whoever reads the pointer finds a complete object;
the reader also checks the object's SHA-256 against the pointer.

Shared by Lambdas and the feed container, so this module imports only the
standard library, botocore's errors and ``ticker_core`` (the S3 client is
passed in); never Powertools.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ticker_adapters.settings import DEFAULT_PREFIX, SnapshotSettings
from ticker_core.calendar import parse_iso_date
from ticker_core.instruments import (
    DumpSummary,
    InstrumentRegistry,
    InstrumentsError,
    parse_instruments,
)

POINTER_FORMAT = 1
POINTER_NAME = "current.json"
SHA256_HEX_CHARS = 64

log = logging.getLogger(__name__)


class SnapshotError(Exception):
    """Base class for snapshot failures."""


class SnapshotUnavailableError(SnapshotError):
    """No snapshot can be read (no pointer yet, S3 unreachable) and none is cached."""


class SnapshotCorruptError(SnapshotError):
    """The pointer or the object it names is malformed, or its SHA-256 does not match."""


def normalize_prefix(prefix: str) -> str:
    """``prefix`` with exactly one trailing slash (empty stays empty: the bucket root)."""
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def pointer_key(prefix: str = DEFAULT_PREFIX) -> str:
    """Key of the pointer object."""
    return normalize_prefix(prefix) + POINTER_NAME


def snapshot_key(day: date, sha256: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Key of the snapshot object for ``day`` whose CSV has digest ``sha256``."""
    return f"{normalize_prefix(prefix)}{day.isoformat()}/{sha256}.csv.gz"


def csv_digest(csv_bytes: bytes) -> str:
    """Hex SHA-256 of the uncompressed CSV: the snapshot's identity."""
    return hashlib.sha256(csv_bytes).hexdigest()


def compress(csv_bytes: bytes) -> bytes:
    """Deterministic gzip (no timestamp, no name): equal dumps give equal objects."""
    return gzip.compress(csv_bytes, compresslevel=6, mtime=0)


@dataclass(frozen=True)
class SnapshotPointer:
    """What ``current.json`` says: the current snapshot and its summary."""

    day: date
    sha256: str
    key: str
    published_at: datetime
    summary: DumpSummary

    def to_json(self) -> bytes:
        """The pointer object's body."""
        return json.dumps(
            {
                "format": POINTER_FORMAT,
                "date": self.day.isoformat(),
                "sha256": self.sha256,
                "key": self.key,
                "published_at": self.published_at.isoformat(),
                "summary": self.summary.as_dict(),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> SnapshotPointer:
        """Parse a pointer body; :class:`SnapshotCorruptError` if it is not one."""
        try:
            data = json.loads(body)
            if not isinstance(data, Mapping) or data.get("format") != POINTER_FORMAT:
                raise SnapshotCorruptError("pointer has an unknown format")
            sha = str(data["sha256"])
            if len(sha) != SHA256_HEX_CHARS or not all(c in "0123456789abcdef" for c in sha):
                raise SnapshotCorruptError("pointer sha256 is not a hex SHA-256")
            published_at = datetime.fromisoformat(str(data["published_at"]))
            if published_at.tzinfo is None:
                raise SnapshotCorruptError("pointer published_at has no UTC offset")
            return cls(
                day=parse_iso_date(str(data["date"])),
                sha256=sha,
                key=str(data["key"]),
                published_at=published_at,
                summary=DumpSummary.from_dict(data["summary"]),
            )
        except SnapshotCorruptError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SnapshotCorruptError(f"malformed pointer: {exc!r:.200}") from exc


@dataclass(frozen=True)
class InstrumentSnapshot:
    """A published snapshot, parsed: the pointer that named it and its registry."""

    pointer: SnapshotPointer
    registry: InstrumentRegistry
    rejected_rows: int


def read_pointer(s3: Any, bucket: str, prefix: str = DEFAULT_PREFIX) -> SnapshotPointer | None:
    """The current pointer, or None when nothing has been published yet."""
    try:
        body = s3.get_object(Bucket=bucket, Key=pointer_key(prefix))["Body"].read()
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return SnapshotPointer.from_json(body)


def load_snapshot(s3: Any, bucket: str, pointer: SnapshotPointer) -> InstrumentSnapshot:
    """Download, verify and parse the snapshot ``pointer`` names."""
    compressed = s3.get_object(Bucket=bucket, Key=pointer.key)["Body"].read()
    try:
        csv_bytes = gzip.decompress(compressed)
    except (OSError, EOFError) as exc:
        raise SnapshotCorruptError(f"{pointer.key} is not gzip") from exc
    if csv_digest(csv_bytes) != pointer.sha256:
        raise SnapshotCorruptError(f"{pointer.key} does not match the pointer's sha256")
    try:
        parsed = parse_instruments(csv_bytes.decode("utf-8"))
    except (UnicodeDecodeError, InstrumentsError) as exc:
        raise SnapshotCorruptError(f"{pointer.key} is not an instruments dump: {exc}") from exc
    return InstrumentSnapshot(pointer, InstrumentRegistry(parsed.instruments), len(parsed.problems))


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class InstrumentSnapshotReader:
    """The current snapshot, cached across calls and refreshed when the pointer moves.

    The pointer is re-read at most every ``recheck_seconds`` (a conditional
    GET on its ETag: an unchanged pointer costs one small request and no
    body). A new pointer naming the same SHA-256 keeps the parsed registry.
    If a refresh fails while a snapshot is cached, the cached one is served
    (and the failure logged) until a later check succeeds: a stale registry
    for a minute is better than no Greeks. With nothing cached, failures
    raise :class:`SnapshotUnavailableError` or :class:`SnapshotCorruptError`.
    Thread-safe.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        recheck_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if recheck_seconds < 0:
            raise ValueError("recheck_seconds must be >= 0")
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: InstrumentSnapshot | None = None
        self._etag: str | None = None
        self._checked_at = float("-inf")
        self.loads = 0
        """How many times a snapshot object was downloaded and parsed (for metrics)."""
        self.last_error: Exception | None = None
        """The last refresh failure while a cached snapshot was served, if any."""

    @classmethod
    def from_settings(cls, s3: Any, settings: SnapshotSettings) -> InstrumentSnapshotReader:
        """The reader of the snapshot ``INSTRUMENTS_*`` describe."""
        return cls(
            s3, settings.bucket, prefix=settings.prefix, recheck_seconds=settings.recheck_seconds
        )

    def current(self) -> InstrumentSnapshot:
        """The current snapshot (cached, re-checked at most every ``recheck_seconds``)."""
        with self._lock:
            now = self._clock()
            if self._snapshot is not None and now - self._checked_at < self._recheck:
                return self._snapshot
            try:
                self._refresh()
            except (ClientError, BotoCoreError, SnapshotError) as exc:
                if self._snapshot is None:
                    if isinstance(exc, SnapshotError):
                        raise
                    raise SnapshotUnavailableError(f"cannot read the snapshot: {exc}") from exc
                self.last_error = exc
                log.warning("instruments snapshot refresh failed; serving the cached one: %s", exc)
            else:
                self.last_error = None
            self._checked_at = now
            if self._snapshot is None:  # a 304 is only asked for with a snapshot cached
                raise SnapshotUnavailableError("no instruments snapshot loaded")
            return self._snapshot

    def _refresh(self) -> None:
        extra = {"IfNoneMatch": self._etag} if self._etag and self._snapshot else {}
        try:
            response = self._s3.get_object(
                Bucket=self._bucket, Key=pointer_key(self._prefix), **extra
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("304", "NotModified"):
                return
            if code in ("NoSuchKey", "404"):
                raise SnapshotUnavailableError(
                    f"no instruments snapshot published at s3://{self._bucket}/"
                    f"{pointer_key(self._prefix)}"
                ) from exc
            raise
        pointer = SnapshotPointer.from_json(response["Body"].read())
        etag = str(response.get("ETag", ""))
        if self._snapshot is None or self._snapshot.pointer.sha256 != pointer.sha256:
            self._snapshot = load_snapshot(self._s3, self._bucket, pointer)
            self.loads += 1
        else:
            self._snapshot = InstrumentSnapshot(
                pointer, self._snapshot.registry, self._snapshot.rejected_rows
            )
        self._etag = etag
