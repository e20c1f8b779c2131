"""Kite's order messages to SQS: batching, retries of failed entries only, bounds, the stop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from feed_container.metrics import Metrics
from feed_container.order_updates import (
    DROP_QUEUE_FULL,
    DROP_TOO_LARGE,
    DUPLICATE,
    UPDATE_KEY_ATTRIBUTE,
    OrderUpdateForwarder,
    OrderUpdateQueue,
    retry_unless_sender_fault,
)
from feed_container.sqs import (
    MAX_BATCH_BYTES,
    BatchEntry,
    EntryFailure,
    SqsAmbiguousError,
    SqsBatchSender,
    SqsRefusedError,
    SqsUnavailableError,
)
from feed_container.supervision import Supervisor
from tests.waiting import wait_until_async
from ticker_core.kite_wire import OrderUpdate

THROTTLED = EntryFailure("RequestThrottled", sender_fault=False)
INVALID = EntryFailure("InvalidMessageContents", sender_fault=True)


def order(n: int, status: str = "OPEN", **extra: Any) -> OrderUpdate:
    return OrderUpdate(
        {
            "order_id": f"2500000000{n:05d}",
            "status": status,
            "order_timestamp": "2026-03-02 10:15:00",
            "filled_quantity": 0,
            "checksum": "",
            **extra,
        }
    )


def ids(batch: Sequence[Any]) -> list[str]:
    return [json.loads(p.entry.body)["order"]["order_id"][-5:] for p in batch]


# -- the pure queue -------------------------------------------------------------------


def test_batches_hold_ten_messages_oldest_first() -> None:
    # Given 23 order messages queued
    queue = OrderUpdateQueue(100)
    for n in range(23):
        assert queue.offer("acct", order(n)) is None
    # When calls are taken and each succeeds
    sizes = []
    while batch := queue.take():
        sizes.append(len(batch))
        assert queue.settle({}).sent == len(batch)
    # Then SendMessageBatch's ten-entry limit made three calls, and nothing is left
    assert sizes == [10, 10, 3]
    assert len(queue) == 0


def test_a_batch_stays_within_the_call_byte_limit() -> None:
    # Given messages of a third of SendMessageBatch's byte limit each
    queue = OrderUpdateQueue(100)
    for n in range(5):
        queue.offer("acct", order(n, notes="x" * (MAX_BATCH_BYTES // 3)))
    # When taken
    first = queue.take()
    # Then only as many as fit go in one call
    assert len(first) == 2
    assert sum(p.entry.size for p in first) <= MAX_BATCH_BYTES


def test_the_message_is_the_account_and_the_order_with_its_identity_attribute() -> None:
    queue = OrderUpdateQueue(10)
    update = order(
        7, "COMPLETE", filled_quantity=5, exchange_update_timestamp="2026-03-02 10:15:01"
    )
    queue.offer("acct1", update)
    (pending,) = queue.take()
    assert json.loads(pending.entry.body) == {"account_id": "acct1", "order": update.data}
    assert pending.entry.attributes == {
        UPDATE_KEY_ATTRIBUTE: "250000000000007|2026-03-02 10:15:01|COMPLETE|5"
    }


def test_only_the_failed_entries_are_retried_first_in_their_order() -> None:
    # Given a call of eight messages of which SQS refused the second and the fourth,
    # and one more message queued behind it
    queue = OrderUpdateQueue(100)
    for n in range(8):
        queue.offer("acct", order(n))
    batch = queue.take()
    queue.offer("acct", order(8))
    failed = {batch[1].entry.entry_id: THROTTLED, batch[3].entry.entry_id: THROTTLED}
    # When the result is settled
    settled = queue.settle(failed)
    # Then six were delivered, and the next call starts with the two refused, in order
    assert settled.sent == 6
    assert [p for p, _ in settled.retried] == [batch[1], batch[3]]
    assert ids(queue.take()) == ["00001", "00003", "00008"]


def test_an_entry_refused_as_the_senders_fault_is_given_up_not_retried() -> None:
    queue = OrderUpdateQueue(10)
    queue.offer("acct", order(1))
    queue.offer("acct", order(2))
    first, second = queue.take()
    settled = queue.settle({first.entry.entry_id: INVALID, second.entry.entry_id: THROTTLED})
    assert [p.entry.entry_id for p, _ in settled.given_up] == [first.entry.entry_id]
    assert ids(queue.take()) == ["00002"]


def test_a_failed_call_retries_all_its_messages_whatever_its_fault() -> None:
    # Given the default decision: a call refused as a whole (say, access denied while the
    # task role propagates) says nothing about the messages
    assert retry_unless_sender_fault(EntryFailure("AccessDenied", True, whole_call=True))
    queue = OrderUpdateQueue(10)
    queue.offer("acct", order(1))
    queue.take()
    settled = queue.fail_call(SqsRefusedError("AccessDenied", sender_fault=True).failure())
    assert (settled.sent, len(settled.retried), settled.given_up) == (0, 1, [])
    assert len(queue) == 1


def test_the_retry_decision_is_injected() -> None:
    # Given a policy that gives up on everything
    queue = OrderUpdateQueue(10, decide=lambda failure: False)
    queue.offer("acct", order(1))
    queue.take()
    # When the call fails
    settled = queue.fail_call(SqsUnavailableError("EndpointConnectionError").failure())
    # Then the message is given up
    assert len(settled.given_up) == 1
    assert len(queue) == 0


def test_the_queue_is_bounded_in_flight_included() -> None:
    queue = OrderUpdateQueue(3)
    assert [queue.offer("acct", order(n)) for n in range(2)] == [None, None]
    queue.take()  # two in flight
    assert queue.offer("acct", order(2)) is None
    assert queue.offer("acct", order(3)) == DROP_QUEUE_FULL
    assert len(queue) == 3


def test_the_same_update_from_another_connection_is_queued_once() -> None:
    # Given the account's three connections each deliver the same update
    queue = OrderUpdateQueue(10)
    outcomes = [queue.offer("acct", order(1, "COMPLETE")) for _ in range(3)]
    # Then it is queued once; a later state of the order, and another account's, are queued
    assert outcomes == [None, DUPLICATE, DUPLICATE]
    assert queue.offer("acct", order(1, "COMPLETE", filled_quantity=1)) is None
    assert queue.offer("other", order(1, "COMPLETE")) is None
    assert len(queue) == 3


def test_an_update_without_an_order_id_is_never_taken_for_a_duplicate() -> None:
    queue = OrderUpdateQueue(10)
    odd = OrderUpdate({"status": "OPEN"})
    assert [queue.offer("acct", odd) for _ in range(2)] == [None, None]


def test_an_update_lost_to_a_full_queue_is_counted_once_and_a_later_copy_may_still_go() -> None:
    # Given a full queue that drops an update's first copy
    queue = OrderUpdateQueue(1)
    queue.offer("acct", order(1))
    assert queue.offer("acct", order(2)) == DROP_QUEUE_FULL
    # When the account's second connection brings it while still full, Then that is no
    # second loss
    assert queue.offer("acct", order(2)) == DUPLICATE
    # And once there is room, the third copy is queued
    queue.take()
    queue.settle({})
    assert queue.offer("acct", order(2)) is None
    assert queue.offer("acct", order(2)) == DUPLICATE


def test_a_message_sqs_can_never_take_is_dropped() -> None:
    queue = OrderUpdateQueue(10)
    assert queue.offer("acct", order(1, notes="x" * MAX_BATCH_BYTES)) == DROP_TOO_LARGE
    assert len(queue) == 0


def test_a_dead_calls_messages_go_back_in_front() -> None:
    queue = OrderUpdateQueue(10)
    for n in range(3):
        queue.offer("acct", order(n))
    taken = queue.take()
    assert queue.take() == []  # one call in flight at a time
    assert queue.requeue_in_flight() == 3
    assert ids(queue.take()) == ids(taken)


# -- the asyncio layer ----------------------------------------------------------------


class ScriptedSqs:
    """SendMessageBatch from a script: per call, failed entry positions or an error."""

    def __init__(self) -> None:
        self.script: list[set[int] | Exception] = []
        self.down = False
        self.calls: list[list[str]] = []
        self.delivered: list[str] = []
        self.gate: asyncio.Event | None = None

    async def send(self, entries: Sequence[BatchEntry]) -> dict[str, EntryFailure]:
        self.calls.append([e.entry_id for e in entries])
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if self.down:
            raise SqsUnavailableError("EndpointConnectionError")
        step = self.script.pop(0) if self.script else set()
        if isinstance(step, Exception):
            raise step
        failed = {entries[i].entry_id: THROTTLED for i in step}
        self.delivered += [
            e.attributes[UPDATE_KEY_ATTRIBUTE] for e in entries if e.entry_id not in failed
        ]
        return failed


class RecordingDelays:
    def __init__(self) -> None:
        self.taken = 0

    def __call__(self) -> Iterator[float]:
        for delay in repeat(0.001):
            self.taken += 1
            yield delay


def forwarder(
    sqs: ScriptedSqs, *, capacity: int = 1000, delays: RecordingDelays | None = None
) -> tuple[OrderUpdateForwarder, Metrics, Supervisor]:
    metrics = Metrics(lag_window=False)
    supervisor = Supervisor(metrics, restart_delays=lambda: repeat(0.001))
    forwarder = OrderUpdateForwarder(
        OrderUpdateQueue(capacity), sqs, metrics, retry_delays=delays or RecordingDelays()
    )
    return forwarder, metrics, supervisor


def key(n: int, status: str = "OPEN") -> str:
    return order(n, status).update_key


async def stop(f: OrderUpdateForwarder, within: float = 5.0) -> bool:
    now = asyncio.get_running_loop().time()
    return await f.close(now + within - 1.0, now + within)


async def test_messages_are_forwarded_and_counted() -> None:
    sqs = ScriptedSqs()
    f, metrics, supervisor = forwarder(sqs)
    f.start(supervisor)
    for n in range(12):
        f.submit("acct", order(n))
    await wait_until_async(lambda: len(sqs.delivered), lambda n: n == 12, what="12 delivered")
    assert metrics.total("feed_order_updates_forwarded_total") == 12
    assert metrics.value("feed_order_updates_pending") == 0
    assert all(len(call) <= 10 for call in sqs.calls)
    assert await stop(f) is True


async def test_failed_entries_are_retried_with_the_injected_backoff_and_nothing_is_lost() -> None:
    # Given SQS that refuses a whole call, then two entries of the next one
    sqs = ScriptedSqs()
    sqs.script = [SqsAmbiguousError("ReadTimeoutError"), {0, 2}]
    delays = RecordingDelays()
    f, metrics, supervisor = forwarder(sqs, delays=delays)
    # When five messages are submitted
    for n in range(5):
        f.submit("acct", order(n))
    f.start(supervisor)
    await wait_until_async(lambda: len(sqs.delivered), lambda n: n == 5, what="5 delivered")
    # Then each is delivered exactly once, the refused entries alone were resent,
    # and the waits between the failed calls came from the injected delays
    assert sorted(sqs.delivered) == sorted(key(n) for n in range(5))
    assert [len(call) for call in sqs.calls] == [5, 5, 2]
    assert delays.taken == 2
    assert metrics.value("feed_order_updates_failed_total", error="ReadTimeoutError") == 5
    assert metrics.value("feed_order_updates_failed_total", error="RequestThrottled") == 2
    assert metrics.value("feed_order_updates_requests_total", outcome="ambiguous") == 1
    assert metrics.value("feed_order_updates_requests_total", outcome="partial") == 1
    assert metrics.total("feed_order_updates_dropped_total") == 0
    assert await stop(f) is True


async def test_submitting_never_waits_for_a_call_in_flight() -> None:
    # Given a call in flight that SQS has not answered
    sqs = ScriptedSqs()
    sqs.gate = asyncio.Event()
    f, _, supervisor = forwarder(sqs)
    f.start(supervisor)
    f.submit("acct", order(0))
    await wait_until_async(lambda: len(sqs.calls), lambda n: n == 1, what="a call in flight")
    # When more messages arrive, Then submit returns at once and they wait their turn
    for n in range(1, 4):
        f.submit("acct", order(n))
    assert f.pending == 4
    sqs.gate.set()
    await wait_until_async(lambda: len(sqs.delivered), lambda n: n == 4, what="4 delivered")
    assert [len(call) for call in sqs.calls] == [1, 3]
    assert await stop(f) is True


async def test_a_full_queue_counts_drops_and_warns_at_a_limited_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given SQS down and room for three messages
    sqs = ScriptedSqs()
    sqs.down = True
    f, metrics, supervisor = forwarder(sqs, capacity=3)
    f.start(supervisor)
    # When ten arrive
    with caplog.at_level(logging.WARNING, logger="feed_container.order_updates"):
        for n in range(10):
            f.submit("acct", order(n))
    # Then seven are dropped, counted, with one warning line for them
    assert metrics.value("feed_order_updates_dropped_total", reason=DROP_QUEUE_FULL) == 7
    drops = [r for r in caplog.records if r.getMessage() == "order updates dropped"]
    assert len(drops) == 1
    assert f.pending == 3
    # And once SQS is back, the three kept are delivered
    sqs.down = False
    await wait_until_async(lambda: len(sqs.delivered), lambda n: n == 3, what="3 delivered")
    assert await stop(f) is True


async def test_duplicates_from_the_accounts_other_connections_are_counted_not_sent() -> None:
    sqs = ScriptedSqs()
    f, metrics, supervisor = forwarder(sqs)
    f.start(supervisor)
    for _ in range(3):
        f.submit("acct", order(1, "COMPLETE"))
    assert await stop(f) is True
    assert sqs.delivered == [key(1, "COMPLETE")]
    assert metrics.total("feed_order_updates_duplicates_total") == 2
    assert metrics.total("feed_order_updates_dropped_total") == 0


async def test_an_entry_refused_for_good_is_dropped_and_counted() -> None:
    class Refusing(ScriptedSqs):
        async def send(self, entries: Sequence[BatchEntry]) -> dict[str, EntryFailure]:
            self.calls.append([e.entry_id for e in entries])
            return {entries[0].entry_id: INVALID}

    sqs = Refusing()
    f, metrics, supervisor = forwarder(sqs)
    f.start(supervisor)
    f.submit("acct", order(1))
    assert await stop(f) is True  # given up is not left over
    assert metrics.value("feed_order_updates_dropped_total", reason="refused") == 1
    assert len(sqs.calls) == 1


async def test_the_stop_flushes_what_is_queued() -> None:
    # Given messages queued behind an unanswered call
    sqs = ScriptedSqs()
    sqs.gate = asyncio.Event()
    f, metrics, supervisor = forwarder(sqs)
    f.start(supervisor)
    for n in range(15):
        f.submit("acct", order(n))
    await wait_until_async(lambda: len(sqs.calls), lambda n: n == 1, what="a call in flight")
    # When the stop comes and SQS answers
    closing = asyncio.ensure_future(stop(f))
    sqs.gate.set()
    # Then every message is delivered before close returns, and it says so
    assert await closing is True
    assert len(sqs.delivered) == 15
    # And a message arriving after the stop is counted as dropped
    f.submit("acct", order(99))
    assert metrics.value("feed_order_updates_dropped_total", reason="stopped") == 1


async def test_the_stop_ends_within_its_budget_and_counts_what_is_left() -> None:
    # Given SQS down
    sqs = ScriptedSqs()
    sqs.down = True
    f, metrics, supervisor = forwarder(sqs)
    f.start(supervisor)
    for n in range(4):
        f.submit("acct", order(n))
    await wait_until_async(lambda: len(sqs.calls), lambda n: n >= 2, what="retries")
    # When stopped with a short budget
    loop = asyncio.get_running_loop()
    started = loop.time()
    delivered = await f.close(started + 0.1, started + 0.3)
    # Then it returns in time, saying not everything went, and counts the four as dropped
    assert delivered is False
    assert loop.time() - started < 2.0
    assert metrics.value("feed_order_updates_dropped_total", reason="stopped") == 4


async def test_a_call_hung_past_the_budget_is_abandoned_at_the_final_moment() -> None:
    sqs = ScriptedSqs()
    sqs.gate = asyncio.Event()  # never answered
    f, metrics, supervisor = forwarder(sqs)
    f.start(supervisor)
    f.submit("acct", order(1))
    await wait_until_async(lambda: len(sqs.calls), lambda n: n == 1, what="a call in flight")
    loop = asyncio.get_running_loop()
    assert await f.close(loop.time(), loop.time() + 0.2) is False
    assert metrics.value("feed_order_updates_dropped_total", reason="stopped") == 1


async def test_a_sending_loop_that_dies_is_restarted_and_resends_its_call() -> None:
    # Given a sender with a bug that raises something unexpected once
    sqs = ScriptedSqs()
    sqs.script = [RuntimeError("bug")]
    f, metrics, supervisor = forwarder(sqs)
    f.start(supervisor)
    f.submit("acct", order(1))
    # Then the supervisor counts and restarts it, and the message is delivered once
    await wait_until_async(lambda: sqs.delivered, what="the message delivered")
    assert sqs.delivered == [key(1)]
    assert metrics.value("feed_task_failures_total", task="order-updates") == 1
    assert await stop(f) is True


# -- the SQS adapter (a stand-in client: no sockets) ---------------------------------------


class StubClient:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    def send_message_batch(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


ENTRIES = [BatchEntry("0", '{"a":1}', {"kite_update_key": "k0"}), BatchEntry("1", '{"a":2}')]


def client_error(code: str, status: int, kind: str = "Sender") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "", "Type": kind},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendMessageBatch",
    )


async def test_the_adapter_sends_entries_with_string_attributes_and_maps_failures() -> None:
    stub = StubClient(
        {
            "Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": ""}],
            "Failed": [{"Id": "1", "Code": "InternalError", "SenderFault": False}],
        }
    )
    sender = SqsBatchSender("https://sqs.example/1/q", lambda: stub)
    failed = await sender.send(ENTRIES)
    assert failed == {"1": EntryFailure("InternalError", False)}
    (request,) = stub.requests
    assert request["QueueUrl"] == "https://sqs.example/1/q"
    assert request["Entries"][0] == {
        "Id": "0",
        "MessageBody": '{"a":1}',
        "MessageAttributes": {"kite_update_key": {"DataType": "String", "StringValue": "k0"}},
    }


async def test_the_adapter_retries_an_entry_sqs_did_not_answer_for() -> None:
    stub = StubClient({"Successful": [{"Id": "0"}], "Failed": []})
    failed = await SqsBatchSender("q", lambda: stub).send(ENTRIES)
    assert failed == {"1": EntryFailure("NoAnswer", False)}


@pytest.mark.parametrize(
    ("raised", "error", "code", "sender_fault"),
    [
        (client_error("AccessDenied", 403), SqsRefusedError, "AccessDenied", True),
        (client_error("RequestThrottled", 400, "Receiver"), SqsRefusedError, "RequestThrottled",
         False),
        (client_error("InternalError", 500, "Receiver"), SqsAmbiguousError, "InternalError", False),
        (EndpointConnectionError(endpoint_url="https://sqs.example"), SqsUnavailableError,
         "EndpointConnectionError", False),
        (ReadTimeoutError(endpoint_url="https://sqs.example"), SqsAmbiguousError,
         "ReadTimeoutError", False),
    ],
)  # fmt: skip
async def test_the_adapter_types_every_failed_call(
    raised: Exception, error: type[Exception], code: str, sender_fault: bool
) -> None:
    sender = SqsBatchSender("q", lambda: StubClient(raised))
    with pytest.raises(error) as caught:
        await sender.send(ENTRIES)
    assert isinstance(caught.value, SqsRefusedError | SqsAmbiguousError | SqsUnavailableError)
    assert (caught.value.code, caught.value.sender_fault) == (code, sender_fault)


async def test_the_adapter_builds_its_client_once() -> None:
    built = []

    def make() -> StubClient:
        built.append(1)
        return StubClient({"Successful": [{"Id": "0"}, {"Id": "1"}]})

    sender = SqsBatchSender("q", make)
    for _ in range(3):
        assert await sender.send(ENTRIES) == {}
    assert built == [1]
