"""The greeks function's pure logic: join, forwards, time to expiry, bad inputs, rows, poison."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from lambdas.greeks.logic import (
    ForwardMemory,
    GreeksOutcome,
    GreeksSettingsView,
    RegistryIndex,
    RegistryIndexCache,
    TickColumns,
    compute_greeks,
    greeks_event,
    greeks_rows,
)
from testkit.factories import chain, index_instrument, kinesis_event, tick_bytes, user_record
from tests import strategies
from ticker_adapters.instrument_snapshots import InstrumentSnapshot, SnapshotPointer
from ticker_core.calendar import SECONDS_PER_YEAR, expiry_instant, year_fraction
from ticker_core.instruments import DumpSummary, Instrument, InstrumentRegistry
from ticker_core.options import black76_price
from ticker_core.records import (
    KinesisUserRecord,
    PutRecordsBatch,
    RecordError,
    deaggregate,
    decode_greeks,
    encode_greeks,
)

RATE = 0.065
EXPIRY = date(2026, 12, 29)
NOW = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)  # 10:00 IST
NIFTY_STRIKES = [23800.0, 23900.0, 24000.0, 24100.0, 24200.0]
BANK_STRIKES = [51800.0, 52000.0, 52200.0]
FIN_STRIKES = [23500.0]

NIFTY = chain("NIFTY", EXPIRY, NIFTY_STRIKES, first_exchange_token=5000, future=True)
BANK = chain("BANKNIFTY", EXPIRY, BANK_STRIKES, first_exchange_token=6000, future=False)
FIN = chain("FINNIFTY", EXPIRY, FIN_STRIKES, first_exchange_token=7000, future=False)
SPOT = index_instrument("NIFTY 50", 256)
UNIVERSE = [SPOT, *NIFTY, *BANK, *FIN]

SCHEMA = json.loads(resources.files("ticker_core.schemas").joinpath("greeks.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())


def pointer(sha: str = "a" * 64) -> SnapshotPointer:
    summary = DumpSummary(0, 0, 0, False, {}, {}, ())
    return SnapshotPointer(date(2026, 11, 27), sha, "instruments/x.csv.gz", NOW, summary)


class FixedSnapshots:
    """A snapshot source that always names the same snapshot (swappable in tests)."""

    def __init__(self, instruments: list[Instrument], sha: str = "a" * 64) -> None:
        self.snapshot = InstrumentSnapshot(pointer(sha), InstrumentRegistry(instruments), 0)
        self.calls = 0

    def current(self) -> InstrumentSnapshot:
        self.calls += 1
        return self.snapshot


def index_of(instruments: list[Instrument] = UNIVERSE) -> RegistryIndex:
    return RegistryIndex.build(InstrumentRegistry(instruments), "a" * 64)


def option(instruments: list[Instrument], strike: float, kind: str) -> Instrument:
    return next(i for i in instruments if i.strike == strike and i.instrument_type == kind)


def b76(forward: float, inst: Instrument, ts: datetime, sigma: float) -> float:
    assert inst.expiry is not None
    t = year_fraction(ts, inst.expiry)
    return float(black76_price(forward, inst.strike, t, RATE, sigma, inst.instrument_type == "CE"))


def user(data: bytes, sequence: str) -> KinesisUserRecord:
    return user_record(data, sequence)


class Ticks:
    """Builds a TickColumns in stream order with a running Kinesis identity."""

    def __init__(self) -> None:
        self.columns = TickColumns()
        self.seq = 0

    def add(self, inst: Instrument, price: float, ts: datetime = NOW, **kw: Any) -> Ticks:
        self.seq += 1
        self.columns.add(user(tick_bytes(inst.instrument_token, price, ts, **kw), str(self.seq)))
        return self


def rows_of(columns: TickColumns, memory: ForwardMemory | None = None) -> list[dict[str, Any]]:
    idx = index_of()
    memory = ForwardMemory(900) if memory is None else memory
    batch = compute_greeks(columns, idx, memory, rate=RATE)
    rows = list(greeks_rows(batch, columns, idx, rate=RATE, computed_at=NOW))
    for row in rows:  # every row the logic produces is a valid greeks/1 record
        record = json.loads(encode_greeks(row))
        errors = [e.message for e in VALIDATOR.iter_errors(record)]
        assert errors == [], errors
    return rows


# --------------------------------------------------------------------------- forwards


def test_the_listed_future_is_the_forward_as_of_each_option_tick() -> None:
    # Given a future ticking at 24100 then 24150, an option tick before, between and after
    fut = NIFTY[0]
    atm = option(NIFTY, 24000.0, "CE")
    ticks = (
        Ticks()
        .add(atm, 300.0)
        .add(fut, 24100.0)
        .add(atm, 301.0, NOW + timedelta(seconds=1))
        .add(fut, 24150.0, NOW + timedelta(seconds=2))
        .add(atm, 302.0, NOW + timedelta(seconds=3))
    )
    # When Greeks are computed
    rows = rows_of(ticks.columns)
    # Then each option uses the future's latest price at or before it (or the first after)
    assert [r["forward"] for r in rows] == [24100.0, 24100.0, 24150.0]
    assert {r["forward_source"] for r in rows} == {"future"}
    assert all(r["reason"] is None and r["iv"] > 0 for r in rows)


def test_parity_gives_the_forward_and_recovers_the_volatility_without_a_future() -> None:
    # Given BANKNIFTY options priced by Black-76 on a forward of 52075 at 18% vol, no future
    forward, sigma = 52075.0, 0.18
    ticks = Ticks()
    for inst in BANK:
        ticks.add(inst, b76(forward, inst, NOW, sigma), underlying="BANKNIFTY")
    # When Greeks are computed
    rows = rows_of(ticks.columns)
    # Then the forward comes from parity and the implied vols are the pricing vol
    assert {r["forward_source"] for r in rows} == {"parity"}
    assert rows[0]["forward"] == pytest.approx(forward, rel=1e-12)
    assert [r["iv"] for r in rows] == pytest.approx([sigma] * len(BANK), rel=1e-9)


def test_a_forward_is_carried_to_later_batches_until_it_is_too_old() -> None:
    # Given a batch with the NIFTY future, and a memory that keeps forwards for 60 s
    memory = ForwardMemory(max_age_s=60)
    rows_of(Ticks().add(NIFTY[0], 24120.0).columns, memory)
    atm = option(NIFTY, 24000.0, "PE")
    # When a later batch has only one NIFTY option (no future, no parity pair)
    later = rows_of(Ticks().add(atm, 200.0, NOW + timedelta(seconds=30)).columns, memory)
    # Then the forward is carried from the earlier batch
    assert (later[0]["forward"], later[0]["forward_source"]) == (24120.0, "carried")
    # When the next option tick comes after the forward has aged past the limit
    stale = rows_of(Ticks().add(atm, 200.0, NOW + timedelta(seconds=61)).columns, memory)
    # Then there is no forward, and the row says so with null numbers
    row = stale[0]
    assert (row["forward_source"], row["reason"]) == ("none", "no_forward")
    assert math.isnan(row["forward"])
    assert math.isnan(row["iv"])
    assert math.isnan(row["delta"])


def test_a_parity_forward_is_remembered_too_and_expired_groups_are_forgotten() -> None:
    memory = ForwardMemory(max_age_s=3600)
    ticks = Ticks()
    for inst in BANK:
        ticks.add(inst, b76(52000.0, inst, NOW, 0.2), underlying="BANKNIFTY")
    rows_of(ticks.columns, memory)
    assert memory.get(("BANKNIFTY", EXPIRY), NOW.timestamp()) == pytest.approx(52000.0)
    # When time passes the expiry instant, Then pruning drops the group
    memory.prune(expiry_instant(EXPIRY).timestamp() + 1)
    assert len(memory) == 0


def test_a_group_with_neither_future_parity_nor_memory_has_no_forward() -> None:
    after_expiry = datetime(2026, 12, 29, 10, 1, tzinfo=UTC)
    ticks = Ticks().add(FIN[0], 150.0, underlying="FINNIFTY")
    ticks.add(FIN[0], 150.0, after_expiry, underlying="FINNIFTY")
    rows = rows_of(ticks.columns)
    # an expired contract is reported as expired, not as lacking a forward
    assert [(r["forward_source"], r["reason"]) for r in rows] == [
        ("none", "no_forward"),
        ("none", "expired"),
    ]


def test_a_tick_without_any_timestamp_is_poison() -> None:
    record = json.loads(tick_bytes(1, 1.0, NOW, exchange_timestamp=False))
    record["received_at"] = None
    with pytest.raises(ValueError, match="received_at"):
        TickColumns().add(user(json.dumps(record).encode(), "1"))


# --------------------------------------------------------------------------- join, time, inputs


def test_only_option_ticks_become_rows_and_unknown_tokens_are_counted() -> None:
    # Given a batch of an index tick, a future tick, an option tick and an unlisted token
    ticks = Ticks().add(SPOT, 24010.0).add(NIFTY[0], 24100.0).add(NIFTY[3], 250.0)
    ticks.columns.add(user(tick_bytes(999_999_999, 10.0, NOW), "9"))
    # When Greeks are computed
    batch = compute_greeks(ticks.columns, index_of(), ForwardMemory(900), rate=RATE)
    # Then only the option is a row, and the unlisted token is counted
    assert batch.tick_pos.tolist() == [2]
    assert (batch.ticks, batch.unknown) == (4, 1)


def test_time_to_expiry_is_calendar_seconds_to_1530_ist_over_a_365_day_year() -> None:
    # Given an option tick with an exchange timestamp, and one with only received_at
    inst = option(NIFTY, 24000.0, "CE")
    ticks = Ticks().add(NIFTY[0], 24100.0).add(inst, 300.0)
    ticks.add(inst, 300.0, NOW + timedelta(hours=1), exchange_timestamp=False)
    rows = rows_of(ticks.columns)
    # Then T is (15:30 IST on expiry - tick time) / (365 x 86400)
    expiry = datetime(2026, 12, 29, 10, 0, tzinfo=UTC)  # 15:30 IST
    assert rows[0]["t_years"] == (expiry - NOW).total_seconds() / SECONDS_PER_YEAR
    # And received_at (3 ms after the nominal time in the factory) stands in for the exchange's
    received = NOW + timedelta(hours=1, milliseconds=3)
    assert rows[1]["t_years"] == pytest.approx((expiry - received).total_seconds() / 31_536_000)
    assert rows[1]["exchange_timestamp"] is None
    # And each row is "as of" its tick's own instant, which a recomputation repeats exactly
    assert (rows[0]["as_of"], rows[1]["as_of"]) == (NOW, received)


@pytest.mark.parametrize(
    ("price", "when", "reason"),
    [
        (0.0, NOW, "non_positive_price"),
        (-5.0, NOW, "non_positive_price"),
        (50.0, NOW, "below_intrinsic"),  # a 23800 call with the forward at 24100 is worth >= 300
        (24100.0, NOW, "above_upper_bound"),
        (300.0, datetime(2026, 12, 29, 11, 0, tzinfo=UTC), "expired"),
    ],
)
def test_bad_inputs_give_rows_with_null_numbers_and_a_reason(
    price: float, when: datetime, reason: str
) -> None:
    inst = option(NIFTY, 23800.0, "CE")
    rows = rows_of(Ticks().add(NIFTY[0], 24100.0, when).add(inst, price, when).columns)
    assert rows[0]["reason"] == reason
    assert math.isnan(rows[0]["iv"])
    assert math.isnan(rows[0]["gamma"])
    record = json.loads(encode_greeks(rows[0]))
    assert record["iv"] is None
    assert record["raw"]["vega"] is None
    assert record["reason"] == reason


def test_rows_carry_the_contract_the_tick_and_its_kinesis_identity() -> None:
    inst = option(NIFTY, 24100.0, "PE")
    ticks = Ticks().add(NIFTY[0], 24100.0).add(inst, 280.0)
    row = rows_of(ticks.columns)[0]
    assert row["instrument_token"] == inst.instrument_token
    assert (row["tradingsymbol"], row["underlying"]) == (inst.tradingsymbol, "NIFTY")
    assert (row["expiry"], row["strike"], row["option_type"]) == (EXPIRY, 24100.0, "PE")
    assert (row["price"], row["rate"], row["computed_at"]) == (280.0, RATE, NOW)
    assert row["source"] == {"shard_id": "shardId-000000000000", "sequence_number": "2",
                             "sub_sequence_number": 0}  # fmt: skip
    assert row["exchange_timestamp"] == NOW
    # And the Greeks are those of Black-76 at the implied vol: a put's delta is in (-1, 0)
    assert -1 < row["delta"] < 0
    assert row["gamma"] > 0
    assert row["vega"] > 0
    assert row["theta"] < 0


def test_the_registry_index_is_rebuilt_only_when_the_snapshot_changes() -> None:
    source = FixedSnapshots(UNIVERSE)
    cache = RegistryIndexCache(source)
    first = cache.current()
    assert cache.current() is first
    assert cache.builds == 1
    source.snapshot = FixedSnapshots(NIFTY, sha="b" * 64).snapshot
    second = cache.current()
    assert second is not first
    assert cache.builds == 2
    assert second.sha256 == "b" * 64
    assert second.positions(np.array([SPOT.instrument_token])).tolist() == [-1]


def test_an_empty_registry_knows_no_token() -> None:
    empty = RegistryIndex.build(InstrumentRegistry([]), "c" * 64)
    assert empty.positions(np.array([1, 2])).tolist() == [-1, -1]


# --------------------------------------------------------------------------- the event


class RecordingPublisher:
    def __init__(self) -> None:
        self.batches: list[PutRecordsBatch] = []

    def publish(self, batches: list[PutRecordsBatch]) -> None:
        self.batches.extend(batches)

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for batch in self.batches:
            for entry in batch.records:
                for user in deaggregate(entry.data, entry.partition_key):
                    out.append((user.partition_key, decode_greeks(user.data)))
        return out


def chain_event(poison: bytes | None = None, corrupt: bool = False) -> dict[str, Any]:
    nifty = [tick_bytes(NIFTY[0].instrument_token, 24100.0, NOW)]
    nifty += [tick_bytes(i.instrument_token, b76(24100.0, i, NOW, 0.13), NOW) for i in NIFTY[1:]]
    bank = [
        tick_bytes(i.instrument_token, b76(52000.0, i, NOW, 0.15), NOW, underlying="BANKNIFTY")
        for i in BANK
    ]
    if poison is not None:
        bank.insert(1, poison)
    event = kinesis_event([("NIFTY", nifty), ("BANKNIFTY", bank), ("NIFTY", nifty[:1])])
    if corrupt:
        event["Records"][2]["kinesis"]["data"] = "84mawgAAAA=="  # magic + garbage
    return event


def run(
    event: dict[str, Any], publisher: RecordingPublisher, memory: ForwardMemory | None = None
) -> GreeksOutcome:
    return greeks_event(
        event,
        instruments=RegistryIndexCache(FixedSnapshots(UNIVERSE)),
        memory=ForwardMemory(900) if memory is None else memory,
        publisher=publisher,
        settings=GreeksSettingsView(rate=RATE),
        computed_at=NOW,
    )


def test_an_event_becomes_aggregated_records_keyed_by_underlying() -> None:
    publisher = RecordingPublisher()
    outcome = run(chain_event(), publisher)
    records = publisher.records()
    assert outcome.response == {"batchItemFailures": []}
    assert (outcome.ticks, outcome.rows) == (len(NIFTY) + len(BANK) + 1, 16)
    assert outcome.forward_sources == {"future": 10, "parity": 6}
    assert len(records) == 16
    assert outcome.kinesis_records == 2
    assert all(key == record["underlying"] for key, record in records)
    assert [r["iv"] for _, r in records] == pytest.approx([0.13] * 10 + [0.15] * 6, rel=1e-9)


def test_poison_records_are_reported_and_the_rest_still_computed() -> None:
    # Given an undecodable tick inside the BANKNIFTY aggregate and a corrupt third record
    publisher = RecordingPublisher()
    event = chain_event(poison=b'{"schema": "tick/1", "mode": "ltp"}', corrupt=True)
    outcome = run(event, publisher)
    # Then both Kinesis records are reported by sequence number
    failed = [f["itemIdentifier"] for f in outcome.response["batchItemFailures"]]
    sequences = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert failed == sequences[1:]
    assert outcome.poison == {"bad_field": 1, "corrupt_record": 1}  # the poison lacks fields
    # And the good ticks, including the poison's siblings, still give rows
    assert outcome.rows == 16


def test_a_tick_with_a_mistyped_field_is_poison() -> None:
    ticks = TickColumns()
    bad = json.loads(tick_bytes(1, 1.0, NOW))
    for field, value in (("last_price", "12.5"), ("instrument_token", 1.5), ("mode", ["ltp"])):
        with pytest.raises(RecordError) as caught:
            ticks.add(user(json.dumps({**bad, field: value}).encode(), "1"))
        assert caught.value.reason == "bad_field"
    assert len(ticks) == 0


ONE_BAD_TICK = {
    # a token beyond 64 bits' half: numpy's int64 column overflowed, failing the batch
    "token_beyond_int64": ({"instrument_token": 2**63}, "out_of_range"),
    "token_beyond_32_bits": ({"instrument_token": 2**32}, "out_of_range"),
    # wrong JSON types where a name is expected: TypeError (unhashable) escaped
    "mode_a_list": ({"mode": ["full"]}, "bad_field"),
    "underlying_an_object": ({"underlying": {"NIFTY": 1}}, "bad_field"),
    # instants no clock can hold in UTC: OverflowError escaped the row encoding
    "year_9999_west": ({"exchange_timestamp": "9999-12-31T23:59:59-05:00"}, "out_of_range"),
    "year_1_east": ({"received_at": "0001-01-01T00:00:00+05:00"}, "out_of_range"),
    "price_a_string": ({"last_price": "245.5"}, "bad_field"),
}


@pytest.mark.parametrize("case", sorted(ONE_BAD_TICK))
def test_one_bad_tick_costs_only_itself(case: str) -> None:
    # Given the chain's batch with one bad option tick among the BANKNIFTY ones
    change, reason = ONE_BAD_TICK[case]
    record = json.loads(tick_bytes(BANK[0].instrument_token, 700.0, NOW, underlying="BANKNIFTY"))
    publisher = RecordingPublisher()
    # When the function processes it
    outcome = run(chain_event(poison=json.dumps({**record, **change}).encode()), publisher)
    # Then the bad tick is counted by its reason and its Kinesis record reported
    assert outcome.poison == {reason: 1}
    assert len(outcome.response["batchItemFailures"]) == 1
    # And every good tick, its aggregate siblings included, still gave its row
    assert outcome.rows == 16
    assert len(publisher.records()) == 16


def test_a_replayed_event_gives_rows_with_the_same_sources() -> None:
    event = chain_event()
    first, second = RecordingPublisher(), RecordingPublisher()
    run(event, first)
    run(event, second)
    key = [(r["source"]["sequence_number"], r["source"]["sub_sequence_number"])
           for _, r in first.records()]  # fmt: skip
    assert key == [
        (r["source"]["sequence_number"], r["source"]["sub_sequence_number"])
        for _, r in second.records()
    ]
    assert len(set(key)) == 16


def test_an_event_without_ticks_publishes_nothing_and_reads_no_snapshot() -> None:
    publisher = RecordingPublisher()
    source = FixedSnapshots(UNIVERSE)
    outcome = greeks_event(
        {"Records": []},
        instruments=RegistryIndexCache(source),
        memory=ForwardMemory(900),
        publisher=publisher,
        settings=GreeksSettingsView(rate=RATE),
        computed_at=NOW,
    )
    assert (outcome.rows, outcome.kinesis_records, source.calls) == (0, 0, 0)
    assert publisher.batches == []


# --------------------------------------------------------------------------- fuzzing

TICK_POISON = {"bad_json", "unknown_schema", "bad_field", "out_of_range"}
UNIVERSE_TOKENS = [i.instrument_token for i in UNIVERSE]


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(strategies.tick_bytes)
def test_any_user_record_is_a_tick_or_typed_poison(data: bytes) -> None:
    # Given any user record; When the Greeks function decodes it
    ticks = TickColumns()
    poison = add_or_poison(ticks, user(data, "1"))
    # Then it is typed poison with a reason the function counts, or
    if poison is not None:
        assert poison.reason in TICK_POISON
        assert len(ticks) == 0
        return
    # a tick whose columns hold what the batch math needs
    assert 0 <= ticks.tokens[0] <= 2**32 - 1
    assert math.isfinite(ticks.prices[0])
    assert math.isfinite(ticks.epochs[0])


def add_or_poison(ticks: TickColumns, record: KinesisUserRecord) -> RecordError | None:
    """None if the tick was added, else the typed error (anything else escapes)."""
    try:
        ticks.add(record)
    except RecordError as exc:
        return exc
    return None


def with_known_tokens(record: Any, token: int) -> Any:
    """The record, aimed at an instrument of the universe when it is an object with a token."""
    if isinstance(record, dict) and isinstance(record.get("instrument_token"), int):
        return {**record, "instrument_token": token}
    return record


fuzzed_ticks = st.builds(
    with_known_tokens, strategies.tick_records, st.sampled_from(UNIVERSE_TOKENS)
).map(lambda r: json.dumps(r, allow_nan=True).encode())


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(fuzzed_ticks, min_size=1, max_size=16))
def test_a_batch_of_any_ticks_gives_valid_greeks_and_counted_poison(datas: list[bytes]) -> None:
    # Given one aggregate of any ticks for the universe's instruments (good ones among them)
    publisher = RecordingPublisher()
    event = kinesis_event([("NIFTY", datas)])
    # When the function processes it, Then nothing escapes
    outcome = run(event, publisher)
    # And each tick was used or counted as poison, under a known reason
    assert outcome.ticks + sum(outcome.poison.values()) == len(datas)
    assert set(outcome.poison) <= TICK_POISON
    # And every published row is a valid greeks/1 record
    for _, record in publisher.records():
        assert record["instrument_token"] in UNIVERSE_TOKENS
    for batch in publisher.batches:
        for entry in batch.records:
            for user_rec in deaggregate(entry.data, entry.partition_key):
                errors = [e.message for e in VALIDATOR.iter_errors(json.loads(user_rec.data))]
                assert errors == []
