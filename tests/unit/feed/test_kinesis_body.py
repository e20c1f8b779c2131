"""The PutRecords body the feed writes by hand is the JSON boto3 would send."""

from __future__ import annotations

import base64
import json
import secrets

from botocore.credentials import Credentials

from feed_container.kinesis import KinesisWriter, _error_code, _result, request_body
from ticker_core.records import KinesisRecord, PutRecordsBatch


def test_the_body_is_putrecords_json_with_base64_data() -> None:
    batch = PutRecordsBatch(
        (
            KinesisRecord("NIFTY", b"\xf3\x89\x9a\xc2agg", 3, 30),
            KinesisRecord('M&M "q"', b"{}", 1, 2, explicit_hash_key="42"),
        )
    )
    parsed = json.loads(request_body("ticks", batch))
    assert parsed == {
        "StreamName": "ticks",
        "Records": [
            {"Data": base64.b64encode(b"\xf3\x89\x9a\xc2agg").decode(), "PartitionKey": "NIFTY"},
            {
                "Data": base64.b64encode(b"{}").decode(),
                "PartitionKey": 'M&M "q"',
                "ExplicitHashKey": "42",
            },
        ],
    }


def test_requests_are_signed_for_kinesis_in_the_region() -> None:
    writer = KinesisWriter(
        endpoint_url="http://127.0.0.1:1",
        region="ap-south-1",
        credentials=Credentials("AKID" + secrets.token_hex(8), secrets.token_hex(20)),
        stream_name="ticks",
        timeout=1,
    )
    headers = writer._signed_headers(b"{}")
    assert headers["X-Amz-Target"] == "Kinesis_20131202.PutRecords"
    assert "/ap-south-1/kinesis/aws4_request" in headers["Authorization"]
    assert "X-Amz-Date" in headers


def test_answers_are_read_entry_by_entry() -> None:
    answer = {
        "FailedRecordCount": 1,
        "Records": [{"SequenceNumber": "1"}, {"ErrorCode": "InternalFailure"}],
    }
    assert _result(json.dumps(answer).encode(), 2).failed == (1,)
    assert _error_code(b'{"__type":"com.amazon#ProvisionedThroughputExceededException"}') == (
        "ProvisionedThroughputExceededException"
    )
    assert _error_code(b"<html>") == ""
