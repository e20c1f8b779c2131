"""Hypothesis strategies for user records: each field valid, or any JSON value of any type.

The records follow the field tables in ticker_core (``TICK_FIELDS``,
``GREEKS_FIELDS``): every field is, by draw, a value its schema accepts
(including its edges: 32-bit tokens, 64-bit quantities, Kite's 0 for
"never", the last instant Kite can write), or an arbitrary JSON value of
another type, or left out; unknown fields are sometimes added. Serialised,
records may carry NaN or Infinity (not JSON), and some draws are arbitrary
bytes. Meant to drive decoders into every branch, right and wrong.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from ticker_core.records import EARLIEST_INSTANT, LATEST_INSTANT
from ticker_core.records.greeks import FORWARD_SOURCES, GREEKS_FIELDS, OPTION_TYPES, REASONS
from ticker_core.records.ticks import (
    KITE_TIMES,
    MAX_DEPTH_LEVELS,
    MAX_INSTRUMENT_TOKEN,
    TICK_FIELDS,
    TICK_PRICES,
    TICK_QUANTITIES,
    TICK_REQUIRED,
)

INT64 = (-(2**63), 2**63 - 1)


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 10) -> Any:
    """``common``, except one draw in ``odds`` from ``rare`` (one_of would make them even)."""
    # Not n == 1: Hypothesis favours the bounds of a range, which would make rare common.
    return st.integers(1, odds).flatmap(lambda n: rare if n == odds // 2 + 1 else common)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 2.0**53 + 2, 2.0**63]),
    st.text(max_size=12),
    st.sampled_from(["", "\x00", "NIF\x00TY", "\ud800", "9" * 200, "tick/1", "CE"]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
"""Any JSON value (and NaN/Infinity, which serialise as non-JSON tokens)."""

offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-23, minutes=-59))]
)
instants = mostly(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2106, 2, 6), timezones=offsets
    ).map(datetime.isoformat),
    st.one_of(
        st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
        ).map(datetime.isoformat),
        st.sampled_from(
            [
                EARLIEST_INSTANT.isoformat(),
                "1970-01-01T05:30:00+05:30",  # Kite's "never", in IST
                LATEST_INSTANT.isoformat(),
                (LATEST_INSTANT + timedelta(microseconds=1)).isoformat(),
                "1969-12-31T23:59:59.999999+00:00",
                "2026-11-27T09:15:00",  # no offset
                "2026-11-27",
                "20261127T091500+0530",
                "yesterday",
            ]
        ),
    ),
    odds=6,
)
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**65), 2**65))
integers = mostly(st.integers(*INT64), st.integers(-(2**66), 2**66) | st.just(2.0), odds=8)
tokens = mostly(
    st.integers(0, MAX_INSTRUMENT_TOKEN), st.sampled_from([-1, 2**32, 2**63, 2**64 - 1])
)
texts = mostly(st.text(min_size=1, max_size=20), st.sampled_from(["", "A\x00B"]))


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Inside a nested object: nearly always a valid value, now and then any JSON value."""
    return mostly(valid, json_values, odds=40)


level = st.fixed_dictionaries(
    {"price": either(numbers), "quantity": either(integers), "orders": either(integers)},
    optional={"extra": json_values},
)
depth = st.fixed_dictionaries(
    {
        "buy": either(st.lists(either(level), max_size=MAX_DEPTH_LEVELS + 1)),
        "sell": either(st.lists(either(level), max_size=MAX_DEPTH_LEVELS + 1)),
    }
)
ohlc = st.fixed_dictionaries({name: either(numbers) for name in ("open", "high", "low", "close")})

