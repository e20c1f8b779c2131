"""Greeks user records: option-math rows to strict, schema-valid JSON and back."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from ticker_core.records import (
    GREEKS_SCHEMA,
    RecordDecodeError,
    RecordEncodeError,
    decode_greeks,
    encode_greeks,
)
from ticker_core.tz import IST

SCHEMA = json.loads(resources.files("ticker_core.schemas").joinpath("greeks.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
NUMBERS = (
    "strike",
    "price",
    "forward",
    "t_years",
    "rate",
    "iv",
    "delta",
    "gamma",
    "theta",
    "vega",
    "rho",
)


def strict_loads(data: bytes) -> Any:
    return json.loads(data, parse_constant=lambda token: pytest.fail(f"{token} written"))


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instrument_token": 12345602,
        "tradingsymbol": "NIFTY26D0124000CE",
        "underlying": "NIFTY",
        "expiry": date(2026, 12, 1),
        "strike": 24000.0,
        "option_type": "CE",
        "price": 245.35,
        "forward": 24061.2,
        "forward_source": "future",
        "t_years": 0.0112,
        "rate": 0.065,
        "iv": 0.1312,
        "delta": 0.5841,
        "gamma": 0.00061,
        "theta": -12.4,
        "vega": 9.87,
        "rho": 1.52,
        "raw": {"theta": -4526.0, "vega": 987.0, "rho": 152.0},
        "reason": None,
        "exchange_timestamp": datetime(2026, 11, 27, 9, 15, 3, tzinfo=IST),
        "as_of": datetime(2026, 11, 27, 9, 15, 3, tzinfo=IST),
        "computed_at": datetime(2026, 11, 27, 3, 45, 3, 250000, tzinfo=UTC),
        "source": {
            "shard_id": "shardId-000000000002",
            "sequence_number": "49590338271490256608559692538361571095921575989136588898",
            "sub_sequence_number": 7,
        },
    }
    return {**base, **changes}


def test_a_row_encodes_to_a_schema_valid_record_and_back() -> None:
    # Given a computed row
    data = encode_greeks(row())
    # Then it is compact ASCII JSON, valid against greeks.v1.json, in schema key order
    assert data.isascii()
    assert b" " not in data
    record = strict_loads(data)
    assert list(VALIDATOR.iter_errors(record)) == []
    assert list(record) == list(SCHEMA["properties"])
    # And it decodes to the row, dates and timestamps restored
    assert decode_greeks(data) == {"schema": GREEKS_SCHEMA, **row()}


def test_nan_and_infinities_are_written_as_null_never_as_tokens() -> None:
    # Given a row for bad inputs: NaN price, infinite outputs (reason nan_input)
    bad = row(
        price=math.nan,
        iv=math.nan,
        delta=math.inf,
        gamma=-math.inf,
        reason="nan_input",
        raw={"theta": math.nan, "vega": 1.0, "rho": math.inf},
    )
    data = encode_greeks(bad)
    # Then every non-finite number is null, the JSON is strict and schema-valid
    record = strict_loads(data)
    assert (record["price"], record["iv"], record["delta"], record["gamma"]) == (None,) * 4
    assert record["raw"] == {"theta": None, "vega": 1.0, "rho": None}
    assert list(VALIDATOR.iter_errors(record)) == []


def test_a_non_positive_strike_row_is_schema_valid() -> None:
    # The schema once required strike > 0 while listing reason non_positive_strike
    record = strict_loads(encode_greeks(row(strike=0.0, iv=None, reason="non_positive_strike")))
    assert list(VALIDATOR.iter_errors(record)) == []


def test_numpy_values_from_the_option_math_are_accepted() -> None:
    # Given a row straight out of vectorised option math
    from_numpy = row(
        instrument_token=np.int64(12345602),
        strike=np.float64(24000.0),
        iv=np.float32(0.5),
        delta=np.float64(np.nan),
        raw={"theta": np.float64(-4526.0), "vega": np.int32(987), "rho": np.float64(np.inf)},
    )
    record = strict_loads(encode_greeks(from_numpy))
    assert (record["instrument_token"], record["strike"], record["iv"], record["delta"]) == (
        12345602,
        24000.0,
        0.5,
        None,
    )
    assert record["raw"] == {"theta": -4526.0, "vega": 987.0, "rho": None}


def test_enum_values_and_iso_dates_are_written_as_plain_strings() -> None:
    from enum import StrEnum

    class Reason(StrEnum):
        EXPIRED = "expired"

    record = strict_loads(encode_greeks(row(reason=Reason.EXPIRED, expiry="2026-12-01")))
    assert (record["reason"], record["expiry"]) == ("expired", "2026-12-01")


def test_tradingsymbol_is_optional() -> None:
    without = row()
    del without["tradingsymbol"]
    record = strict_loads(encode_greeks(without))
    assert "tradingsymbol" not in record
    assert list(VALIDATOR.iter_errors(record)) == []
    assert strict_loads(encode_greeks(row(tradingsymbol=None)))["tradingsymbol"] is None


maybe_numbers = st.one_of(
    st.none(),
    st.floats(),
    st.integers(-(10**6), 10**6),
    st.sampled_from([10**400, -(10**400)]),
    st.floats().map(np.float64),
)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(dict.fromkeys(NUMBERS, maybe_numbers)),
    st.fixed_dictionaries(dict.fromkeys(("theta", "vega", "rho"), maybe_numbers)),
    st.sampled_from(sorted(r or "" for r in SCHEMA["properties"]["reason"]["enum"])),
)
def test_any_numbers_give_strict_schema_valid_json(
    numbers: dict[str, Any], raw: dict[str, Any], reason: str
) -> None:
    # Given any mix of finite, non-finite and missing numbers
    data = encode_greeks(row(**numbers, raw=raw, reason=reason or None))
    # Then the JSON is strict, valid, and each number is itself or null
    record = strict_loads(data)
    assert list(VALIDATOR.iter_errors(record)) == []
    for name, value in numbers.items():
        too_large = type(value) is int and abs(value) > 10**308
        finite = value is not None and not too_large and math.isfinite(value)
        assert record[name] == (float(value) if finite else None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"option_type": "XX"}, "option_type must be one of"),
        ({"forward_source": "guess"}, "forward_source must be one of"),
        ({"reason": "because"}, "reason must be one of"),
        ({"reason": ["expired"]}, "reason must be one of"),
        ({"underlying": ""}, "underlying must be a non-empty string"),
        ({"instrument_token": 1.0}, "instrument_token must be an integer"),
        ({"iv": "0.13"}, "iv must be a number or None"),
        ({"delta": True}, "delta must be a number or None"),
        ({"tradingsymbol": 5}, "tradingsymbol must be a string or None"),
        ({"expiry": datetime(2026, 12, 1, 15, 30, tzinfo=IST)}, "not a datetime"),
        ({"expiry": "1 Dec 2026"}, "ISO date"),
        ({"expiry": None}, "ISO date"),
        ({"computed_at": None}, "computed_at must be a timezone-aware datetime"),
        ({"as_of": None}, "as_of must be a timezone-aware datetime"),
        ({"computed_at": datetime(2026, 11, 27, 3, 45)}, "naive"),
        ({"exchange_timestamp": 1764215103}, "exchange_timestamp must be"),
        ({"raw": [1.0, 2.0, 3.0]}, "raw must be a mapping"),
        ({"raw": {"theta": 1.0, "vega": 1.0}}, "lacks 'rho'"),
        ({"source": "shardId-0:1:0"}, "source must be a mapping"),
        ({"source": {"shard_id": "s", "sequence_number": "1", "sub_sequence_number": -1}}, ">= 0"),
        (
            {"source": {"shard_id": "", "sequence_number": "1", "sub_sequence_number": 0}},
            "source.shard_id",
        ),
    ],
)
def test_rows_the_schema_cannot_carry_are_typed_errors(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(RecordEncodeError, match=message):
        encode_greeks(row(**changes))


def test_a_row_without_a_required_field_is_a_typed_error() -> None:
    incomplete = row()
    del incomplete["forward"]
    with pytest.raises(RecordEncodeError, match="lacks 'forward'"):
        encode_greeks(incomplete)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not a JSON user record"),
        (b'{"schema":"greeks/1","iv":NaN}', "NaN is not JSON"),
        (b'"greeks/1"', "JSON str, not an object"),
        (b'{"schema":"tick/1"}', "is not 'greeks/1'"),
        (b'{"schema":"greeks/1"}', "lacks"),
    ],
)
def test_bad_records_are_typed_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(RecordDecodeError, match=message):
        decode_greeks(data)


def test_a_bad_expiry_is_a_typed_decode_error() -> None:
    record = strict_loads(encode_greeks(row()))
    record["expiry"] = "tomorrow"
    with pytest.raises(RecordDecodeError, match="expiry"):
        decode_greeks(json.dumps(record).encode())
