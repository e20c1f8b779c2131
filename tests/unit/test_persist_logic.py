"""Decoding user records into rows: every valid record becomes a row, every bad one a reason."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from lambdas.persist.dal import tick_encoder
from lambdas.persist.logic import (
    GREEKS_COLUMNS,
    TICK_COLUMNS,
    PoisonRecordError,
    Rows,
    decode,
    decode_kinesis_record,
)
from testkit.factories import kinesis_event, tick_record, user_record
from tests import strategies
from ticker_core.records import KinesisUserRecord

SEQ = "49650000000000000000000000001"
TS = datetime(2026, 11, 27, 4, 0, 1, tzinfo=UTC)


SOURCE = {"shard_id": "shardId-000000000001", "sequence_number": "4965", "sub_sequence_number": 7}


def greeks_record(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "schema": "greeks/1",
        "instrument_token": 12345,
        "tradingsymbol": "NIFTY26DEC24000CE",
        "underlying": "NIFTY",
        "expiry": "2026-12-29",
        "strike": 24000.0,
        "option_type": "CE",
        "price": 210.5,
        "forward": 24100.0,
        "forward_source": "future",
        "t_years": 0.087,
        "rate": 0.065,
        "iv": 0.14,
        "delta": 0.55,
        "gamma": 0.0004,
        "theta": -8.1,
        "vega": 25.2,
        "rho": -0.18,
        "raw": {"theta": -2956.5, "vega": 2520.0, "rho": -18.3},
        "reason": None,
        "exchange_timestamp": TS.isoformat(),
        "as_of": TS.isoformat(),
        "computed_at": TS.isoformat(),
        "source": SOURCE,
    }
    record.update(overrides)
    return record


@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
def test_ticks_of_every_mode_become_rows_keyed_by_their_source(mode: str) -> None:
    # Given a valid tick of each mode
    data = json.dumps(tick_record(256265, 24010.5, TS, mode=mode)).encode()
    # When decoded
    kind, row = decode(user_record(data, SEQ, 3, shard_id="shardId-000000000001"))
    values = dict(zip(TICK_COLUMNS, row, strict=True))
    # Then it is a tick row carrying the Kinesis identity
    assert kind == "tick"
    assert (values["src_shard"], values["src_seq"], values["src_subseq"]) == (
        "shardId-000000000001",
        int(SEQ),
        3,
    )
    assert values["last_price"] == 24010.5
    # And its ts is the exchange timestamp when there is one, else the receipt time
    expected_ts = (
        TS if mode == "full" else datetime.fromisoformat(values["received_at"].isoformat())
    )
    assert values["ts"] == expected_ts
    assert (values["depth"] is not None) == (mode == "full")


def test_greeks_rows_take_the_source_ticks_identity() -> None:
    kind, row = decode(user_record(json.dumps(greeks_record()).encode(), SEQ, 3))
    values = dict(zip(GREEKS_COLUMNS, row, strict=True))
    assert kind == "greeks"
    # The greeks record's own position is irrelevant: a recomputation must collide
    assert (values["src_shard"], values["src_seq"], values["src_subseq"]) == (
        "shardId-000000000001",
        4965,
        7,
    )
    assert values["theta_per_year"] == -2956.5


def test_greeks_with_null_outputs_are_kept_with_their_reason() -> None:
    nulls = dict.fromkeys(("iv", "delta", "gamma", "theta", "vega", "rho"))
    record = greeks_record(
        **nulls, reason="below_intrinsic", raw={"theta": None, "vega": None, "rho": None}
    )
    _, row = decode(user_record(json.dumps(record).encode(), SEQ, 3))
    values = dict(zip(GREEKS_COLUMNS, row, strict=True))
    assert values["iv"] is None
    assert values["reason"] == "below_intrinsic"


GOOD_TICK = tick_record(256265, 24010.5, TS)
LEVEL = {"price": 24010.5, "quantity": 50, "orders": 2}


def test_depth_is_stored_positionally_with_every_value() -> None:
    # Given a full tick whose levels all differ
    record = {
        **GOOD_TICK,
        "depth": {
            "buy": [{"price": 100.0 - n, "quantity": 10 + n, "orders": n} for n in range(5)],
            "sell": [{"price": 101 + n, "quantity": 20 + n, "orders": 9 - n} for n in range(3)],
        },
    }
    # When decoded
    _, row = decode(user_record(json.dumps(record).encode(), SEQ))
    stored = json.loads(dict(zip(TICK_COLUMNS, row, strict=True))["depth"])
    # Then each level is [price, quantity, orders], in order, nothing dropped
    assert stored == {
        side: [[lvl["price"], lvl["quantity"], lvl["orders"]] for lvl in record["depth"][side]]
        for side in ("buy", "sell")
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe not utf8", "bad_json"),
        (b"{truncated", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (json.dumps({**GOOD_TICK, "schema": "tick/9"}).encode(), "unknown_schema"),
        (json.dumps({**GOOD_TICK, "mode": "depth"}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "instrument_token": -1}).encode(), "out_of_range"),
        (json.dumps({**GOOD_TICK, "instrument_token": "256265"}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "last_price": None}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "underlying": ""}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "received_at": "yesterday"}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "received_at": "2026-11-27T09:30:00"}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "volume_traded": 1.5}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "volume_traded": 2**63}).encode(), "out_of_range"),
        (json.dumps({**GOOD_TICK, "total_buy_quantity": -(2**63) - 1}).encode(), "out_of_range"),
        (
            json.dumps({**GOOD_TICK, "received_at": "2107-01-01T00:00:00+00:00"}).encode(),
            "out_of_range",
        ),
        (
            json.dumps({**GOOD_TICK, "last_trade_time": "1969-12-31T23:59:59+00:00"}).encode(),
            "out_of_range",
        ),
        (json.dumps({**GOOD_TICK, "ohlc": [1, 2]}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "depth": [LEVEL]}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "depth": {"buy": [LEVEL]}}).encode(), "bad_field"),
        (
            json.dumps({**GOOD_TICK, "depth": {"buy": [], "sell": [], "x": []}}).encode(),
            "bad_field",
        ),
        (
            json.dumps({**GOOD_TICK, "depth": {"buy": [LEVEL] * 6, "sell": []}}).encode(),
            "out_of_range",
        ),
        (
            json.dumps(
                {**GOOD_TICK, "depth": {"buy": [{"price": 1.0, "quantity": 5}], "sell": []}}
            ).encode(),
            "bad_field",
        ),
        (
            json.dumps(
                {**GOOD_TICK, "depth": {"buy": [{**LEVEL, "quantity": 1.5}], "sell": []}}
            ).encode(),
            "bad_field",
        ),
        (
            json.dumps(
                {**GOOD_TICK, "depth": {"buy": [{**LEVEL, "price": math.nan}], "sell": []}}
            ).encode(),
            "bad_json",  # NaN is not JSON (RFC 8259)
        ),
        (
            json.dumps({**GOOD_TICK, "depth": {"buy": [7], "sell": []}}).encode(),
            "bad_field",
        ),
        (
            json.dumps(
                {**GOOD_TICK, "depth": {"buy": [{**LEVEL, "price": True}], "sell": []}}
            ).encode(),
            "bad_field",
        ),
        (json.dumps(greeks_record(option_type="XX")).encode(), "bad_field"),
        (json.dumps(greeks_record(expiry="someday")).encode(), "bad_field"),
        (json.dumps(greeks_record(source=None)).encode(), "bad_field"),
        (json.dumps(greeks_record(raw=[1])).encode(), "bad_field"),
        (json.dumps(greeks_record(strike=math.inf), allow_nan=True).encode(), "bad_json"),
        # Values the schema allows but a column cannot hold (finding: the whole batch failed)
        (json.dumps({**GOOD_TICK, "underlying": "NIF\u0000TY"}).encode(), "bad_text"),
        (json.dumps(greeks_record(tradingsymbol="NIFTY\u0000CE")).encode(), "bad_text"),
        (
            json.dumps(greeks_record(source={**SOURCE, "sub_sequence_number": 2**31})).encode(),
            "out_of_range",
        ),
        (json.dumps({**GOOD_TICK, "instrument_token": 2**63}).encode(), "out_of_range"),
        (json.dumps(greeks_record(instrument_token=2**63)).encode(), "out_of_range"),
        (
            json.dumps(greeks_record(source={**SOURCE, "sequence_number": "12a"})).encode(),
            "bad_field",
        ),
        # Wrong JSON types where a name or an enum is expected (these raised TypeError)
        (json.dumps({**GOOD_TICK, "mode": ["full"]}).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "mode": {"full": 1}}).encode(), "bad_field"),
        (json.dumps(greeks_record(option_type=["CE"])).encode(), "bad_field"),
        (json.dumps(greeks_record(forward_source={"x": 1})).encode(), "bad_field"),
        (json.dumps({**GOOD_TICK, "depth": {"buy": "levels", "sell": []}}).encode(), "bad_field"),
        # The schema's field set is closed
        (json.dumps({**GOOD_TICK, "surprise": 1}).encode(), "bad_field"),
    ],
)
def test_bad_records_are_poison_with_a_stable_reason(data: bytes, reason: str) -> None:
    # Given a record that can never become a row
    # When decoded, Then it is poison, with a reason code the caller can count by
    with pytest.raises(PoisonRecordError) as caught:
        decode(user_record(data, SEQ, 3, shard_id="shardId-000000000001"))
    assert caught.value.reason == reason


def test_kites_never_is_no_exchange_time_and_the_tick_keys_on_its_receipt() -> None:
    # Given a full tick whose exchange timestamp and last trade time are Kite's 0 ("never")
    never = "1970-01-01T05:30:00+05:30"
    record = {**GOOD_TICK, "exchange_timestamp": never, "last_trade_time": never}
    # When decoded
    _, row = decode(user_record(json.dumps(record).encode(), SEQ))
    values = dict(zip(TICK_COLUMNS, row, strict=True))
    # Then both are stored as NULL, and the row's ts (its partition) is the receipt time,
    # not 1970 (whose partition, detached by retention, would refuse it)
    assert (values["exchange_timestamp"], values["last_trade_time"]) == (None, None)
    assert values["ts"] == values["received_at"] == datetime.fromisoformat(GOOD_TICK["received_at"])


def test_greeks_with_a_null_strike_price_or_rate_are_stored_as_the_schema_allows() -> None:
    nulls = dict.fromkeys(("strike", "price", "t_years", "rate", "forward"))
    _, row = decode(
        user_record(json.dumps(greeks_record(**nulls, reason="nan_input")).encode(), SEQ)
    )
    values = dict(zip(GREEKS_COLUMNS, row, strict=True))
    assert [values[name] for name in nulls] == [None] * 5


POISON_REASONS = {"bad_json", "unknown_schema", "bad_field", "out_of_range", "bad_text"}
VALIDATORS = {
    kind: Draft202012Validator(
        json.loads(resources.files("ticker_core.schemas").joinpath(name).read_text())
    )
    for kind, name in (("tick", "tick.v1.json"), ("greeks", "greeks.v1.json"))
}


def decode_or_poison(user: KinesisUserRecord) -> tuple[str, tuple[Any, ...]] | PoisonRecordError:
    """What decode returns, or the poison it raised (anything else escapes)."""
    try:
        return decode(user)
    except PoisonRecordError as exc:
        return exc


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.one_of(strategies.tick_bytes, strategies.greeks_bytes))
def test_any_user_record_becomes_a_row_or_counted_poison_never_an_escaped_error(
    data: bytes,
) -> None:
    # Given any user record: each field valid, of another JSON type, or missing
    # When persist decodes it
    outcome = decode_or_poison(user_record(data, SEQ, 3, shard_id="shardId-000000000001"))
    # Then it is poison with one of the reasons the function counts, or
    if isinstance(outcome, PoisonRecordError):
        assert outcome.reason in POISON_REASONS
        return
    # a row, from a record the committed schema accepts (the decoder is never looser)
    kind, row = outcome
    assert list(VALIDATORS[kind].iter_errors(json.loads(data))) == []
    # whose values fit their columns: a tick row encodes for COPY without complaint
    if kind == "tick":
        assert tick_encoder().payload([row])
    else:
        assert row[GREEKS_COLUMNS.index("src_subseq")] <= 2**31 - 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.one_of(strategies.tick_bytes, strategies.greeks_bytes), max_size=12))
def test_every_user_record_of_an_aggregate_is_a_row_or_quarantined(datas: list[bytes]) -> None:
    # Given an aggregated Kinesis record of any user records
    [raw] = kinesis_event([("NIFTY", datas)])["Records"]
    rows = Rows(stream_arn="arn:aws:kinesis:ap-south-1:123456789012:stream/ticks")
    # When it is decoded, Then nothing escapes, and each user record is a row or quarantined
    decode_kinesis_record(raw, rows)
    assert len(rows.ticks) + len(rows.greeks) + len(rows.quarantine) == len(datas)
    assert sum(rows.poison.values()) == len(rows.quarantine)
    assert {entry.reason for entry in rows.quarantine} <= POISON_REASONS
    # And the quarantined ones are exactly those decode refuses, by position
    expected_poison = {
        n
        for n, data in enumerate(datas)
        if isinstance(decode_or_poison(user_record(data, SEQ, n)), PoisonRecordError)
    }
    assert {e.sub_sequence_number for e in rows.quarantine} == expected_poison