TICK_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "schema": mostly(st.just("tick/1"), st.sampled_from(["tick/2", None, "greeks/1"]), odds=20),
    "instrument_token": tokens,
    "exchange": st.none() | texts,
    "tradingsymbol": st.none() | texts,
    "underlying": texts,
    "mode": st.sampled_from(["ltp", "quote", "full", "depth"]),
    "tradable": st.booleans(),
    "last_price": numbers,
    **dict.fromkeys(TICK_QUANTITIES, integers),
    **dict.fromkeys(TICK_PRICES, numbers),
    "ohlc": ohlc,
    **dict.fromkeys(KITE_TIMES, st.none() | instants),
    "depth": depth,
    "received_at": instants,
    "account": texts,
}
assert set(TICK_VALUES) == set(TICK_FIELDS)

source = st.fixed_dictionaries(
    {
        "shard_id": either(st.sampled_from(["shardId-000000000001", "shard id", "s" * 129])),
        "sequence_number": either(
            st.sampled_from(["4965", "0", "9" * 128, "9" * 129, "12a", "", " 1", "\u0661"])
        ),
        "sub_sequence_number": either(
            st.integers(0, 2**31 - 1) | st.sampled_from([-1, 2**31, 2**63])
        ),
    }
)
GREEKS_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "schema": mostly(st.just("greeks/1"), st.sampled_from(["greeks/2", "tick/1"]), odds=20),
    "instrument_token": tokens,
    "tradingsymbol": st.none() | texts,
    "underlying": texts,
    "expiry": st.sampled_from(["2026-12-29"] * 6 + ["20261229", "2026-13-01", "someday"]),
    "strike": st.none() | numbers,
    "option_type": st.sampled_from(sorted(map(str, OPTION_TYPES)) * 3 + ["XX"]),
    "price": st.none() | numbers,
    "forward": st.none() | numbers,
    "forward_source": st.sampled_from(sorted(map(str, FORWARD_SOURCES)) * 3 + ["spot"]),
    "t_years": st.none() | numbers,
    "rate": st.none() | numbers,
    **dict.fromkeys(("iv", "delta", "gamma", "theta", "vega", "rho"), st.none() | numbers),
    "raw": st.fixed_dictionaries(
        {n: either(st.none() | numbers) for n in ("theta", "vega", "rho")}
    ),
    "reason": st.sampled_from(sorted(map(str, REASONS - {None}))) | st.none(),
    "exchange_timestamp": st.none() | instants,
    "as_of": instants,
    "computed_at": instants,
    "source": source,
}
assert set(GREEKS_VALUES) == set(GREEKS_FIELDS)


def records(values: dict[str, st.SearchStrategy[Any]], required: frozenset[str]) -> Any:
    """Valid records over ``values``, then 0 to 3 mutations each.

    A mutation sets one field to any JSON value, removes it, or adds a field
    the schema does not know; so most draws break one rule at a time, deep
    in the record as often as near its top.
    """
    always = {name: s for name, s in values.items() if name in required}
    sometimes = {name: s for name, s in values.items() if name not in required}
    base = st.fixed_dictionaries(always, optional=sometimes)
    names = [*sorted(values), "surprise"]
    mutation = st.tuples(
        st.sampled_from(["set", "set", "drop"]), st.sampled_from(names), json_values
    )

    def mutate(record: dict[str, Any], changes: list[tuple[str, str, Any]]) -> dict[str, Any]:
        out = dict(record)
        for action, name, value in changes:
            if action == "drop":
                out.pop(name, None)
            else:
                out[name] = value
        return out

    counts = mostly(st.just(0), st.integers(1, 3), odds=2)
    return st.builds(
        mutate, base, counts.flatmap(lambda n: st.lists(mutation, min_size=n, max_size=n))
    )


def serialised(record_strategy: Any) -> st.SearchStrategy[bytes]:
    """Records as bytes (NaN/Infinity written as their non-JSON tokens), or arbitrary bytes."""
    as_json = record_strategy.map(lambda r: json.dumps(r, allow_nan=True).encode())
    return mostly(as_json, st.binary(max_size=64))


tick_records = records(TICK_VALUES, TICK_REQUIRED)
greeks_records = records(GREEKS_VALUES, frozenset(GREEKS_FIELDS) - {"tradingsymbol"})
tick_bytes = serialised(tick_records)
greeks_bytes = serialised(greeks_records)
