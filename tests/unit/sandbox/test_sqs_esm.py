"""The SQS event source mapping's rules: Lambda's record shape and what a result means."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.esm import InvokeResult, MappingConfigError
from sandbox.sqs_esm import Settlement, SqsMappingConfig, settle, sqs_event_record

IDS = ["m1", "m2", "m3"]
REPORTING = SqsMappingConfig(report_batch_item_failures=True)
PLAIN = SqsMappingConfig()


def failures(*ids: Any) -> InvokeResult:
    return InvokeResult({"batchItemFailures": [{"itemIdentifier": i} for i in ids]})


def test_success_deletes_the_whole_batch() -> None:
    assert settle(IDS, InvokeResult({"stored": 3}), REPORTING) == Settlement(tuple(IDS), ())


def test_a_function_error_keeps_every_message_for_redelivery() -> None:
    result = InvokeResult.error("Sandbox.Timedout", "Task timed out")
    assert settle(IDS, result, REPORTING) == Settlement((), tuple(IDS), "Sandbox.Timedout")


def test_reported_failures_alone_are_kept() -> None:
    assert settle(IDS, failures("m2"), REPORTING) == Settlement(("m1", "m3"), ("m2",))


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"batchItemFailures": None}, {"batchItemFailures": []}, "done"],
)
def test_no_list_or_an_empty_one_is_complete_success(payload: Any) -> None:
    assert settle(IDS, InvokeResult(payload), REPORTING).delete == tuple(IDS)


@pytest.mark.parametrize(
    "result",
    [
        InvokeResult({"batchItemFailures": "m1"}),
        failures(""),
        failures(None),
        failures(7),
        failures("not-in-the-batch"),
        InvokeResult({"batchItemFailures": ["m1"]}),
    ],
)
def test_an_invalid_partial_response_fails_the_whole_batch(result: InvokeResult) -> None:
    settlement = settle(IDS, result, REPORTING)
    assert (settlement.delete, settlement.keep) == ((), tuple(IDS))
    assert settlement.error is not None
    assert settlement.error.startswith("InvalidResponse")


def test_without_the_setting_a_returned_list_is_ignored() -> None:
    assert settle(IDS, failures("m2"), PLAIN) == Settlement(tuple(IDS), ())


@pytest.mark.parametrize(
    "settings",
    [{"batch_size": 0}, {"batch_size": 11}, {"maximum_batching_window_s": 301}, {"pollers": 0}],
)
def test_settings_outside_what_the_emulator_runs_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(MappingConfigError):
        SqsMappingConfig(**settings)


def test_an_event_record_has_lambdas_sqs_shape() -> None:
    # Given a message as ReceiveMessage returns it
    message = {
        "MessageId": "0b1c",
        "ReceiptHandle": "rh",
        "MD5OfBody": "md5",
        "Body": '{"account_id":"a","order":{}}',
        "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1767225600000"},
        "MD5OfMessageAttributes": "md5a",
        "MessageAttributes": {"kite_update_key": {"StringValue": "k", "DataType": "String"}},
    }
    # When made into an event record
    record = sqs_event_record(
        message, queue_arn="arn:aws:sqs:ap-south-1:123456789012:q", region="ap-south-1"
    )
    # Then it reads as Lambda's
    assert record == {
        "messageId": "0b1c",
        "receiptHandle": "rh",
        "body": '{"account_id":"a","order":{}}',
        "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1767225600000"},
        "messageAttributes": {
            "kite_update_key": {
                "stringValue": "k",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            }
        },
        "md5OfBody": "md5",
        "md5OfMessageAttributes": "md5a",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:ap-south-1:123456789012:q",
        "awsRegion": "ap-south-1",
    }
