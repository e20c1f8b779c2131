"""The SQS event source mapping emulator against moto's queues: Lambda's SQS semantics."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox.esm import InvokeResult
from sandbox.moto_server import AwsEndpoint
from sandbox.provision import client, queue_depth
from sandbox.sqs_esm import SqsEventSourceMapping, SqsMappingConfig, SqsMappingTarget
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

VISIBILITY_S = 1
MAX_RECEIVES = 2


class Function:
    """A stand-in function: answers each batch with ``answer(bodies)``; remembers every batch."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], InvokeResult]) -> None:
        self.answer = answer
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        records = event["Records"]
        with self._lock:
            self.batches.append([r["body"] for r in records])
        return self.answer(records)

    def deliveries(self) -> Counter[str]:
        with self._lock:
            return Counter(body for batch in self.batches for body in batch)


class Queues:
    def __init__(self, aws: AwsEndpoint) -> None:
        self.aws = aws
        self.sqs = client(aws, "sqs")
        self.dlq = self.sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = self.arn(self.dlq)
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}
        self.url = self.sqs.create_queue(
            QueueName="work",
            Attributes={
                "VisibilityTimeout": str(VISIBILITY_S),
                "RedrivePolicy": json.dumps(redrive),
            },
        )["QueueUrl"]

    def arn(self, url: str) -> str:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    def send(self, count: int) -> list[str]:
        bodies = [f"m{n}" for n in range(count)]
        for start in range(0, count, 10):
            chunk = bodies[start : start + 10]
            entries = [{"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)]
            self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
        return bodies

    def depth(self) -> tuple[int, int]:
        return queue_depth(self.aws, self.url), queue_depth(self.aws, self.dlq)


@pytest.fixture
def queues(aws: AwsEndpoint) -> Queues:
    return Queues(aws)


@pytest.fixture
def mapped(queues: Queues) -> Iterator[Callable[[Function], SqsEventSourceMapping]]:
    started: list[SqsEventSourceMapping] = []

    def start(function: Function) -> SqsEventSourceMapping:
        mapping = SqsEventSourceMapping(
            "work",
            SqsMappingConfig(batch_size=10, report_batch_item_failures=True),
            SqsMappingTarget(queues.url, queues.arn(queues.url), queues.aws.region),
            function,
            lambda service: client(queues.aws, service),
        )
        mapping.start()
        started.append(mapping)
        return mapping

    yield start
    for mapping in started:
        mapping.stop()


def drained(queues: Queues) -> None:
    wait_until(queues.depth, lambda depth: depth[0] == 0, what="the queue empty", within=30)


def test_a_successful_batch_is_deleted_and_batches_hold_at_most_ten(
    queues: Queues, mapped: Callable[[Function], SqsEventSourceMapping]
) -> None:
    function = Function(lambda records: InvokeResult({"stored": len(records)}))
    bodies = queues.send(25)
    mapping = mapped(function)
    drained(queues)
    assert function.deliveries() == Counter(bodies)
    assert max(len(batch) for batch in function.batches) <= 10
    assert mapping.stats().messages_deleted == 25
    assert queues.depth() == (0, 0)


def test_only_the_reported_failures_come_back(
    queues: Queues, mapped: Callable[[Function], SqsEventSourceMapping]
) -> None:
    # Given a function that fails one message the first time it sees it
    failed_once: set[str] = set()

    def answer(records: list[dict[str, Any]]) -> InvokeResult:
        bad = [r for r in records if r["body"] == "m3" and "m3" not in failed_once]
        failed_once.update(r["body"] for r in bad)
        return InvokeResult(
            {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in bad]}
        )

    function = Function(answer)
    bodies = queues.send(6)
    mapped(function)
    # When the queue drains, Then that message alone was delivered twice (after its
    # visibility timeout), and nothing reached the dead-letter queue
    drained(queues)
    assert function.deliveries() == Counter(bodies) + Counter(["m3"])
    assert queues.depth() == (0, 0)


def test_a_function_error_redelivers_the_batch_and_then_redrives_it(
    queues: Queues, mapped: Callable[[Function], SqsEventSourceMapping]
) -> None:
    # Given a function that always fails
    function = Function(lambda records: InvokeResult.error("Runtime.ExitError", "crashed"))
    bodies = queues.send(3)
    mapping = mapped(function)
    # Then each message is received maxReceiveCount times, then SQS moves it to the DLQ
    wait_until(queues.depth, lambda depth: depth == (0, 3), what="all three redriven", within=30)
    assert function.deliveries() == Counter(dict.fromkeys(bodies, MAX_RECEIVES))
    assert mapping.stats().messages_deleted == 0
    assert mapping.stats().function_errors >= MAX_RECEIVES


def test_an_invalid_partial_response_fails_the_whole_batch(
    queues: Queues, mapped: Callable[[Function], SqsEventSourceMapping]
) -> None:
    # Given a function naming a message that is not in its batch, once
    calls: list[int] = []

    def answer(records: list[dict[str, Any]]) -> InvokeResult:
        calls.append(len(records))
        if len(calls) == 1:
            return InvokeResult({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]})
        return InvokeResult(None)

    function = Function(answer)
    bodies = queues.send(2)
    mapped(function)
    # Then the whole first batch came back, and was then deleted
    drained(queues)
    first = function.batches[0]
    assert function.deliveries() == Counter(bodies) + Counter(first)
