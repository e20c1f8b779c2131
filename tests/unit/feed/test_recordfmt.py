"""The C row formatter writes exactly what ``bytes % row`` writes, and refuses bad input."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feed_container import encoder
from feed_container.encoder import split_template


def format_rows() -> Any:
    """The compiled ``format_rows``; fails (not skips) where it was not built."""
    try:
        from feed_container._recordfmt import format_rows as compiled
    except ImportError:
        pytest.fail(
            "feed_container._recordfmt is not built: install a C compiler and the Python "
            "headers, then `make venv` (the feed would format records in Python, slower)"
        )
    return compiled


def test_the_extension_is_built_and_the_encoder_uses_it() -> None:
    # Given the development environment `make venv` built
    # Then the C formatter is importable and the encoder reports it
    format_rows()
    assert encoder.FORMATTER == "c"


SLOT_VALUES = {
    "d": st.integers(min_value=-(2**70), max_value=2**70),
    "r": st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e16, 1e-7]),
    "s": st.binary(max_size=12),
}


@st.composite
def templates_and_rows(draw: st.DrawFn) -> tuple[bytes, list[tuple[Any, ...]]]:
    kinds = draw(st.lists(st.sampled_from("drs"), max_size=8))
    texts = draw(st.lists(st.binary(max_size=6), min_size=len(kinds) + 1, max_size=len(kinds) + 1))
    template = texts[0].replace(b"%", b"%%")
    for kind, text in zip(kinds, texts[1:], strict=True):
        template += b"%" + kind.encode() + text.replace(b"%", b"%%")
    rows = draw(st.lists(st.tuples(*(SLOT_VALUES[k] for k in kinds)), max_size=5))
    return template, rows


@given(templates_and_rows())
def test_rows_are_byte_identical_to_percent_formatting(case: tuple[bytes, list[Any]]) -> None:
    # Given a template of %d, %r, %s and %% pieces and rows of ints, floats and bytes
    template, rows = case
    literals, kinds = split_template(template)
    columns = tuple([row[i] for row in rows] for i in range(len(kinds)))
    # When the C formatter writes them
    out = format_rows()(literals, kinds, columns, len(rows))
    # Then each record is what bytes % row writes
    assert out == [template % row for row in rows]


def test_float_text_is_repr_including_the_special_values() -> None:
    values = [1.5, -0.0, math.inf, -math.inf, math.nan, 1e16, 123456789.0125, 5e-324]
    out = format_rows()((b"", b""), b"r", (values,), len(values))
    assert out == [repr(v).encode() for v in values]


@pytest.mark.parametrize(
    ("kinds", "value"), [(b"d", 1.5), (b"d", "7"), (b"r", 3), (b"s", "text"), (b"s", None)]
)
def test_a_value_of_the_wrong_type_raises_type_error(kinds: bytes, value: Any) -> None:
    with pytest.raises(TypeError):
        format_rows()((b"<", b">"), kinds, ([b"ok" if kinds == b"s" else 1, value],), 2)


@pytest.mark.parametrize(
    "args",
    [
        ((b"", b""), b"d", ([1],), 2),  # a column shorter than rows
        ((b"",), b"d", ([1],), 1),  # literals not one more than slots
        ((b"", b""), b"x", ([1],), 1),  # unknown slot kind
        ((b"", b""), b"d", ([1],), -1),  # negative rows
    ],
)
def test_inconsistent_arguments_raise_value_error(args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError, match=r"column|literals|kind|rows"):
        format_rows()(*args)


def test_split_template_refuses_what_the_formatter_cannot_write() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        split_template(b"price %f")
    with pytest.raises(ValueError, match="incomplete"):
        split_template(b"dangling %")
    assert split_template(b"a%%b%dc%sd") == ((b"a%b", b"c", b"d"), b"ds")


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from([100.0, 10_000.0, 10_000_000.0]))
def test_a_price_slot_writes_repr_of_any_wire_price(raw: int, divisor: float) -> None:
    # Given a wire price: an int32 over any segment's divisor
    price = raw / divisor
    # When written through a price slot, Then the text is repr's
    assert format_rows()((b"", b""), b"p", ([price],), 1) == [repr(price).encode()]


def test_a_price_slot_writes_what_repr_writes_outside_the_wire_range_too() -> None:
    values = [math.nan, math.inf, -math.inf, 1e300, -0.0, 1e-5, -3e-7, 1e-4, 2.5e15]
    out = format_rows()((b"", b""), b"p", (values,), len(values))
    assert out == [repr(v).encode() for v in values]
