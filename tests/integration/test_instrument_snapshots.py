"""The S3 snapshot layout and its cached reader, against moto's S3 server."""

from __future__ import annotations

import gzip
from datetime import date
from typing import Any

import pytest

from lambdas.instruments.dal import S3SnapshotStore
from testkit.factories import chain, publish_snapshot
from tests.conftest import INSTRUMENTS_BUCKET
from ticker_adapters.instrument_snapshots import (
    InstrumentSnapshotReader,
    SnapshotCorruptError,
    SnapshotPointer,
    SnapshotUnavailableError,
    csv_digest,
    pointer_key,
)
from ticker_core.instruments import write_instruments_csv

pytestmark = pytest.mark.integration

BUCKET = INSTRUMENTS_BUCKET
PREFIX = "instruments/"
DAY = date(2026, 11, 27)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def dump(strikes: list[float]) -> bytes:
    return write_instruments_csv(
        chain("NIFTY", date(2026, 12, 29), strikes, first_exchange_token=5000, future=True)
    ).encode()


def publish(store: S3SnapshotStore, csv_bytes: bytes, day: date = DAY) -> SnapshotPointer:
    return publish_snapshot(store, csv_bytes, day)


def test_the_reader_follows_the_pointer_and_reloads_only_when_the_dump_changes(s3: Any) -> None:
    # Given a published snapshot and a reader that re-checks every 60 s
    store = S3SnapshotStore(s3, BUCKET, PREFIX)
    first = publish(store, dump([24000.0, 24100.0]))
    clock = Clock()
    reader = InstrumentSnapshotReader(s3, BUCKET, prefix=PREFIX, recheck_seconds=60, clock=clock)
    # When it is read, Then the registry is the dump's, and the object is where the layout says
    snapshot = reader.current()
    assert snapshot.pointer == first
    assert len(snapshot.registry) == 5
    assert first.key == f"instruments/2026-11-27/{first.sha256}.csv.gz"
    body = s3.get_object(Bucket=BUCKET, Key=first.key)["Body"].read()
    assert csv_digest(gzip.decompress(body)) == first.sha256
    # When a new dump is published within the re-check interval, Then the cached one is served
    second = publish(store, dump([24000.0, 24100.0, 24200.0]))
    clock.now += 59
    assert reader.current() is snapshot
    # When the interval has passed, Then the new pointer's snapshot is loaded
    clock.now += 2
    assert reader.current().pointer == second
    assert (len(reader.current().registry), reader.loads) == (7, 2)
    # When the pointer is unchanged at the next check, Then nothing is downloaded again
    clock.now += 61
    assert reader.current().pointer == second
    assert reader.loads == 2
    # When a pointer is rewritten for the same dump, Then the parsed registry is kept
    registry = reader.current().registry
    publish(store, dump([24000.0, 24100.0, 24200.0]), day=date(2026, 11, 28))
    clock.now += 61
    assert reader.current().pointer.day == date(2026, 11, 28)
    assert reader.current().registry is registry
    assert reader.loads == 2


def test_without_a_pointer_the_reader_says_no_snapshot_is_published(s3: Any) -> None:
    reader = InstrumentSnapshotReader(s3, BUCKET, prefix=PREFIX)
    with pytest.raises(SnapshotUnavailableError, match=r"current\.json"):
        reader.current()
    assert S3SnapshotStore(s3, BUCKET, PREFIX).current() is None


def test_a_snapshot_that_does_not_match_its_pointer_is_refused(s3: Any) -> None:
    # Given a pointer whose object was overwritten with other content
    store = S3SnapshotStore(s3, BUCKET, PREFIX)
    pointer = publish(store, dump([24000.0]))
    store.put_snapshot(pointer.key, dump([23000.0]))
    # When a fresh reader loads it, Then it refuses it rather than serve the wrong registry
    with pytest.raises(SnapshotCorruptError, match="sha256"):
        InstrumentSnapshotReader(s3, BUCKET, prefix=PREFIX).current()


def test_a_failed_refresh_keeps_serving_the_cached_snapshot(s3: Any) -> None:
    # Given a reader holding a snapshot
    store = S3SnapshotStore(s3, BUCKET, PREFIX)
    pointer = publish(store, dump([24000.0]))
    clock = Clock()
    reader = InstrumentSnapshotReader(s3, BUCKET, prefix=PREFIX, recheck_seconds=1, clock=clock)
    held = reader.current()
    # When the pointer becomes unreadable (corrupt, then deleted)
    for damage in (
        lambda: s3.put_object(Bucket=BUCKET, Key=pointer_key(PREFIX), Body=b"{not json"),
        lambda: s3.delete_object(Bucket=BUCKET, Key=pointer_key(PREFIX)),
    ):
        damage()
        clock.now += 2
        # Then the cached snapshot is still served, and the failure is recorded
        assert reader.current() is held
        assert reader.last_error is not None
    # When the pointer is good again, Then the reader recovers
    store.put_pointer(pointer)
    clock.now += 2
    assert reader.current().pointer == pointer
    assert reader.last_error is None
