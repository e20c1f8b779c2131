"""Instrument sources: a file dump, Kite's endpoint, the published S3 snapshot."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from feed_container.instruments import (
    FileInstrumentSource,
    KiteInstrumentSource,
    SnapshotInstrumentSource,
    load_registry,
    source_from_setting,
)
from tests.factories import chain, index_instrument
from ticker_core.instruments import write_instruments_csv

ROWS = [
    index_instrument("NIFTY 50", 1001),
    *chain("NIFTY", date(2026, 12, 29), [24000.0], first_exchange_token=35000, future=True),
]


async def test_a_file_dump_loads_into_a_registry_skipping_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "instruments.csv"
    path.write_text(write_instruments_csv(ROWS) + "not,a,valid,row\n")
    source = source_from_setting(f"file://{path}", kite_rest_url="http://unused")
    assert isinstance(source, FileInstrumentSource)
    registry = await load_registry(source)
    assert len(registry) == len(ROWS)
    assert {registry.underlying_of(i.instrument_token) for i in ROWS} == {"NIFTY"}


def test_sources_by_setting() -> None:
    assert isinstance(source_from_setting("kite", kite_rest_url="https://k"), KiteInstrumentSource)
    with pytest.raises(ValueError, match="https"):
        source_from_setting("kite", kite_rest_url="http://api.kite.trade")
    snapshot = source_from_setting("s3://b/instruments/", kite_rest_url="", s3_client=object())
    assert isinstance(snapshot, SnapshotInstrumentSource)
    with pytest.raises(ValueError, match="S3 client"):
        source_from_setting("s3://b/k", kite_rest_url="")
    with pytest.raises(ValueError, match="unknown"):
        source_from_setting("ftp://x", kite_rest_url="")
