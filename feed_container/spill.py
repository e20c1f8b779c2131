"""Disk spill for one sender lane: append-only segment files, read back in order.

When Kinesis is slower than the feed for longer than the memory budget
allows, whole PutRecords batches are appended here and read back, oldest
first, as memory frees up. Nothing in this module decides *when*; it keeps
order, survives restarts and detects corruption.

Layout: ``<dir>/<seq>.seg`` files (``seq`` a zero-padded integer, oldest
lowest), each a sequence of entries::

    magic "FSP1" | uint32 payload length | uint32 CRC-32 of payload | payload
    payload = uint16 records, then per record:
              uint16 key length | key (UTF-8) | uint32 user records | uint32 user bytes
              | uint32 data length | data

and ``<seq>.ack`` beside a segment: the number of its leading entries
Kinesis has acknowledged (rewritten atomically), so a restart resends only
what was not acknowledged. A segment is deleted once every entry in it is
acknowledged and nothing more will be written to it.

Corruption (a crash mid-append, a bad disk): an entry whose header or CRC
does not check out ends that segment; the bytes from there on are counted in
``corrupt_bytes`` and reading continues with the next segment. Entries are
written with one ``write`` and flushed, so a process crash loses at most the
entry being written; a kernel crash may lose what the page cache held.

A disk that refuses writes (full, failing): an append that fails raises
:class:`SpillWriteError` after putting the store back as it was (the torn
entry cut off, the segment sealed so nothing is ever appended after it), so
the caller keeps the batch and tries again later; an acknowledgement that
cannot be written is kept in memory and written with the next one. Every
failed write is counted by errno in :attr:`SpillStore.write_errors`. The
budget is also checked against the free space (:func:`usable_budget` at
start, and before each new segment), so a budget larger than the disk is
reported at once instead of at the first ``ENOSPC``.

All file access goes through a :class:`FileSystem` (the local one by
default), the seam tests use to make the disk full on demand.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import struct
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ticker_core.records import KinesisRecord, PutRecordsBatch

log = logging.getLogger("feed_container.spill")

MAGIC = b"FSP1"
_HEADER = struct.Struct(">4sII")
_COUNT = struct.Struct(">H")
_KEY = struct.Struct(">H")
_RECORD = struct.Struct(">III")
_ACK = struct.Struct(">Q")
#: Where fresh segments start numbering; shutdown writes its front segment below the oldest.
_FIRST_SEQ = 10**12
SUFFIX = ".seg"
ACK_SUFFIX = ".ack"


class SpillCorruptError(ValueError):
    """An entry that does not decode (internal: ends the segment's read)."""


class SpillWriteError(Exception):
    """The disk refused a write (full, read-only, failing); nothing was appended.

    ``error`` is the errno name (``ENOSPC``), for counting and logs.
    """

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error


class FileSystem(Protocol):
    """The file operations the spill uses: the seam for a full or failing disk in tests."""

    def open(self, path: Path, mode: str) -> BinaryIO:
        """``path.open(mode)`` (binary modes only)."""
        ...

    def free_bytes(self, directory: Path) -> int:
        """Bytes free for this process on the file system holding ``directory``."""
        ...


class LocalFileSystem:
    """The real disk."""

    def open(self, path: Path, mode: str) -> BinaryIO:
        """Open ``path`` in a binary ``mode``."""
        return path.open(mode)  # type: ignore[return-value]  # binary modes only

    def free_bytes(self, directory: Path) -> int:
        """``shutil.disk_usage(directory).free``."""
        return shutil.disk_usage(directory).free


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def usable_budget(directory: Path, configured: int, *, fs: FileSystem | None = None) -> int:
    """The spill budget the disk can hold: ``configured``, or less when the file system
    holding ``directory`` has less free space (plus the segments already under it).

    Logs a WARNING naming both figures when the budget has to shrink: a budget
    the disk cannot hold would otherwise only show as write errors at the worst
    time, in the middle of a Kinesis outage.
    """
    directory.mkdir(parents=True, exist_ok=True)
    used = sum(path.stat().st_size for path in directory.rglob("*" + SUFFIX))
    available = used + (fs or LocalFileSystem()).free_bytes(directory)
    if available >= configured:
        return configured
    log.warning(
        "spill budget exceeds the free disk space: using what is free",
        extra={
            "directory": str(directory),
            "budget_bytes": configured,
            "usable_bytes": available,
            "free_bytes": available - used,
        },
    )
    return available


def encode_batch(batch: PutRecordsBatch) -> bytes:
    """One entry (header and payload) for ``batch``."""
    parts = [_COUNT.pack(len(batch.records))]
    for r in batch.records:
        key = r.partition_key.encode("utf-8")
        parts += [_KEY.pack(len(key)), key, _RECORD.pack(r.user_records, r.user_bytes, len(r.data))]
        parts.append(r.data)
    payload = b"".join(parts)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> PutRecordsBatch:
    """The batch an entry's payload holds; :class:`SpillCorruptError` if it does not parse."""
    try:
        (count,) = _COUNT.unpack_from(payload, 0)
        at = _COUNT.size
        records = []
        for _ in range(count):
            (key_len,) = _KEY.unpack_from(payload, at)
            at += _KEY.size
            key = payload[at : at + key_len].decode("utf-8")
            at += key_len
            users, user_bytes, data_len = _RECORD.unpack_from(payload, at)
            at += _RECORD.size
            data = payload[at : at + data_len]
            if len(data) != data_len:
                raise SpillCorruptError("record data runs past the entry")
            at += data_len
            records.append(KinesisRecord(key, data, users, user_bytes))
    except (struct.error, UnicodeDecodeError) as exc:
        raise SpillCorruptError(str(exc)) from exc
    if at != len(payload):
        raise SpillCorruptError("bytes after the last record")
    return PutRecordsBatch(tuple(records))


@dataclass(frozen=True, slots=True)
class SpilledBatch:
    """A batch read back, with where it lives so it can be acknowledged."""

    batch: PutRecordsBatch
    segment: int
    entry: int


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int
    entries: int  # entries written (known) or found so far
    acked: int
    read_entries: int = 0
    read_offset: int = 0
    sealed: bool = True  # no more writes will come
    exhausted: bool = False  # reading reached its end (or corruption)


class SpillStore:
    """Segments of one lane, bounded by ``max_bytes`` on disk. Not thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fs: FileSystem | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.corrupt_bytes = 0
        self.corrupt_entries = 0
        #: Failed writes (appends, acknowledgements, closes) by errno name.
        self.write_errors: Counter[str] = Counter()
        self._fs = fs or LocalFileSystem()
        self._unwritten_acks: set[int] = set()
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: deque[_Segment] = deque()
        for path in sorted(directory.glob("*" + SUFFIX)):
            seq = int(path.stem)
            acked = _read_ack(path.with_suffix(ACK_SUFFIX))
            segment = _Segment(seq, path, path.stat().st_size, entries=0, acked=acked)
            self._skip_acked(segment)
            self._segments.append(segment)
        self._writer: BinaryIO | None = None
        self._next_seq = (self._segments[-1].seq + 1) if self._segments else _FIRST_SEQ
        self._collect()

    # -- state --------------------------------------------------------------------

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of every segment still on disk."""
        return sum(s.size for s in self._segments)

    def has_unread(self) -> bool:
        """Whether some entry has not been read back yet."""
        return any(not s.exhausted and s.read_offset < s.size for s in self._segments)

    # -- writing --------------------------------------------------------------------

    def append(self, batch: PutRecordsBatch) -> bool:
        """Append ``batch`` after everything spilled so far.

        False when the budget is full; :class:`SpillWriteError` when the disk
        refused the write or has no room for a new segment. In both cases
        nothing was appended and the caller still owns ``batch``.
        """
        entry = encode_batch(batch)
        if self.bytes_on_disk + len(entry) > self.max_bytes:
            return False
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.sealed or segment.size >= self.segment_bytes:
            free = self._fs.free_bytes(self.directory)
            if free < max(len(entry), self.segment_bytes):
                self.write_errors["ENOSPC"] += 1
                raise SpillWriteError("ENOSPC", f"{free} bytes free, below one segment")
            segment = self._open_segment()
        assert self._writer is not None  # set by _open_segment  # nosec B101
        try:
            self._writer.write(entry)
            self._writer.flush()
        except OSError as exc:
            self._abandon_segment(segment, exc)
            raise SpillWriteError(_errno_name(exc), str(exc)) from exc
        segment.size += len(entry)
        segment.entries += 1
        return True

    def _abandon_segment(self, segment: _Segment, exc: OSError) -> None:
        """After a failed append: cut the torn entry off and never write here again."""
        self.write_errors[_errno_name(exc)] += 1
        writer, self._writer = self._writer, None
        segment.sealed = True
        if writer is not None:
            with contextlib.suppress(OSError):  # its buffer holds only the torn entry
                writer.close()
        with contextlib.suppress(OSError):  # else the reader stops at segment.size anyway,
            os.truncate(segment.path, segment.size)  # and a restart counts the tail corrupt
        if segment.size == 0:
            segment.exhausted = True  # nothing in it: let _collect delete it
        self._collect()

    def _open_segment(self) -> _Segment:
        self._seal_writer()
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{seq:020d}{SUFFIX}"
        try:
            self._writer = self._fs.open(path, "xb")
        except OSError as exc:
            self.write_errors[_errno_name(exc)] += 1
            raise SpillWriteError(_errno_name(exc), str(exc)) from exc
        segment = _Segment(seq, path, 0, entries=0, acked=0, sealed=False)
        self._segments.append(segment)
        return segment

    def _seal_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except OSError as exc:  # every entry was flushed when appended: nothing is lost
                self.write_errors[_errno_name(exc)] += 1
            for s in self._segments:
                s.sealed = True
        self._collect()

    def prepend(self, batches: list[PutRecordsBatch]) -> bool:
        """Write ``batches`` in a segment that reads before every other (shutdown).

        The memory queue holds what is older than the spill, so on shutdown it
        goes in front. Ignores the disk budget: it is what the process holds
        now, and refusing it would lose it. False if the disk refuses the write.
        """
        if not batches:
            return True
        self._seal_writer()
        if self._segments:
            seq = self._segments[0].seq - 1
        else:
            seq, self._next_seq = self._next_seq, self._next_seq + 1
        path = self.directory / f"{seq:020d}{SUFFIX}"
        size = 0
        try:
            with self._fs.open(path, "xb") as out:
                for batch in batches:
                    size += out.write(encode_batch(batch))
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            self.write_errors[_errno_name(exc)] += 1
            path.unlink(missing_ok=True)
            return False
        self._segments.appendleft(_Segment(seq, path, size, entries=len(batches), acked=0))
        return True

    # -- reading --------------------------------------------------------------------

    def read_next(self) -> SpilledBatch | None:
        """The oldest entry not yet read, or None when everything has been read."""
        for segment in list(self._segments):
            if segment.exhausted:
                continue
            if segment.read_offset >= segment.size:
                if not segment.sealed:
                    # Caught up with the writer: the next append opens a new segment,
                    # so this one can go once its entries are acknowledged.
                    self._seal_writer()
                segment.exhausted = True
                self._collect()
                continue
            if self._writer is not None and not segment.sealed:
                self._writer.flush()
            try:
                batch, length = self._read_entry(segment)
            except SpillCorruptError:
                self.corrupt_entries += 1
                self.corrupt_bytes += segment.size - segment.read_offset
                segment.exhausted = True
                segment.entries = segment.read_entries
                if not segment.sealed:  # never append after a corrupt entry
                    self._seal_writer()
                self._collect()
                continue
            entry = segment.read_entries
            segment.read_entries += 1
            segment.read_offset += length
            segment.entries = max(segment.entries, segment.read_entries)
            return SpilledBatch(batch, segment.seq, entry)
        return None

    def _read_entry(self, segment: _Segment) -> tuple[PutRecordsBatch, int]:
        with self._fs.open(segment.path, "rb") as f:
            f.seek(segment.read_offset)
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise SpillCorruptError("truncated header")
            magic, length, crc = _HEADER.unpack(header)
            if magic != MAGIC:
                raise SpillCorruptError("bad magic")
            payload = f.read(length)
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise SpillCorruptError("truncated or corrupt payload")
        return decode_payload(payload), _HEADER.size + length

    def _skip_acked(self, segment: _Segment) -> None:
        """On open: step over the entries a previous run had acknowledged."""
        for _ in range(segment.acked):
            try:
                _, length = self._read_entry(segment)
            except SpillCorruptError:
                segment.exhausted = True
                return
            segment.read_offset += length
            segment.read_entries += 1
        segment.entries = segment.read_entries

    # -- acknowledging ----------------------------------------------------------------

    def ack(self, segment_seq: int, entry: int) -> None:
        """Kinesis acknowledged entry ``entry`` of segment ``segment_seq`` (acks come in order)."""
        for segment in self._segments:
            if segment.seq == segment_seq:
                segment.acked = max(segment.acked, entry + 1)
                if not self._removable(segment):
                    self._write_ack(segment)
                break
        self._collect()

    def _write_ack(self, segment: _Segment) -> None:
        """Persist a segment's ack count; on failure keep it for the next ack (a restart
        before then would resend those entries, never lose them)."""
        path = segment.path.with_suffix(ACK_SUFFIX)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with self._fs.open(tmp, "wb") as out:
                out.write(_ACK.pack(segment.acked))
            tmp.replace(path)
        except OSError as exc:
            self.write_errors[_errno_name(exc)] += 1
            self._unwritten_acks.add(segment.seq)
        else:
            self._unwritten_acks.discard(segment.seq)

    def _removable(self, segment: _Segment) -> bool:
        return segment.sealed and segment.exhausted and segment.acked >= segment.read_entries

    def _collect(self) -> None:
        """Delete fully read and acknowledged segments."""
        for segment in list(self._segments):
            if self._removable(segment):
                segment.path.unlink(missing_ok=True)
                segment.path.with_suffix(ACK_SUFFIX).unlink(missing_ok=True)
                self._segments.remove(segment)

    def ack_read(self) -> None:
        """Mark every entry read so far as acknowledged (after :meth:`prepend` rewrote them)."""
        for segment in self._segments:
            if segment.read_entries > segment.acked or segment.seq in self._unwritten_acks:
                segment.acked = max(segment.acked, segment.read_entries)
                self._write_ack(segment)
        self._collect()

    def close(self) -> None:
        """Close the writer; what is on disk stays for the next run."""
        self._seal_writer()


def _read_ack(path: Path) -> int:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    return int(_ACK.unpack(raw)[0]) if len(raw) == _ACK.size else 0
