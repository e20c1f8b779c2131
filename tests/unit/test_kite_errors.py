"""Kite's error vocabulary: the error_type mapping, the envelope, and answer decoding."""

from __future__ import annotations

import json

import pytest

from ticker_core.kite_errors import (
    ERROR_TYPES,
    KiteDataError,
    KiteError,
    KiteGeneralError,
    KiteHoldingError,
    KiteMarginError,
    KiteNetworkError,
    KiteNotSentError,
    KiteOrderError,
    KiteOutcomeUnknownError,
    KiteTokenError,
    KiteTooManyRequestsError,
    KiteTransportError,
    KiteUserError,
    data_from_response,
    error_class,
    error_from_envelope,
    is_transient,
    success_envelope,
)

DOCUMENTED = (
    "TokenException",
    "UserException",
    "OrderException",
    "InputException",
    "MarginException",
    "HoldingException",
    "NetworkException",
    "DataException",
    "GeneralException",
    "PermissionException",
)
JSON = "application/json"


def body(envelope: object) -> bytes:
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("error_type", DOCUMENTED)
def test_every_documented_type_has_a_class_whose_envelope_parses_back_to_it(
    error_type: str,
) -> None:
    # Given the class for a documented type, raised with its usual status
    kind = error_class(error_type)
    error = kind("went wrong")
    # Then it names the type, and its envelope is Kite's shape
    assert error.error_type == error_type
    assert error.envelope() == {
        "status": "error",
        "message": "went wrong",
        "data": None,
        "error_type": error_type,
    }
    # When the envelope comes back over the wire with that status
    assert error.http_status is not None
    with pytest.raises(KiteError) as parsed:
        data_from_response(error.http_status, JSON, body(error.envelope()))
    # Then it is the same class, type, status and message
    assert type(parsed.value) is kind
    assert (parsed.value.error_type, parsed.value.http_status, parsed.value.message) == (
        error_type,
        error.http_status,
        "went wrong",
    )


def test_the_mapping_is_one_class_per_type_and_the_extra_types_are_general_errors() -> None:
    assert set(ERROR_TYPES) == set(DOCUMENTED)
    assert len(set(ERROR_TYPES.values())) == len(ERROR_TYPES)
    # The types kiteconnect has no class for fall in its GeneralException family
    for kind in (KiteUserError, KiteMarginError, KiteHoldingError):
        assert issubclass(kind, KiteGeneralError)


def test_an_unknown_type_is_a_general_error_that_keeps_kites_name() -> None:
    error = error_from_envelope({"error_type": "BrandNewException", "message": "m"}, 500)
    assert type(error) is KiteGeneralError
    assert (error.error_type, error.http_status, error.message) == ("BrandNewException", 500, "m")
    # And an envelope without a type or message still gives a typed error
    bare = error_from_envelope({"status": "error"}, 400)
    assert (type(bare), bare.error_type, bare.message) == (KiteGeneralError, "GeneralException", "")


def test_a_success_envelope_gives_its_data() -> None:
    assert success_envelope([1, 2]) == {"status": "success", "data": [1, 2]}
    answer = body(success_envelope({"order_id": "1"}))
    assert data_from_response(200, "application/json; charset=utf-8", answer) == {"order_id": "1"}
    assert data_from_response(200, JSON, body(success_envelope(None))) is None


def test_429_is_the_too_many_requests_kind_of_network_error() -> None:
    too_many = {"status": "error", "error_type": "NetworkException", "message": "Too many requests"}
    with pytest.raises(KiteTooManyRequestsError) as raised:
        data_from_response(429, JSON, body(too_many))
    assert raised.value.http_status == 429
    assert isinstance(raised.value, KiteNetworkError)
    # A 429 with another type keeps that type's class
    with pytest.raises(KiteTokenError):
        data_from_response(429, JSON, body({"status": "error", "error_type": "TokenException"}))


@pytest.mark.parametrize(
    ("status", "content_type", "payload", "kind"),
    [
        (502, "text/html", b"<html>Bad gateway</html>", KiteNetworkError),
        (500, "", b"", KiteNetworkError),
        (504, JSON, b"{cut sho", KiteNetworkError),
        (429, "text/plain", b"slow down", KiteTooManyRequestsError),
        (404, "text/html", b"<html>no</html>", KiteDataError),
        (200, "text/html", b"<html>captive portal</html>", KiteDataError),
        (200, JSON, b"not json", KiteDataError),
        (200, JSON, b"[1, 2]", KiteDataError),
        (200, JSON, body({"status": "success"}), KiteDataError),
        (302, JSON, body(success_envelope(1)), KiteDataError),
        (503, "text/csv", b"a,b\n", KiteNetworkError),
    ],
)
def test_an_answer_that_is_not_kites_is_typed_by_its_status(
    status: int, content_type: str, payload: bytes, kind: type[KiteError]
) -> None:
    with pytest.raises(KiteError) as raised:
        data_from_response(status, content_type, payload)
    assert type(raised.value) is kind
    assert raised.value.http_status == status
    # And the body, which is not Kite's, is not quoted in the message
    assert payload.decode(errors="replace") not in raised.value.message or not payload


def test_a_csv_answer_is_the_bytes() -> None:
    assert data_from_response(200, "text/csv", b"instrument_token\n1\n") == b"instrument_token\n1\n"


def test_transport_errors_are_network_errors_without_a_status() -> None:
    for kind in (KiteNotSentError, KiteOutcomeUnknownError):
        error = kind("no answer")
        assert isinstance(error, KiteTransportError)
        assert isinstance(error, KiteNetworkError)
        assert (error.http_status, error.error_type) == (None, "NetworkException")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (KiteNetworkError("oms"), True),
        (KiteTooManyRequestsError("slow"), True),
        (KiteNotSentError("refused"), True),
        (KiteOutcomeUnknownError("reset"), True),
        (KiteDataError("oms answer"), True),  # 502
        (KiteGeneralError("gw", http_status=504), True),
        (KiteGeneralError("bug"), False),  # 500
        (KiteTokenError("expired"), False),
        (KiteOrderError("rejected"), False),
        (KiteDataError("shape", http_status=200), False),
    ],
)
def test_transient_failures_are_the_network_family_and_gateway_statuses(
    error: KiteError, transient: bool
) -> None:
    assert is_transient(error) is transient
