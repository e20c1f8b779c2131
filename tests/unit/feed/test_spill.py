"""The disk spill: order, restarts, acknowledgements, corruption, the disk budget."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from feed_container.spill import (
    SpillStore,
    SpillWriteError,
    decode_payload,
    encode_batch,
    usable_budget,
)
from tests.faults import FullDisk
from ticker_core.records import KinesisRecord, PutRecordsBatch


def batch(n: int, key: str = "NIFTY") -> PutRecordsBatch:
    return PutRecordsBatch((KinesisRecord(key, f"record-{n}".encode(), 3, 30),))


def store(path: Path, *, max_bytes: int = 10**6, segment_bytes: int = 200) -> SpillStore:
    return SpillStore(path, max_bytes=max_bytes, segment_bytes=segment_bytes)


def drain(spill: SpillStore, *, ack: bool = True) -> list[bytes]:
    out = []
    while (item := spill.read_next()) is not None:
        out.append(item.batch.records[0].data)
        if ack:
            spill.ack(item.segment, item.entry)
    return out


def test_an_entry_round_trips_byte_for_byte() -> None:
    original = PutRecordsBatch(
        (KinesisRecord("NIFTY", b"\xf3\x89agg", 7, 700), KinesisRecord("भारत", b"x", 1, 1))
    )
    entry = encode_batch(original)
    assert decode_payload(entry[12:]) == original


def test_batches_come_back_in_order_across_segments_and_are_deleted_when_acked(
    tmp_path: Path,
) -> None:
    # Given 20 batches appended across several small segments
    spill = store(tmp_path)
    for n in range(20):
        assert spill.append(batch(n))
    assert len(list(tmp_path.glob("*.seg"))) > 2
    # When they are read back and acknowledged
    assert drain(spill) == [f"record-{n}".encode() for n in range(20)]
    # Then nothing is left on disk, and new appends start clean
    assert spill.bytes_on_disk == 0
    assert not list(tmp_path.glob("*.seg"))
    assert not spill.has_unread()


def test_a_restart_resumes_after_what_was_acknowledged(tmp_path: Path) -> None:
    # Given 10 batches of which the first 4 were read and acknowledged, then 2 only read
    spill = store(tmp_path, segment_bytes=10**6)
    for n in range(10):
        spill.append(batch(n))
    for _ in range(4):
        item = spill.read_next()
        assert item is not None
        spill.ack(item.segment, item.entry)
    spill.read_next()
    spill.read_next()
    spill.close()
    # When a new process opens the directory
    again = store(tmp_path)
    # Then it replays from the first unacknowledged batch
    assert drain(again) == [f"record-{n}".encode() for n in range(4, 10)]


def test_a_torn_or_corrupt_entry_ends_its_segment_and_is_counted(tmp_path: Path) -> None:
    # Given two segments, the first with a flipped byte in its third entry
    spill = store(tmp_path, segment_bytes=150)
    for n in range(8):
        spill.append(batch(n))
    spill.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    raw = bytearray(first.read_bytes())
    entry = len(encode_batch(batch(0)))
    raw[2 * entry + 20] ^= 0xFF
    first.write_bytes(bytes(raw))
    # When read back
    again = store(tmp_path, segment_bytes=150)
    got = drain(again)
    # Then the entries before the fault and every later segment survive, the rest is counted
    per_segment = 150 // entry + 1
    assert got == [f"record-{n}".encode() for n in (0, 1, *range(per_segment, 8))]
    assert again.corrupt_entries == 1
    assert again.corrupt_bytes == (per_segment - 2) * entry


def test_a_truncated_tail_from_a_crash_mid_append_is_skipped(tmp_path: Path) -> None:
    spill = store(tmp_path, segment_bytes=10**6)
    for n in range(3):
        spill.append(batch(n))
    spill.close()
    (segment,) = tmp_path.glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-5])
    again = store(tmp_path)
    assert drain(again) == [b"record-0", b"record-1"]
    assert again.corrupt_entries == 1


def test_the_disk_budget_refuses_appends_beyond_it(tmp_path: Path) -> None:
    entry = len(encode_batch(batch(0)))
    spill = store(tmp_path, max_bytes=3 * entry, segment_bytes=10**6)
    assert [spill.append(batch(n)) for n in range(4)] == [True, True, True, False]


def test_prepend_puts_a_shutdown_segment_before_everything(tmp_path: Path) -> None:
    # Given spilled batches 10..12 of which 10 was read (it is in memory, unacknowledged)
    spill = store(tmp_path, segment_bytes=10**6)
    for n in (10, 11, 12):
        spill.append(batch(n))
    spill.read_next()
    # When shutdown writes the memory queue (older batches 1, 2 and the read 10) in front
    assert spill.prepend([batch(1), batch(2), batch(10)])
    spill.ack_read()
    spill.close()
    # Then the next run reads them first, then the rest, each once
    assert drain(store(tmp_path)) == [
        b"record-1",
        b"record-2",
        b"record-10",
        b"record-11",
        b"record-12",
    ]


def test_a_write_the_full_disk_refuses_leaves_the_spill_as_it_was(tmp_path: Path) -> None:
    # Given a spill with two batches on a disk that then fills up mid-write
    disk = FullDisk(clock=lambda: 0.0)
    spill = SpillStore(tmp_path, max_bytes=10**6, segment_bytes=10**6, fs=disk)
    spill.append(batch(0))
    spill.append(batch(1))
    disk.start(1.0)
    # When the next append fails with ENOSPC, half its bytes written
    with pytest.raises(SpillWriteError) as caught:
        spill.append(batch(2))
    # Then it is counted by errno, and the torn half is cut off the segment
    assert caught.value.error == "ENOSPC"
    assert spill.write_errors == {"ENOSPC": 1}
    entry = len(encode_batch(batch(0)))
    assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) == 2 * entry
    # And once the disk has room again, appends go on in order and read back whole
    disk.stop()
    spill.append(batch(2))
    assert drain(spill) == [f"record-{n}".encode() for n in range(3)]
    assert spill.corrupt_entries == 0


def test_an_acknowledgement_the_disk_refuses_is_written_with_the_next(tmp_path: Path) -> None:
    # Given three batches on disk, read back
    disk = FullDisk(clock=lambda: 0.0)
    spill = SpillStore(tmp_path, max_bytes=10**6, segment_bytes=10**6, fs=disk)
    for n in range(3):
        spill.append(batch(n))
    items = [spill.read_next() for _ in range(3)]
    assert all(items)
    # When the first acknowledgement cannot be written (disk full), then the disk frees up
    disk.start(1.0)
    spill.ack(items[0].segment, items[0].entry)  # type: ignore[union-attr]
    assert spill.write_errors == {"ENOSPC": 1}
    disk.stop()
    spill.ack(items[1].segment, items[1].entry)  # type: ignore[union-attr]
    spill.close()
    # Then a restart resends only the unacknowledged third batch
    assert drain(store(tmp_path)) == [b"record-2"]


def test_a_budget_larger_than_the_free_space_is_cut_to_it_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 100 bytes of segments already on a disk with 1,000 bytes free
    (tmp_path / "lane-0-of-1").mkdir()
    (tmp_path / "lane-0-of-1" / "00000000001000000000.seg").write_bytes(b"x" * 100)

    class SmallDisk(FullDisk):
        def free_bytes(self, directory: Path) -> int:
            return 1_000

    # When a 10 GiB budget is checked against it
    with caplog.at_level(logging.WARNING, logger="feed_container.spill"):
        budget = usable_budget(tmp_path, 10 * 2**30, fs=SmallDisk(clock=lambda: 0.0))
    # Then the usable budget is what the disk holds, and the log says so with both figures
    assert budget == 1_100
    record = caplog.records[0]
    assert record.budget_bytes == 10 * 2**30  # type: ignore[attr-defined]
    assert record.usable_bytes == 1_100  # type: ignore[attr-defined]
    # And a budget the disk can hold is kept, silently
    caplog.clear()
    assert usable_budget(tmp_path, 500, fs=SmallDisk(clock=lambda: 0.0)) == 500
    assert not caplog.records


def test_no_new_segment_is_opened_without_free_space_for_it(tmp_path: Path) -> None:
    # Given a disk whose free space is below one segment
    disk = FullDisk(clock=lambda: 0.0)
    spill = SpillStore(tmp_path, max_bytes=10**6, segment_bytes=10**5, fs=disk)
    disk.start(1.0)
    # When a batch is appended, Then the disk is reported full and nothing is written
    with pytest.raises(SpillWriteError, match="below one segment"):
        spill.append(batch(0))
    assert not list(tmp_path.glob("*.seg"))
