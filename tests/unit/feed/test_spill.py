"""The disk spill: order, restarts, acknowledgements, corruption, the disk budget."""

from __future__ import annotations

from pathlib import Path

from feed_container.spill import SpillStore, decode_payload, encode_batch
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
