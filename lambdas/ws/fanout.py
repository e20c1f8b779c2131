"""Fan-out: one stream batch of ticks (or Greeks) to every client subscribed, one post each.

Flow of one batch
-----------------
1. **Decode.** Every Kinesis record is de-aggregated; each user record must
   be a JSON object of the channel's schema (``tick/1`` or ``greeks/1``) with
   an integer ``instrument_token``. The latest record of each instrument
   wins (stream order; an instrument always lives on one shard, since the
   partition key is its underlying). A record that cannot be read is counted
   as poison and skipped, never retried: the persist and Greeks mappings own
   the stream's dead letters, and retrying a live batch would post old
   prices again.
2. **Look up** the subscribers of every instrument in the batch, in bulk
   (:meth:`lambdas.ws.state.SubscriberIndex.lookup`).
3. **Post** each connection one message carrying the latest record of each
   of its instruments (split only past API Gateway's 128 KB message limit),
   on a pool of threads. A post that is throttled or fails is retried a few
   times; what still cannot be delivered is *carried*: kept by the execution
   environment and merged into that connection's next message, newer
   records replacing older ones (conflation), so a client that falls behind
   gets the latest values, never a backlog. Carried records are re-checked
   against the subscriptions before they are sent.
4. **Gone** (410): the connection is removed with everything it subscribed,
   on the first 410 (:func:`lambdas.ws.logic.remove_connection`).

The raw record bytes go into the messages unchanged: nothing is re-encoded.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from lambdas.common.kinesis_batch import PoisonRecordError, consume_kinesis_record
from lambdas.ws.dal.management import PostOutcome
from lambdas.ws.protocol import MAX_MESSAGE_BYTES, Channel, data_message_chunks
from ticker_adapters.retry import full_jitter
from ticker_core.records import GREEKS_SCHEMA, TICK_SCHEMA, KinesisUserRecord

SCHEMAS = {Channel.TICKS: TICK_SCHEMA, Channel.GREEKS: GREEKS_SCHEMA}
RETRIED = frozenset({PostOutcome.THROTTLED, PostOutcome.FAILED})


class Poster(Protocol):
    """Posts one message to one connection (the management API, or a fake)."""

    def post(self, connection_id: str, data: bytes) -> PostOutcome:
        """Send ``data``; the outcome, never an exception."""
        ...


class SubscriberLookup(Protocol):
    """Connection ids by instrument (the subscriber index)."""

    def lookup(self, tokens: Collection[int], channel: Channel) -> dict[int, frozenset[str]]:
        """The subscribers of each token on ``channel``."""
        ...


RemoveConnection = Callable[[str, Collection[int]], Any]
"""Forget a gone connection; the second argument: instruments it was found subscribed to."""


def retry_post(outcome: PostOutcome, attempt: int, attempts: int) -> bool:
    """Whether to post again after ``outcome`` on attempt ``attempt`` (1-based) of ``attempts``."""
    return outcome in RETRIED and attempt < attempts


def _default_delays() -> Iterator[float]:
    return full_jitter(0.02, 0.2)


@dataclass
class FanoutOutcome:
    """What one batch did (the handler turns it into metrics)."""

    records: int = 0
    instruments: int = 0
    poison: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    messages: int = 0
    message_bytes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """Final post outcomes by kind (a retried post counts once)."""
    retries: int = 0
    gone: list[str] = field(default_factory=list)
    remove_failures: int = 0
    carried_connections: int = 0
    carried_records: int = 0
    carry_dropped: int = 0
    lookup_ms: float = 0.0
    post_ms: float = 0.0


@dataclass
class _Delivery:
    connection_id: str
    messages: int = 0
    sent_bytes: int = 0
    retries: int = 0
    outcome: PostOutcome = PostOutcome.DELIVERED
    undelivered: dict[int, bytes] = field(default_factory=dict)


def latest_records(
    event: Mapping[str, Any], channel: Channel, poison: Counter[str]
) -> tuple[dict[int, bytes], int]:
    """The latest record bytes of each instrument in the batch, and how many records were read."""
    schema = SCHEMAS[channel]
    latest: dict[int, bytes] = {}
    count = 0

    def consume(user: KinesisUserRecord) -> None:
        nonlocal count
        try:
            record = orjson.loads(user.data)
        except orjson.JSONDecodeError as exc:
            raise PoisonRecordError("bad_json", "not JSON") from exc
        if not isinstance(record, dict) or record.get("schema") != schema:
            raise PoisonRecordError("wrong_schema", f"not a {schema} record")
        token = record.get("instrument_token")
        if isinstance(token, bool) or not isinstance(token, int):
            raise PoisonRecordError("bad_field", "instrument_token must be an integer")
        latest.pop(token, None)  # re-inserted last: the message lists instruments by recency
        latest[token] = user.data
        count += 1

    for raw in event.get("Records", []):
        # A poison record is counted in ``poison``; the good ones around it were consumed.
        with contextlib.suppress(PoisonRecordError):
            consume_kinesis_record(raw, consume, poison)
    return latest, count


class Fanout:
    """One channel's fan-out; keeps undelivered records between batches (see the module)."""

    def __init__(
        self,
        channel: Channel,
        subscribers: SubscriberLookup,
        poster: Poster,
        remove_connection: RemoveConnection,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        workers: int = 32,
        post_attempts: int = 3,
        max_carried_records: int = 50_000,
        retry: Callable[[PostOutcome, int, int], bool] = retry_post,
        delays: Callable[[], Iterator[float]] = _default_delays,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.channel = channel
        self._subscribers = subscribers
        self._poster = poster
        self._remove = remove_connection
        self._max_bytes = max_message_bytes
        self._workers = workers
        self._attempts = post_attempts
        self._max_carried = max_carried_records
        self._retry = retry
        self._delays = delays
        self._sleep = sleep
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._carried: dict[str, dict[int, bytes]] = {}

    @property
    def carried(self) -> Mapping[str, Mapping[int, bytes]]:
        """Records waiting for their connection's next message."""
        return self._carried

    def run(self, event: Mapping[str, Any]) -> FanoutOutcome:
        """Fan one batch out; returns what happened."""
        outcome = FanoutOutcome()
        latest, outcome.records = latest_records(event, self.channel, outcome.poison)
        outcome.instruments = len(latest)
        carried, self._carried = self._carried, {}
        tokens = set(latest).union(*(records.keys() for records in carried.values()))
        if not tokens:
            return outcome
        started = self._clock()
        subscribers = self._subscribers.lookup(tokens, self.channel)
        outcome.lookup_ms = (self._clock() - started) * 1000
        messages = self._per_connection(latest, carried, subscribers)
        outcome.connections = len(messages)
        started = self._clock()
        deliveries = self._post_all(messages)
        outcome.post_ms = (self._clock() - started) * 1000
        for delivery in deliveries:
            outcome.messages += delivery.messages
            outcome.message_bytes += delivery.sent_bytes
            outcome.retries += delivery.retries
            outcome.outcomes[delivery.outcome] += 1
            if delivery.outcome is PostOutcome.GONE:
                outcome.gone.append(delivery.connection_id)
            elif delivery.undelivered:
                self._carry(delivery.connection_id, delivery.undelivered, outcome)
        for connection_id in outcome.gone:
            try:
                self._remove(connection_id, messages[connection_id].keys())
            except Exception:  # the next 410 for it tries again; the batch is not retried
                outcome.remove_failures += 1
        outcome.carried_connections = len(self._carried)
        outcome.carried_records = sum(len(r) for r in self._carried.values())
        return outcome

    def _per_connection(
        self,
        latest: Mapping[int, bytes],
        carried: Mapping[str, Mapping[int, bytes]],
        subscribers: Mapping[int, frozenset[str]],
    ) -> dict[str, dict[int, bytes]]:
        """Each connection's records: carried ones still subscribed, then this batch's."""
        out: dict[str, dict[int, bytes]] = {}
        for connection_id, records in carried.items():
            for token, record in records.items():
                if connection_id in subscribers.get(token, ()):
                    out.setdefault(connection_id, {})[token] = record
        for token, record in latest.items():
            for connection_id in subscribers.get(token, ()):
                mine = out.setdefault(connection_id, {})
                mine.pop(token, None)
                mine[token] = record
        return out

    def _post_all(self, messages: Mapping[str, dict[int, bytes]]) -> list[_Delivery]:
        # Clients on the same instruments get the same records: build their messages once.
        built: dict[tuple[tuple[int, int], ...], list[tuple[list[int], bytes]]] = {}
        work = []
        for connection_id, records in messages.items():
            key = tuple((token, id(record)) for token, record in records.items())
            chunks = built.get(key)
            if chunks is None:
                chunks = built[key] = list(
                    data_message_chunks(self.channel, records.items(), self._max_bytes)
                )
            work.append((connection_id, records, chunks))
        if len(work) <= 1 or self._workers <= 1:
            return [self._deliver(*item) for item in work]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="fanout")
        return list(self._pool.map(lambda item: self._deliver(*item), work))

    def _deliver(
        self,
        connection_id: str,
        records: dict[int, bytes],
        chunks: list[tuple[list[int], bytes]],
    ) -> _Delivery:
        """Post one connection's messages; what could not be delivered stays in ``undelivered``."""
        delivery = _Delivery(connection_id)
        for index, (_, message) in enumerate(chunks):
            delays = self._delays()
            attempt = 1
            while True:
                result = self._poster.post(connection_id, message)
                if result is PostOutcome.DELIVERED or not self._retry(
                    result, attempt, self._attempts
                ):
                    break
                delivery.retries += 1
                attempt += 1
                self._sleep(next(delays))
            if result is PostOutcome.DELIVERED:
                delivery.messages += 1
                delivery.sent_bytes += len(message)
                continue
            delivery.outcome = result
            if result is PostOutcome.GONE:
                break
            if result in RETRIED:  # this and the later messages wait for the next batch
                for later, _ in chunks[index:]:
                    delivery.undelivered.update((t, records[t]) for t in later)
                break
            # refused for good (too large, forbidden): dropped, counted; the rest still go
        return delivery

    def _carry(self, connection_id: str, records: dict[int, bytes], outcome: FanoutOutcome) -> None:
        held = sum(len(r) for r in self._carried.values())
        if held + len(records) > self._max_carried:
            outcome.carry_dropped += len(records)
            return
        self._carried[connection_id] = records
