"""Kite's text messages: order updates, errors, informational and unknown messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker_core.kite_wire import (
    EncodeError,
    ErrorMessage,
    InvalidMessage,
    OrderUpdate,
    ServerMessage,
    UnknownMessage,
    encode_text,
    parse_text,
)

ORDER = {
    "order_id": "250101000000001",
    "status": "COMPLETE",
    "tradingsymbol": "NIFTY26DEC24000CE",
    "filled_quantity": 75,
    "average_price": 112.5,
}


def test_order_update_carries_kites_order_object() -> None:
    # Given an order update as Kite sends it
    message = json.dumps({"type": "order", "data": ORDER})
    # When parsed
    parsed = parse_text(message)
    # Then it is an OrderUpdate with the order and its id and status at hand
    assert parsed == OrderUpdate(ORDER)
    assert isinstance(parsed, OrderUpdate)
    assert (parsed.order_id, parsed.status) == ("250101000000001", "COMPLETE")


def test_an_order_updates_key_names_the_order_its_time_status_and_fill() -> None:
    # Given the same order at two moments of one second, and an update Kite timed itself
    opened = OrderUpdate({**ORDER, "status": "OPEN", "filled_quantity": 0,
                          "order_timestamp": "2026-03-02 10:15:00"})  # fmt: skip
    filled = OrderUpdate({**ORDER, "order_timestamp": "2026-03-02 10:15:00"})
    stamped = OrderUpdate({**ORDER, "order_timestamp": "2026-03-02 10:15:00",
                           "exchange_update_timestamp": "2026-03-02 10:15:01"})  # fmt: skip
    # Then their keys tell them apart, the exchange's update time first
    assert opened.update_key == "250101000000001|2026-03-02 10:15:00|OPEN|0"
    assert filled.update_key == "250101000000001|2026-03-02 10:15:00|COMPLETE|75"
    assert stamped.update_key == "250101000000001|2026-03-02 10:15:01|COMPLETE|75"
    # And a field missing is left empty, never an error
    assert OrderUpdate({"status": "OPEN"}).update_key == "||OPEN|"


def test_order_update_without_id_or_status_strings_gives_none() -> None:
    # Given an order update whose id is a number and status absent
    parsed = parse_text('{"type":"order","data":{"order_id":1}}')
    # Then the accessors say None rather than guessing
    assert isinstance(parsed, OrderUpdate)
    assert (parsed.order_id, parsed.status) == (None, None)


def test_error_message_carries_the_server_text() -> None:
    # Given an error message as bytes, When parsed, Then it is an ErrorMessage
    assert parse_text(b'{"type":"error","data":"Invalid token"}') == ErrorMessage("Invalid token")


def test_informational_message_keeps_its_data() -> None:
    # Given a message of type "message" with structured data
    parsed = parse_text('{"type":"message","data":{"notice":"maintenance at 23:00"}}')
    # Then its data is kept as JSON
    assert parsed == ServerMessage({"notice": "maintenance at 23:00"})


def test_unknown_type_is_kept_not_dropped() -> None:
    # Given a type this codec does not know
    parsed = parse_text('{"type":"instruments_meta","data":[1,2]}')
    # Then it is an UnknownMessage holding type and data
    assert parsed == UnknownMessage("instruments_meta", [1, 2])


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[1, 2]", "not a JSON object"),
        ('{"data": 1}', "no string 'type'"),
        ('{"type": 7}', "no string 'type'"),
        ('{"type": "order", "data": {}}', "order without an object"),
        ('{"type": "order", "data": "x"}', "order without an object"),
        ('{"type": "error", "data": {"code": 1}}', "error without a string"),
        ("[" * 100_000, "not JSON"),
    ],
    ids=[
        "not JSON",
        "not UTF-8",
        "JSON array",
        "no type",
        "numeric type",
        "empty order",
        "order of a string",
        "error of an object",
        "nested too deep",
    ],
)
def test_unusable_messages_are_invalid_with_a_reason(message: str | bytes, reason: str) -> None:
    # Given a text message that cannot be used, When parsed
    parsed = parse_text(message)
    # Then it is InvalidMessage saying why, with the raw text for the log
    assert isinstance(parsed, InvalidMessage)
    assert parsed.reason.startswith(reason)
    assert parsed.raw


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@settings(deadline=None)
@given(st.sampled_from(["message", "error", "order", "postback", ""]), json_values)
def test_encoded_text_parses_back(message_type: str, data: object) -> None:
    # Given any type and JSON data
    # When encoded and parsed again
    parsed = parse_text(encode_text(message_type, data))  # type: ignore[arg-type]
    # Then the envelope survives: what is valid comes back with its data
    if message_type == "message":
        assert parsed == ServerMessage(data)  # type: ignore[arg-type]
    elif message_type == "error" and isinstance(data, str):
        assert parsed == ErrorMessage(data)
    elif message_type == "order" and isinstance(data, dict) and data:
        assert parsed == OrderUpdate(data)
    elif message_type in ("postback", ""):
        assert parsed == UnknownMessage(message_type, data)  # type: ignore[arg-type]
    else:
        assert isinstance(parsed, InvalidMessage)


def test_encoded_text_is_compact() -> None:
    # Given data, When encoded, Then it is compact JSON as Kite sends it
    assert encode_text("error", "Invalid token") == '{"type":"error","data":"Invalid token"}'


def nested(depth: int) -> list[object]:
    root: list[object] = []
    node = root
    for _ in range(depth):
        child: list[object] = []
        node.append(child)
        node = child
    return root


@pytest.mark.parametrize(
    "data", [float("nan"), {1j}, object(), nested(100_000)], ids=["nan", "set", "object", "deep"]
)
def test_data_that_is_not_json_cannot_be_encoded(data: object) -> None:
    with pytest.raises(EncodeError, match="'message' data is not JSON"):
        encode_text("message", data)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=200)
@given(st.one_of(st.text(), st.binary()))
def test_parse_text_never_raises(message: str | bytes) -> None:
    # Given any text or bytes, When parsed, Then a typed result comes back
    assert isinstance(
        parse_text(message),
        OrderUpdate | ErrorMessage | ServerMessage | UnknownMessage | InvalidMessage,
    )
