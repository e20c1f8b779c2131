"""The only module that talks to Kinesis: PutRecords through one boto3 client.

boto3 is synchronous, so calls run on a small thread pool (one thread per
sender lane; the client is thread-safe and shared). botocore's own retries
are off: the sender decides what to resend, because only it knows the
ordering and duplicate rules. Every failure comes back as a typed
:class:`KinesisError` that says whether the records may have been written.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from ticker_core.records import PutRecordsBatch

#: Error codes (call-level or per entry) that mean "slow down", nothing was written.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "KMSThrottlingException",
    }
)


class KinesisError(Exception):
    """A PutRecords call that did not return per-entry results."""

    #: Whether Kinesis may have written some of the records anyway.
    ambiguous = False


class KinesisThrottledError(KinesisError):
    """The whole call was refused for throughput (HTTP 400): nothing was written."""


class KinesisUnavailableError(KinesisError):
    """The call was refused or never reached Kinesis: nothing was written."""


class KinesisAmbiguousError(KinesisError):
    """No answer (read timeout, connection lost mid-call, HTTP 5xx): records may be written."""

    ambiguous = True


@dataclass(frozen=True, slots=True)
class PutResult:
    """Per-entry outcome: the indexes (in request order) that failed and their error codes."""

    failed: tuple[int, ...]
    error_codes: tuple[str, ...]


def client_config(*, put_timeout: float, pool: int) -> Config:
    """botocore settings for the feed's client: no SDK retries, bounded timeouts."""
    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(5.0, put_timeout),
        read_timeout=put_timeout,
        max_pool_connections=pool,
        tcp_keepalive=True,
    )


class KinesisWriter:
    """PutRecords for one stream, from the event loop."""

    def __init__(self, client: Any, stream_name: str, *, threads: int) -> None:
        self._client = client
        self._stream = stream_name
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kinesis")

    async def put(self, batch: PutRecordsBatch) -> PutResult:
        """Send ``batch`` as one PutRecords call; raises a :class:`KinesisError` subclass."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._put, batch)

    def _put(self, batch: PutRecordsBatch) -> PutResult:
        try:
            response = self._client.put_records(
                StreamName=self._stream, Records=batch.request_entries()
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in THROTTLING_CODES:
                raise KinesisThrottledError(code) from exc
            if status >= 500:
                raise KinesisAmbiguousError(f"{status} {code}") from exc
            raise KinesisUnavailableError(f"{status} {code}") from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise KinesisUnavailableError(type(exc).__name__) from exc
        except BotoCoreError as exc:  # read timeouts, connections closed mid-call
            raise KinesisAmbiguousError(type(exc).__name__) from exc
        results = response.get("Records", [])
        if len(results) != len(batch):
            raise KinesisAmbiguousError(f"{len(results)} results for {len(batch)} records")
        failed = tuple(i for i, r in enumerate(results) if r.get("ErrorCode"))
        codes = tuple(str(results[i]["ErrorCode"]) for i in failed)
        return PutResult(failed, codes)

    def close(self) -> None:
        """Stop the thread pool (after in-flight calls return)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
