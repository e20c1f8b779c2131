"""The fan-out over in-memory subscribers and a scripted management API."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas.ws.dal.management import PostOutcome
from lambdas.ws.fanout import Fanout, latest_records, retry_post
from lambdas.ws.protocol import ALL_CHANNELS, Channel
from testkit.factories import kinesis_event, tick_record
from tests.unit.lambdas.ws.fakes import FakeIndex, FakePoster

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def ticks(prices: dict[int, list[float]]) -> list[bytes]:
    """Tick records: for each token, one per price, interleaved in stream order."""
    out = []
    for step in range(max(len(p) for p in prices.values())):
        for token, series in prices.items():
            if step < len(series):
                ts = T0 + timedelta(seconds=step)
                out.append(json.dumps(tick_record(token, series[step], ts)).encode())
    return out


def event(records: list[bytes], per_aggregate: int = 7) -> dict[str, Any]:
    chunks = [
        ("NIFTY", records[i : i + per_aggregate]) for i in range(0, len(records), per_aggregate)
    ]
    return kinesis_event(chunks)


def received(poster: FakePoster, connection_id: str) -> list[list[dict[str, Any]]]:
    """The data of each message one connection received, in order."""
    out = []
    for target, data in poster.posts:
        if target == connection_id:
            message = json.loads(data)
            assert message["type"] == "ticks"
            out.append(message["data"])
    return out


def prices(message: list[dict[str, Any]]) -> dict[int, float]:
    return {r["instrument_token"]: r["last_price"] for r in message}


class Removals:
    def __init__(self) -> None:
        self.calls: list[tuple[str, set[int]]] = []

    def __call__(self, connection_id: str, seen: Collection[int]) -> None:
        self.calls.append((connection_id, set(seen)))


def fanout(
    index: FakeIndex, poster: FakePoster, removals: Removals | None = None, **options: Any
) -> Fanout:
    return Fanout(
        Channel.TICKS,
        index,
        poster,
        removals or Removals(),
        workers=1,
        delays=lambda: iter(lambda: 0.0, None),
        sleep=lambda _: None,
        **options,
    )


def subscribe(index: FakeIndex, connection_id: str, tokens: list[int]) -> None:
    index.join(connection_id, dict.fromkeys(tokens, ALL_CHANNELS), budget=10_000)


def test_each_client_gets_one_message_per_batch_with_the_latest_of_its_instruments() -> None:
    # Given two clients on overlapping instruments and a batch where each instrument ticks thrice
    index, poster = FakeIndex(), FakePoster()
    subscribe(index, "a", [1, 2])
    subscribe(index, "b", [2, 3])
    batch = event(ticks({1: [10, 11, 12], 2: [20, 21, 22], 3: [30, 31, 32], 4: [40]}))
    # When the batch is fanned out
    outcome = fanout(index, poster).run(batch)
    # Then each client got one message, holding only its instruments' latest prices
    assert [prices(m) for m in received(poster, "a")] == [{1: 12, 2: 22}]
    assert [prices(m) for m in received(poster, "b")] == [{2: 22, 3: 32}]
    assert (outcome.records, outcome.instruments, outcome.connections) == (10, 4, 2)
    assert outcome.messages == 2
    assert outcome.outcomes[PostOutcome.DELIVERED] == 2


def test_records_go_out_byte_for_byte() -> None:
    index, poster = FakeIndex(), FakePoster()
    subscribe(index, "a", [1])
    records = ticks({1: [10.0]})
    fanout(index, poster).run(event(records))
    assert poster.posts[0][1] == b'{"type":"ticks","data":[' + records[0] + b"]}"


def test_nobody_subscribed_posts_nothing() -> None:
    index, poster = FakeIndex(), FakePoster()
    outcome = fanout(index, poster).run(event(ticks({1: [10, 11]})))
    assert poster.posts == []
    assert outcome.connections == 0


def test_a_message_past_the_limit_is_split_and_nothing_is_lost() -> None:
    index, poster = FakeIndex(), FakePoster()
    tokens = list(range(1, 41))
    subscribe(index, "a", tokens)
    fanout(index, poster, max_message_bytes=8 * 1024).run(
        event(ticks({t: [float(t)] for t in tokens}))
    )
    messages = received(poster, "a")
    assert len(messages) > 1
    assert all(len(data) <= 8 * 1024 for _, data in poster.posts)
    assert sorted(t for m in messages for t in prices(m)) == tokens


def test_a_gone_connection_is_removed_on_the_first_410() -> None:
    index, poster, removals = FakeIndex(), FakePoster(gone={"a"}), Removals()
    subscribe(index, "a", [1, 2])
    subscribe(index, "b", [2])
    outcome = fanout(index, poster, removals).run(event(ticks({1: [10], 2: [20]})))
    # Then it was posted to once, removed with the instruments it was found on, and b served
    assert outcome.gone == ["a"]
    assert outcome.outcomes[PostOutcome.GONE] == 1
    assert removals.calls == [("a", {1, 2})]
    assert [prices(m) for m in received(poster, "b")] == [{2: 20}]


def test_a_throttled_client_gets_the_latest_values_next_batch_not_a_backlog() -> None:
    index, poster = FakeIndex(), FakePoster()
    subscribe(index, "slow", [1, 2, 3])
    subscribe(index, "fast", [1, 2, 3])
    # Given the slow client's posts throttled for two batches (three attempts each)
    poster.script["slow"] = [PostOutcome.THROTTLED] * 6
    fan = fanout(index, poster, post_attempts=3)
    first = fan.run(event(ticks({1: [10], 2: [20], 3: [30]})))
    second = fan.run(event(ticks({1: [11], 2: [21]})))
    assert first.outcomes[PostOutcome.THROTTLED] == 1
    assert first.retries == 2
    assert dict(fan.carried["slow"]).keys() == {1, 2, 3}
    assert second.carried_records == 3
    # When it can take messages again
    fan.run(event(ticks({1: [12]})))
    # Then it receives one message: the latest of each of its instruments, older ones conflated
    assert [prices(m) for m in received(poster, "slow")] == [{1: 12, 2: 21, 3: 30}]
    assert len(received(poster, "fast")) == 3
    assert fan.carried == {}


def test_carried_records_are_dropped_for_instruments_no_longer_subscribed() -> None:
    index, poster = FakeIndex(), FakePoster()
    subscribe(index, "a", [1, 2])
    poster.script["a"] = [PostOutcome.FAILED]
    fan = fanout(index, poster, post_attempts=1)
    fan.run(event(ticks({1: [10], 2: [20]})))
    # When the client unsubscribes from 2 before the next batch
    index.leave("a", {2: ALL_CHANNELS})
    fan.run(event(ticks({1: [11]})))
    assert [prices(m) for m in received(poster, "a")] == [{1: 11}]


def test_carried_records_are_bounded() -> None:
    index, poster = FakeIndex(), FakePoster()
    subscribe(index, "a", [1, 2, 3])
    subscribe(index, "b", [4, 5])
    poster.script = {"a": [PostOutcome.THROTTLED], "b": [PostOutcome.THROTTLED]}
    outcome = fanout(index, poster, post_attempts=1, max_carried_records=4).run(
        event(ticks({t: [float(t)] for t in range(1, 6)}))
    )
    assert outcome.carried_records <= 4
    assert outcome.carry_dropped + outcome.carried_records == 5


def test_poison_records_are_counted_and_skipped() -> None:
    index, poster = FakeIndex(), FakePoster()
    subscribe(index, "a", [1])
    greeks_record = json.dumps({"schema": "greeks/1", "instrument_token": 1}).encode()
    records = [
        b"not json",
        greeks_record,
        json.dumps({"schema": "tick/1", "instrument_token": "1"}).encode(),
        *ticks({1: [10]}),
    ]
    outcome = fanout(index, poster).run(event(records, per_aggregate=1))
    assert dict(outcome.poison) == {"bad_json": 1, "wrong_schema": 1, "bad_field": 1}
    assert [prices(m) for m in received(poster, "a")] == [{1: 10}]


def test_a_corrupt_aggregate_is_poison_and_the_rest_is_read() -> None:
    batch = event(ticks({1: [10], 2: [20]}), per_aggregate=1)
    batch["Records"][0]["kinesis"]["data"] = "!!!"
    poison: Counter[str] = Counter()
    latest, count = latest_records(batch, Channel.TICKS, poison)
    assert (list(latest), count, dict(poison)) == ([2], 1, {"corrupt_record": 1})


@pytest.mark.parametrize(
    ("outcome", "attempt", "expected"),
    [
        (PostOutcome.THROTTLED, 1, True),
        (PostOutcome.FAILED, 2, True),
        (PostOutcome.FAILED, 3, False),
        (PostOutcome.GONE, 1, False),
        (PostOutcome.TOO_LARGE, 1, False),
        (PostOutcome.FORBIDDEN, 1, False),
    ],
)
def test_what_is_retried(outcome: PostOutcome, attempt: int, expected: bool) -> None:
    assert retry_post(outcome, attempt, 3) is expected


def test_posts_run_concurrently_and_all_arrive() -> None:
    index, poster = FakeIndex(), FakePoster()
    for c in range(50):
        subscribe(index, f"c{c}", [1, 2])
    fan = Fanout(Channel.TICKS, index, poster, Removals(), workers=8)
    outcome = fan.run(event(ticks({1: [10], 2: [20]})))
    assert outcome.messages == 50
    assert sorted(c for c, _ in poster.posts) == sorted(f"c{c}" for c in range(50))
