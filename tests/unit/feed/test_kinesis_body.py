"""The PutRecords body the feed writes by hand is the JSON boto3 would send."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from datetime import UTC, datetime, timedelta

import pytest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from feed_container.kinesis import (
    KinesisCredentialsError,
    KinesisWriter,
    _error_code,
    _result,
    request_body,
)
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
    headers = writer._signed_headers(b"{}", writer._credentials.get_frozen_credentials())
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


async def test_a_failed_credential_refresh_is_a_typed_outcome_off_the_event_loop() -> None:
    # Given task-role credentials about to expire, whose refresh (the ECS endpoint) fails
    threads: list[str] = []

    def refresh() -> dict[str, str]:
        threads.append(threading.current_thread().name)
        raise CredentialRetrievalError(provider="container-role", error_msg="endpoint down")

    expiring = datetime.now(UTC) + timedelta(seconds=30)
    credentials = RefreshableCredentials.create_from_metadata(
        {
            "access_key": "AKID" + secrets.token_hex(8),
            "secret_key": secrets.token_hex(20),
            "token": secrets.token_hex(20),
            "expiry_time": expiring.isoformat(),
        },
        refresh_using=refresh,
        method="container-role",
    )
    writer = KinesisWriter(
        endpoint_url="http://127.0.0.1:1",
        region="ap-south-1",
        credentials=credentials,
        stream_name="ticks",
        timeout=1,
    )
    # When a PutRecords is attempted
    # Then it fails as "nothing was sent" (retryable), typed, before any connection is made
    with pytest.raises(KinesisCredentialsError) as caught:
        await writer.put(PutRecordsBatch((KinesisRecord("NIFTY", b"{}", 1, 2),)))
    assert not caught.value.ambiguous
    # And the blocking refresh ran in a worker thread, not on the loop reading Kite
    assert threads
    assert threading.main_thread().name not in threads
    await writer.close()


async def test_no_credentials_at_all_is_the_same_typed_outcome() -> None:
    writer = KinesisWriter(
        endpoint_url="http://127.0.0.1:1",
        region="ap-south-1",
        credentials=None,
        stream_name="ticks",
        timeout=1,
    )
    with pytest.raises(KinesisCredentialsError, match="no AWS credentials"):
        await writer.put(PutRecordsBatch((KinesisRecord("NIFTY", b"{}", 1, 2),)))
