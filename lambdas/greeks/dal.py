"""Write Greeks records to Kinesis: PutRecords, resending only the entries that failed.

PutRecords answers entry by entry: some entries of a request can fail
(throttled shard, internal error) while the rest are written. Only the
failed ones are resent, after a delay from an injectable generator; a
request that still has failures after ``attempts`` tries raises
:class:`PublishError`, which fails the invocation so Kinesis delivers the
source batch again. Rows written by the failed attempt are rewritten then,
with the same ``source``, and persistence keeps one of each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ticker_adapters.retry import Delays, full_jitter_delays
from ticker_core.records.batching import PutRecordsBatch

RETRYABLE_CALL_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


class PublishError(Exception):
    """Records that could not be written after every attempt."""

    def __init__(self, stream: str, failed: int, codes: dict[str, int]) -> None:
        super().__init__(f"{failed} records not written to {stream} after retries: {codes}")
        self.failed = failed
        self.codes = codes


@dataclass
class PublishResult:
    """What :meth:`KinesisPublisher.publish` wrote and how many entries it resent."""

    records: int = 0
    user_records: int = 0
    resent: int = 0


#: Resend delays of throttled entries: many environments write one stream, so full jitter.
DEFAULT_DELAYS = full_jitter_delays(0.05, 2.0)


class KinesisPublisher:
    """PutRecords with per-entry retries to one stream (name or ARN)."""

    def __init__(
        self,
        client: Any,
        stream: str,
        *,
        attempts: int = 5,
        delays: Delays = DEFAULT_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self._client = client
        self._stream = stream
        self._target = (
            {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
        )
        self._attempts = attempts
        self._delays = delays
        self._sleep = sleep

    def publish(self, batches: list[PutRecordsBatch]) -> PublishResult:
        """Write every batch in order; :class:`PublishError` if one cannot be written."""
        result = PublishResult()
        for batch in batches:
            result.resent += self._put(batch)
            result.records += len(batch)
            result.user_records += batch.user_records
        return result

    def _put(self, batch: PutRecordsBatch) -> int:
        pending = batch
        delays = self._delays()
        resent = 0
        codes: dict[str, int] = {}
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(next(delays))
                resent += len(pending)
            failed, codes = self._attempt(pending)
            if not failed:
                return resent
            pending = pending.subset(failed)
        raise PublishError(self._stream, len(pending), codes)

    def _attempt(self, batch: PutRecordsBatch) -> tuple[list[int], dict[str, int]]:
        """Indexes of the entries that failed, and the error codes seen."""
        try:
            response = self._client.put_records(Records=batch.request_entries(), **self._target)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in RETRYABLE_CALL_ERRORS:
                raise
            return list(range(len(batch))), {code: len(batch)}
        except BotoCoreError as exc:  # connection reset, timeout: nothing known written
            return list(range(len(batch))), {type(exc).__name__: len(batch)}
        failed: list[int] = []
        codes: dict[str, int] = {}
        for i, entry in enumerate(response["Records"]):
            code = entry.get("ErrorCode")
            if code:
                failed.append(i)
                codes[code] = codes.get(code, 0) + 1
        return failed, codes
