"""The key table of Kite's sample responses: required in every record, allowed in any."""

from __future__ import annotations

import json
from pathlib import Path

from tools.kite_mock_keys import SAMPLES, key_paths, sample_keys

TABLE = Path(__file__).parents[1] / "integration" / "kite_sim" / "kite_mock_keys.json"


def test_required_is_in_every_record_and_allowed_in_any() -> None:
    # Given two rows, one with an extra nested object, and a list of lists
    rows = [
        {"id": 1, "meta": {"a": 1}, "tags": ["x"], "candles": [[1, 2]]},
        {"id": 2, "meta": {"a": 2, "b": 3}, "extra": None, "candles": []},
    ]
    # When their key paths are taken
    required, allowed = key_paths(rows)
    # Then required keys are those of both rows, allowed those of either
    assert required == {"[].id", "[].meta", "[].meta.a", "[].candles"}
    assert allowed == required | {"[].meta.b", "[].tags", "[].extra"}


def test_objects_keyed_by_data_are_written_with_a_star() -> None:
    quotes = {"NSE:INFY": {"last_price": 1.0, "ohlc": {"open": 1}}, "NSE:TCS": {"last_price": 2}}
    required, allowed = key_paths(quotes, keyed_by_data=True)
    assert required == {"*", "*.last_price"}
    assert allowed == {"*", "*.last_price", "*.ohlc", "*.ohlc.open"}


def test_table_is_written_from_a_checkout(tmp_path: Path) -> None:
    # Given a checkout holding every sample (here: made-up minimal ones)
    for name in SAMPLES:
        (tmp_path / name).write_text(json.dumps({"status": "success", "data": [{"k": 1}]}))
    # When the table is written
    table = sample_keys(tmp_path, "0" * 40)
    # Then it names its source commit and keeps keys only
    assert table["source"] == f"https://github.com/zerodha/kiteconnect-mocks/tree/{'0' * 40}"
    assert table["endpoints"]["orders.json"] == {"required": ["[].k"], "allowed": ["[].k"]}


def test_committed_table_covers_every_sample_and_keeps_no_values() -> None:
    committed = json.loads(TABLE.read_text())
    repository, _, commit = committed["source"].rpartition("/tree/")
    assert repository == "https://github.com/zerodha/kiteconnect-mocks"
    assert len(commit) == 40
    assert set(committed["endpoints"]) == set(SAMPLES)
    for entry in committed["endpoints"].values():
        assert set(entry) == {"required", "allowed"}
        assert set(entry["required"]) <= set(entry["allowed"])
        assert all(isinstance(path, str) for path in entry["allowed"])
