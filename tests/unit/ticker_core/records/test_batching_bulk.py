"""RecordBatcher.add_many and Aggregator.extend: the same batches as one add() per record."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker_core.records import Aggregator, RecordBatcher, RecordTooLargeError

runs = st.lists(
    st.tuples(
        st.sampled_from(["NIFTY", "BANKNIFTY", "M&M"]),
        st.lists(st.integers(1, 5000), min_size=1, max_size=40),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(runs, st.sampled_from([300, 2000, 50 * 1024]))
def test_add_many_builds_exactly_what_add_builds(
    groups: list[tuple[str, list[int]]], aggregate: int
) -> None:
    # Given the same records, added one by one and key run by key run
    one, bulk = (
        RecordBatcher(linger=1.0, aggregate_bytes=aggregate, request_records=7) for _ in range(2)
    )
    for n, (key, sizes) in enumerate(groups):
        datas = [bytes([65 + (n + i) % 26]) * size for i, size in enumerate(sizes)]
        for data in datas:
            one.add(key, data, float(n))
        bulk.add_many(key, datas, float(n))
        # Then pending counts agree at every step
        assert (bulk.pending_user_records, bulk.pending_user_bytes) == (
            one.pending_user_records,
            one.pending_user_bytes,
        )
    # And so do the batches, byte for byte
    assert bulk.flush() == one.flush()


def test_extend_stops_where_the_aggregate_is_full_and_needs_a_first_record() -> None:
    agg, twin = Aggregator(200), Aggregator(200)
    assert agg.extend("K", [b"x" * 10]) == (0, 0)  # empty: the first record takes try_add
    assert agg.try_add("K", b"a" * 10)
    assert twin.try_add("K", b"a" * 10)
    fits = 0
    while twin.try_add("K", b"b" * 50):
        fits += 1
    added, payload = agg.extend("K", [b"b" * 50] * 10)
    assert (added, payload) == (fits, 50 * fits)
    assert agg.build() == twin.build()
    agg = Aggregator(200)
    agg.try_add("K", b"a" * 10)
    agg.extend("K", [b"b" * 50] * 10)
    assert not agg.try_add("K", b"b" * 50)
    assert agg.extend("OTHER", [b"c"]) == (0, 0)
    with pytest.raises(TypeError):
        agg.extend("K", ["text"])  # type: ignore[list-item]


def test_add_many_raises_like_add_after_adding_what_came_before() -> None:
    batcher = RecordBatcher(linger=1.0)
    with pytest.raises(RecordTooLargeError):
        batcher.add_many("K", [b"ok", b"x" * (2 * 1024 * 1024)], 0.0)
    assert batcher.pending_user_records == 1
