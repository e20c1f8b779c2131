"""The published record schemas are valid JSON Schema and say what they must."""

import json
from importlib import resources
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ticker_core.records import greeks, ticks
from ticker_core.records.lambda_event import SEQUENCE_NUMBER, SHARD_ID


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


def schema_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("ticker_core.schemas").joinpath(name).read_text()
    )
    return loaded


def test_the_tick_rules_in_ticker_core_are_the_committed_schemas() -> None:
    # Given the committed tick/1 schema and the rules every tick reader applies
    schema = schema_file("tick.v1.json")
    properties = schema["properties"]
    level = schema["$defs"]["level"]
    # Then they name the same fields, in the same order, the same required ones
    assert tuple(properties) == ticks.TICK_FIELDS
    assert frozenset(schema["required"]) == ticks.TICK_REQUIRED
    assert schema["additionalProperties"] is False
    # And the same bounds and vocabularies
    assert properties["instrument_token"]["maximum"] == ticks.MAX_INSTRUMENT_TOKEN
    assert properties["instrument_token"]["minimum"] == 0
    assert set(properties["mode"]["enum"]) == ticks._MODES
    assert properties["underlying"]["minLength"] == 1
    depth = properties["depth"]
    assert tuple(depth["properties"]) == ticks.DEPTH_SIDES
    assert {side["maxItems"] for side in depth["properties"].values()} == {ticks.MAX_DEPTH_LEVELS}
    assert tuple(level["properties"]) == ticks.DEPTH_LEVEL_FIELDS
    assert level["properties"]["orders"]["minimum"] == 0
    assert tuple(properties["ohlc"]["properties"]) == ticks.OHLC_FIELDS
    # And the same types: integers, numbers, timestamps
    assert fields_of_kind(schema, "integer") == {*ticks.TICK_QUANTITIES, "instrument_token"}
    assert fields_of_kind(schema, "number") == {*ticks.TICK_PRICES, "last_price"}
    assert fields_of_kind(schema, "date-time") == {*ticks.KITE_TIMES, "received_at"}


def fields_of_kind(schema: dict[str, Any], kind: str) -> set[str]:
    """Top-level fields whose type (through a $ref) is ``kind`` (or whose format is)."""
    found = set()
    for name, spec in schema["properties"].items():
        ref = spec.get("$ref", "")
        resolved = schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else spec
        types = resolved.get("type", [])
        types = [types] if isinstance(types, str) else types
        if kind in types or resolved.get("format") == kind:
            found.add(name)
    return found


def test_the_greeks_rules_in_ticker_core_are_the_committed_schemas() -> None:
    schema = schema_file("greeks.v1.json")
    properties = schema["properties"]
    assert tuple(properties) == greeks.GREEKS_FIELDS
    assert frozenset(schema["required"]) == greeks.GREEKS_REQUIRED
    assert schema["additionalProperties"] is False
    assert properties["instrument_token"]["maximum"] == ticks.MAX_INSTRUMENT_TOKEN
    assert set(properties["option_type"]["enum"]) == greeks.OPTION_TYPES
    assert set(properties["forward_source"]["enum"]) == greeks.FORWARD_SOURCES
    assert set(properties["reason"]["enum"]) == greeks.REASONS
    source = properties["source"]["properties"]
    assert source["sequence_number"]["pattern"] == f"^{SEQUENCE_NUMBER.pattern}$"
    assert source["shard_id"]["pattern"] == f"^{SHARD_ID.pattern}$"
    assert source["sub_sequence_number"]["minimum"] == 0
    maybe = {n for n, spec in properties.items() if spec.get("$ref") == "#/$defs/maybe_number"}
    assert maybe == set(greeks.GREEKS_NUMBERS)
