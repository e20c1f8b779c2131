"""The sample payloads in events/ are current, and the functions read them."""

import json
from pathlib import Path

import pytest

from lambdas.persist.logic import Rows, decode_kinesis_record
from ticker_core.kite_wire import OrderUpdate, encode_text, parse_text
from tools import make_events

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.mark.parametrize("name", sorted(make_events.SAMPLES))
def test_committed_samples_match_the_codecs(name: str) -> None:
    # Given the committed file, When the generator renders it again, Then nothing drifted
    assert (EVENTS / name).read_text() == make_events.render(name), (
        f"events/{name} is stale: run `python tools/make_events.py`"
    )


@pytest.mark.parametrize(
    ("name", "kind", "count"),
    [("kinesis_ticks.json", "ticks", 3), ("kinesis_greeks.json", "greeks", 1)],
)
def test_sample_kinesis_events_decode_into_rows(name: str, kind: str, count: int) -> None:
    event = json.loads((EVENTS / name).read_text())
    rows = Rows()
    for record in event["Records"]:
        decode_kinesis_record(record, rows)
    assert len(getattr(rows, kind)) == count
    assert not rows.poison


def test_sample_order_update_parses_as_kite_would_send_it() -> None:
    message = json.loads((EVENTS / "kite_order_update.json").read_text())
    update = parse_text(encode_text(message["type"], message["data"]))
    assert isinstance(update, OrderUpdate)
    assert update.status == "COMPLETE"
