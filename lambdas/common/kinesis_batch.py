"""Reading a Lambda Kinesis batch record by record, with Powertools partial batch responses.

A Kinesis record that cannot be fully read - a corrupt aggregate, or a user
record the function cannot use - is *poison*: it is reported as a batch item
failure (so, after the retries, it reaches the on-failure destination with
its sequence number), while every good user record, including the good ones
sharing an aggregate with the poison, is still consumed. Lambda-only (it
imports Powertools).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from ticker_core.records import EventRecordError, KinesisUserRecord, deaggregate_event_record


class PoisonRecordError(ValueError):
    """A user record that can never be used; ``reason`` is a stable code (a metric name)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def consume_kinesis_record(
    raw: Mapping[str, Any],
    consume: Callable[[KinesisUserRecord], None],
    poison: Counter[str],
) -> None:
    """Pass each user record of one Kinesis record to ``consume``; raise if any was poison.

    Every user record is consumed before raising, so the good ones sharing an
    aggregate with a poison record are not lost. ``poison`` counts by reason.
    """
    try:
        users = deaggregate_event_record(raw)
    except EventRecordError as exc:
        poison["corrupt_record"] += 1
        raise PoisonRecordError("corrupt_record", str(exc)) from exc
    first_poison: PoisonRecordError | None = None
    for user in users:
        try:
            consume(user)
        except PoisonRecordError as exc:
            poison[exc.reason] += 1
            first_poison = first_poison or exc
    if first_poison is not None:
        raise first_poison


def consume_kinesis_event(
    event: Mapping[str, Any],
    consume: Callable[[KinesisUserRecord], None],
    poison: Counter[str],
) -> dict[str, Any]:
    """Consume every user record of the event; returns Lambda's partial batch response."""
    processor = BatchProcessor(
        event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False
    )

    def handle(record: KinesisStreamRecord) -> None:
        consume_kinesis_record(record.raw_event, consume, poison)

    with processor(records=list(event.get("Records", [])), handler=handle):
        processor.process()
    return dict(processor.response())
