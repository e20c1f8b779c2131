"""The only module that talks to Kinesis: PutRecords, signed with SigV4, over aiohttp.

Why not ``boto3.client("kinesis").put_records``: at 100,000 ticks/s the feed
sends 40-50 MB/s, and boto3 spends about 10 ms of CPU per MB on it (JSON
encoding of the base64 text, a thread hop, generic parsing). PutRecords is a
single JSON call, so this module builds the body directly (base64 needs no
JSON escaping), signs it with botocore's own SigV4 signer and credentials
(the task role, refreshed by botocore), and sends it on the event loop: about
5 ms per MB. The base64 is ``pybase64`` (SIMD: tens of GB/s, where the
standard library's ~0.3-0.6 GB/s cost 8% of the container's CPU at 110,000
ticks/s, more than the MD5 of the aggregates). Endpoint and region come from boto3's configuration
(``AWS_ENDPOINT_URL_KINESIS``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``), so it goes
where any boto3 client of the process would.

Every failure comes back as a typed :class:`KinesisError` that says whether
the records may have been written (:attr:`KinesisError.ambiguous`); there are
no hidden retries. That includes the credentials: the task role's keys are
refreshed by botocore from the ECS credentials endpoint, and a refresh that
fails (the endpoint blinking) is a :class:`KinesisCredentialsError`, nothing
sent, retried like any unavailable Kinesis. A refresh is a blocking HTTP call,
so when one is due it runs in a worker thread, never on the event loop that
reads Kite.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pybase64
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from ticker_core.records import PutRecordsBatch

TARGET = "Kinesis_20131202.PutRecords"
CONTENT_TYPE = "application/x-amz-json-1.1"
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


class KinesisCredentialsError(KinesisUnavailableError):
    """No usable AWS credentials (a refresh failed, or none configured): nothing was sent."""


class KinesisAmbiguousError(KinesisError):
    """No answer (timeout, connection lost mid-call, HTTP 5xx): records may be written."""

    ambiguous = True


@dataclass(frozen=True, slots=True)
class PutResult:
    """Per-entry outcome: the indexes (in request order) that failed and their error codes."""

    failed: tuple[int, ...]
    error_codes: tuple[str, ...]


def request_body(stream_name: str, batch: PutRecordsBatch) -> bytes:
    """The PutRecords JSON body (base64 data needs no escaping; keys go through json)."""
    head = b'{"StreamName":' + json.dumps(stream_name).encode() + b',"Records":['
    entries = []
    for r in batch.records:
        entry = b'{"Data":"' + pybase64.b64encode(r.data) + b'","PartitionKey":'
        entry += json.dumps(r.partition_key).encode()
        if r.explicit_hash_key is not None:
            entry += b',"ExplicitHashKey":' + json.dumps(r.explicit_hash_key).encode()
        entries.append(entry + b"}")
    return head + b",".join(entries) + b"]}"


def _error_code(body: bytes) -> str:
    try:
        kind = str(json.loads(body).get("__type", ""))
    except (ValueError, AttributeError):
        return ""
    return kind.rpartition("#")[2]


class KinesisWriter:
    """PutRecords for one stream, from the event loop. Call :meth:`close` when done."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        credentials: Any,
        stream_name: str,
        timeout: float,
        connections: int = 8,
    ) -> None:
        """``credentials``: botocore credentials (``boto3.Session().get_credentials()``;
        None when the SDK found none, which every call then reports)."""
        self._url = endpoint_url.rstrip("/") + "/"
        self._region = region
        self._credentials = credentials
        self._stream = stream_name
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(5.0, timeout))
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_session(
        cls,
        session: Any,
        stream_name: str,
        *,
        timeout: float,
        endpoint_url: str | None = None,
        credentials: Any = None,
    ) -> KinesisWriter:
        """Endpoint, region and credentials as ``session.client("kinesis")`` would use them
        (``credentials`` overrides the session's)."""
        client = session.client("kinesis")
        return cls(
            endpoint_url=endpoint_url or client.meta.endpoint_url,
            region=client.meta.region_name,
            credentials=credentials or session.get_credentials(),
            stream_name=stream_name,
            timeout=timeout,
        )

    async def _frozen_credentials(self) -> Any:
        credentials = self._credentials
        if credentials is None:
            raise KinesisCredentialsError("no AWS credentials found")
        try:
            refresh_needed = getattr(credentials, "refresh_needed", None)
            if refresh_needed is not None and refresh_needed():
                return await asyncio.to_thread(credentials.get_frozen_credentials)
            return credentials.get_frozen_credentials()
        except Exception as exc:  # any provider failure; the request was not sent, so none
            # of them can have written anything: one typed, retryable outcome.
            raise KinesisCredentialsError(type(exc).__name__) from exc

    def _signed_headers(self, body: bytes, frozen: Any) -> dict[str, str]:
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET},
        )
        SigV4Auth(frozen, "kinesis", self._region).add_auth(request)
        return {k: str(v) for k, v in request.headers.items()}

    async def put(self, batch: PutRecordsBatch) -> PutResult:
        """Send ``batch`` as one PutRecords call; raises a :class:`KinesisError` subclass."""
        body = request_body(self._stream, batch)
        headers = self._signed_headers(body, await self._frozen_credentials())
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                status = response.status
                content = await response.read()
        except aiohttp.ClientConnectorError as exc:  # refused, unreachable, connect timeout
            raise KinesisUnavailableError(type(exc).__name__) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise KinesisUnavailableError(type(exc).__name__) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:  # sent, then no (whole) answer
            raise KinesisAmbiguousError(type(exc).__name__) from exc
        if status != 200:
            code = _error_code(content)
            if code in THROTTLING_CODES:
                raise KinesisThrottledError(code)
            if status >= 500:
                raise KinesisAmbiguousError(f"{status} {code}")
            raise KinesisUnavailableError(f"{status} {code}")
        return _result(content, len(batch))

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _result(content: bytes, sent: int) -> PutResult:
    try:
        results = json.loads(content)["Records"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KinesisAmbiguousError("unreadable PutRecords answer") from exc
    if len(results) != sent:
        raise KinesisAmbiguousError(f"{len(results)} results for {sent} records")
    failed = tuple(i for i, r in enumerate(results) if r.get("ErrorCode"))
    return PutResult(failed, tuple(str(results[i]["ErrorCode"]) for i in failed))
