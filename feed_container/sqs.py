"""The only module that talks to SQS: SendMessageBatch through botocore, off the event loop.

Why botocore here when ``kinesis.py`` signs its own requests: Kinesis carries
the feed's 40-50 MB/s, where boto3's CPU per MB matters; SQS carries Kite's
order messages, a few per second at most, where it does not. So the SDK's
client does the protocol (SQS's JSON protocol, SigV4, credentials from the
task role), and :func:`asyncio.to_thread` keeps its blocking call, and any
credential refresh it does, off the loop that reads Kite. The client is built
in that worker thread on first use, with the SDK's hidden retries off (one
attempt per call: the forwarder retries, with its own backoff, only the
entries that failed) and a timeout on connect and read.

Every call ends in a per-entry result or a typed :class:`SqsError`:

* :class:`SqsUnavailableError`: nothing was sent (connection refused, no
  credentials);
* :class:`SqsAmbiguousError`: sent, no complete answer (read timeout,
  connection lost, HTTP 5xx): the messages may be on the queue, and a
  retry may put them there twice (the consumer stores an update once);
* :class:`SqsRefusedError`: SQS answered with an error code (throttling,
  access denied, no such queue).

Errors are told apart by their types and SQS's error codes, never by text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

#: Failures before anything was sent: connect errors (timeouts included) and credentials.
_NOT_SENT = (
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
)

#: SendMessageBatch takes at most this many entries ...
MAX_BATCH_ENTRIES = 10
#: ... and at most this many bytes in all (bodies and attributes; 256 KiB, the limit every
#: SQS region and SDK version enforces).
MAX_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """One message of a SendMessageBatch call."""

    #: Unique within the call (letters, digits, ``-`` and ``_``; at most 80).
    entry_id: str
    body: str
    #: String message attributes (name -> value).
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """The bytes SQS counts against the message and batch limits."""
        size = len(self.body.encode("utf-8"))
        for name, value in self.attributes.items():
            size += len(name.encode()) + len("String") + len(value.encode("utf-8"))
        return size


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """Why SQS did not take a message (one entry, or every entry of a failed call)."""

    #: SQS's error code, or the exception type for a call that got no answer.
    code: str
    #: SQS's word on whose fault it is: True means the same message will be refused again.
    sender_fault: bool
    #: The whole call failed (its entries were never looked at one by one).
    whole_call: bool = False


class SqsError(Exception):
    """A SendMessageBatch call that returned no per-entry results."""

    #: Whether some messages may have been enqueued anyway.
    ambiguous = False

    def __init__(self, code: str, *, sender_fault: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.sender_fault = sender_fault

    def failure(self) -> EntryFailure:
        """This error as every entry's failure."""
        return EntryFailure(self.code, self.sender_fault, whole_call=True)


class SqsUnavailableError(SqsError):
    """The call never reached SQS (refused, unreachable, no credentials): nothing was sent."""


class SqsAmbiguousError(SqsError):
    """No complete answer (timeout, connection lost, HTTP 5xx): messages may be enqueued."""

    ambiguous = True


class SqsRefusedError(SqsError):
    """SQS refused the call with an error code (throttled, denied, no such queue)."""


def client_config(timeout: float) -> Config:
    """The SQS client's configuration: one attempt per call, bounded connect and read."""
    return Config(
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
        retries={"total_max_attempts": 1},
        max_pool_connections=2,
    )


class SqsBatchSender:
    """SendMessageBatch to one queue, awaited from the event loop."""

    def __init__(self, queue_url: str, make_client: Callable[[], Any]) -> None:
        """``make_client`` builds a botocore SQS client (called once, in a worker thread)."""
        self.queue_url = queue_url
        self._make_client = make_client
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_session(
        cls, session: Any, queue_url: str, *, timeout: float, endpoint_url: str | None = None
    ) -> SqsBatchSender:
        """A sender whose client comes from ``session`` (a ``boto3.Session``), as the SDK's
        environment configures it (``AWS_ENDPOINT_URL_SQS``, ``AWS_REGION``, the task role);
        ``endpoint_url`` overrides the endpoint."""

        def make() -> Any:
            return session.client("sqs", endpoint_url=endpoint_url, config=client_config(timeout))

        return cls(queue_url, make)

    async def send(self, entries: Sequence[BatchEntry]) -> dict[str, EntryFailure]:
        """Send ``entries`` in one call; returns the failed ones by entry id (empty: all sent).

        Raises an :class:`SqsError` subclass when the call as a whole failed.
        """
        if not 1 <= len(entries) <= MAX_BATCH_ENTRIES:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_ENTRIES} entries")
        return await asyncio.to_thread(self._send, entries)

    def _client_now(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _send(self, entries: Sequence[BatchEntry]) -> dict[str, EntryFailure]:
        request = [
            {
                "Id": entry.entry_id,
                "MessageBody": entry.body,
                "MessageAttributes": {
                    name: {"DataType": "String", "StringValue": value}
                    for name, value in entry.attributes.items()
                },
            }
            for entry in entries
        ]
        try:
            response = self._client_now().send_message_batch(
                QueueUrl=self.queue_url, Entries=request
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "Unknown")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status >= 500:
                raise SqsAmbiguousError(code) from exc
            raise SqsRefusedError(code, sender_fault=error.get("Type") == "Sender") from exc
        except _NOT_SENT as exc:  # nothing was sent
            raise SqsUnavailableError(type(exc).__name__) from exc
        except (ReadTimeoutError, ConnectionClosedError) as exc:  # sent, no whole answer
            raise SqsAmbiguousError(type(exc).__name__) from exc
        except BotoCoreError as exc:  # anything else the SDK raises: it may have been sent
            raise SqsAmbiguousError(type(exc).__name__) from exc
        failed = {
            str(item["Id"]): EntryFailure(
                str(item.get("Code") or "Unknown"), bool(item.get("SenderFault"))
            )
            for item in response.get("Failed", [])
        }
        answered = set(failed) | {str(item["Id"]) for item in response.get("Successful", [])}
        for entry in entries:  # never seen: SQS answers every entry; retried if it does not
            if entry.entry_id not in answered:
                failed[entry.entry_id] = EntryFailure("NoAnswer", False)
        return failed
