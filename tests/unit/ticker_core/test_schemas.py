"""The published record schemas are valid JSON Schema and say what they must."""

import json
from importlib import resources

import pytest
from jsonschema import Draft202012Validator


@pytest.mark.parametrize("name", ["tick.v1.json", "greeks.v1.json"])
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    # Given a committed schema file
    schema = json.loads(resources.files("ticker_core.schemas").joinpath(name).read_text())
    # When it is checked against the metaschema, Then it is valid
    Draft202012Validator.check_schema(schema)
    # And it pins its own version, so consumers can route on it
    assert schema["properties"]["schema"]["const"].endswith("/1")


def test_tick_schema_rejects_unknown_fields() -> None:
    # Given a minimal valid tick
    schema = json.loads(resources.files("ticker_core.schemas").joinpath("tick.v1.json").read_text())
    validator = Draft202012Validator(schema)
    tick = {
        "schema": "tick/1",
        "instrument_token": 256265,
        "underlying": "NIFTY",
        "mode": "ltp",
        "tradable": False,
        "last_price": 24010.5,
        "received_at": "2026-11-27T04:00:00.000001+00:00",
    }
    assert list(validator.iter_errors(tick)) == []
    # When a field the schema does not know is added, Then validation fails
    assert list(validator.iter_errors({**tick, "surprise": 1}))
