"""Instrument sources: a file snapshot, an S3 object, Kite's endpoint; all give a registry."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest

from feed_container.broker import KiteRest
from feed_container.instruments import (
    FileInstrumentSource,
    KiteInstrumentSource,
    S3InstrumentSource,
    load_registry,
    source_from_setting,
)
from ticker_core.instruments import Instrument, InstrumentType, write_instruments_csv

ROWS = [
    Instrument(
        256265,
        1001,
        "NIFTY 50",
        "NIFTY 50",
        0.0,
        None,
        0.0,
        0.0,
        0,
        InstrumentType.EQ,
        "INDICES",
        "NSE",
    ),
    Instrument(
        8960002,
        35000,
        "NIFTY26DECFUT",
        "NIFTY",
        24100.0,
        date(2026, 12, 29),
        0.0,
        0.1,
        75,
        InstrumentType.FUT,
        "NFO-FUT",
        "NFO",
    ),
]


class FakeS3:
    def __init__(self, text: str) -> None:
        self.text = text
        self.asked: tuple[str, str] | None = None

    def get_object(self, Bucket: str, Key: str) -> dict[str, io.BytesIO]:
        self.asked = (Bucket, Key)
        return {"Body": io.BytesIO(self.text.encode())}


async def test_a_file_snapshot_loads_into_a_registry(tmp_path: Path) -> None:
    path = tmp_path / "instruments.csv"
    path.write_text(write_instruments_csv(ROWS) + "not,a,valid,row\n")
    source = source_from_setting(f"file://{path}", kite_rest_url="http://unused")
    assert isinstance(source, FileInstrumentSource)
    registry = await load_registry(source)
    assert registry.underlying_of(8960002) == "NIFTY"
    assert len(registry) == 2


async def test_an_s3_snapshot_is_read_from_its_bucket_and_key() -> None:
    s3 = FakeS3(write_instruments_csv(ROWS))
    source = source_from_setting(
        "s3://snapshots/instruments/today.csv", kite_rest_url="", s3_client=s3
    )
    assert isinstance(source, S3InstrumentSource)
    assert len(await load_registry(source)) == 2
    assert s3.asked == ("snapshots", "instruments/today.csv")


def test_kite_is_the_default_and_unknown_schemes_are_refused() -> None:
    assert isinstance(source_from_setting("kite", kite_rest_url="http://k"), KiteInstrumentSource)
    with pytest.raises(ValueError, match="S3 client"):
        source_from_setting("s3://b/k", kite_rest_url="")
    with pytest.raises(ValueError, match="unknown"):
        source_from_setting("ftp://x", kite_rest_url="")
    assert isinstance(KiteInstrumentSource(KiteRest("http://k/")), KiteInstrumentSource)
