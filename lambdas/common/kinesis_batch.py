"""Reading a Lambda Kinesis batch record by record, with Powertools partial batch responses.

A user record the function cannot use - a corrupt aggregate, or a user
record that breaks its schema - is *poison*, and it costs only itself: every
failure while consuming one user record is caught, counted by reason and
handed on, and the next user record is consumed, including the good ones
sharing its aggregate. A decoder's typed errors carry their reason (a
:class:`ticker_core.records.RecordError` subclass, or :class:`PoisonRecordError`);
anything else a decoder raises is counted as ``unexpected_error`` and logged
with its traceback, since it means a decoder missed a case.

What happens to poison is the caller's choice. A function with somewhere
durable to keep it (the persist function's quarantine table) passes
``quarantine``: each poison record is handed over with its bytes, identity
and reason, and its Kinesis record is not failed. Without ``quarantine``, the
Kinesis record is reported as a batch item failure, so it reaches the event
source mapping's on-failure destination (by sequence number) after the
retries. Lambda-only (it imports Powertools).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from ticker_core.records import (
    EventRecordError,
    KinesisUserRecord,
    RecordDecodeError,
    RecordError,
    deaggregate_event_record,
)

UNEXPECTED: Final = "unexpected_error"
"""The reason of a failure no decoder named: a bug to fix, still contained to its record."""

WHOLE_RECORD: Final = -1
"""Sub-sequence number of a poison entry that is a whole Kinesis record (not de-aggregated)."""

_log = logging.getLogger(__name__)


class PoisonRecordError(ValueError):
    """A user record that can never be used; ``reason`` is a stable code (a metric name)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Poisoned:
    """A user record that can never be used: where it sat on the stream, its bytes, and why.

    For a Kinesis record that could not be de-aggregated at all,
    ``sub_sequence_number`` is :data:`WHOLE_RECORD` and ``data`` the record's bytes.
    """

    stream_arn: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str | None
    data: bytes
    reason: str
    detail: str

    @classmethod
    def of(cls, stream_arn: str, user: KinesisUserRecord, reason: str, detail: str) -> Poisoned:
        """The poison entry of one user record."""
        return cls(
            stream_arn=stream_arn,
            shard_id=user.shard_id,
            sequence_number=user.sequence_number,
            sub_sequence_number=user.sub_sequence_number,
            partition_key=user.partition_key,
            data=user.data,
            reason=reason,
            detail=detail,
        )


Quarantine = Callable[[Poisoned], None]


def loads_user_record(data: bytes) -> dict[str, Any]:
    """A JSON user record's object, parsed by orjson; :class:`RecordDecodeError` if it is not one.

    orjson takes a quarter of the stdlib's time here and is strict RFC 8259
    (no NaN, no invalid UTF-8, nesting bounded); its schema is then checked
    with ticker_core's rules (``check_tick``, ``check_greeks``).
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(f"not a JSON user record: {str(exc)[:120]}") from exc
    if type(value) is not dict:
        raise RecordDecodeError(f"user record is a JSON {type(value).__name__}, not an object")
    return value


def reason_of(exc: Exception) -> str:
    """The stable reason code of a failure to consume one user record."""
    if isinstance(exc, PoisonRecordError | RecordError):
        return exc.reason
    return UNEXPECTED


def describe(exc: Exception) -> str:
    """A short, single-line account of ``exc`` for logs and the quarantine."""
    return f"{type(exc).__name__}: {exc}"[:500]


def consume_kinesis_record(
    raw: Mapping[str, Any],
    consume: Callable[[KinesisUserRecord], None],
    poison: Counter[str],
    quarantine: Quarantine | None = None,
) -> None:
    """Pass each user record of one Kinesis record to ``consume``; count and route its poison.

    Every user record is consumed whatever happened to the one before it.
    ``poison`` counts failures by reason. Each poison record goes to
    ``quarantine`` when given; otherwise (or when the Kinesis record is too
    malformed to name) the first failure is raised once all are consumed,
    which fails this Kinesis record in the partial batch response.
    """
    stream_arn = str(raw.get("eventSourceARN", ""))
    try:
        users = deaggregate_event_record(raw)
    except EventRecordError as exc:
        poison[exc.reason] += 1
        whole = _whole_record(raw, stream_arn, exc)
        if quarantine is None or whole is None:
            raise PoisonRecordError(exc.reason, str(exc)) from exc
        quarantine(whole)
        return
    first_poison: PoisonRecordError | None = None
    for user in users:
        try:
            consume(user)
        except MemoryError:
            raise
        except Exception as exc:  # any failure of one record is that record's alone
            reason = reason_of(exc)
            if reason == UNEXPECTED:
                _log.error("a user record failed in an unexpected way", exc_info=exc)
            poison[reason] += 1
            if quarantine is not None:
                quarantine(Poisoned.of(stream_arn, user, reason, describe(exc)))
            elif first_poison is None:
                first_poison = PoisonRecordError(reason, describe(exc))
                first_poison.__cause__ = exc
    if first_poison is not None:
        raise first_poison


def _whole_record(
    raw: Mapping[str, Any], stream_arn: str, exc: EventRecordError
) -> Poisoned | None:
    """A Kinesis record that could not be read, as one poison entry (None if it names no place)."""
    if exc.shard_id is None or exc.sequence_number is None:
        return None
    kinesis = raw.get("kinesis")
    encoded = kinesis.get("data") if isinstance(kinesis, Mapping) else None
    key = kinesis.get("partitionKey") if isinstance(kinesis, Mapping) else None
    try:
        data = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        data = encoded.encode() if isinstance(encoded, str) else b""
    return Poisoned(
        stream_arn=stream_arn,
        shard_id=exc.shard_id,
        sequence_number=exc.sequence_number,
        sub_sequence_number=WHOLE_RECORD,
        partition_key=key if isinstance(key, str) else None,
        data=data,
        reason=exc.reason,
        detail=describe(exc),
    )


def consume_kinesis_event(
    event: Mapping[str, Any],
    consume: Callable[[KinesisUserRecord], None],
    poison: Counter[str],
    quarantine: Quarantine | None = None,
) -> dict[str, Any]:
    """Consume every user record of the event; returns Lambda's partial batch response."""
    processor = BatchProcessor(
        event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False
    )

    def handle(record: KinesisStreamRecord) -> None:
        consume_kinesis_record(record.raw_event, consume, poison, quarantine)

    with processor(records=list(event.get("Records", [])), handler=handle):
        processor.process()
    return dict(processor.response())
