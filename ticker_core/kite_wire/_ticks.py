"""The per-tick path: frames to and from the dicts Kite's client gives ``on_ticks``.

Decoding unpacks each packet with one precompiled ``struct.Struct`` and hands
the values to a builder function generated from the packet's layout, so the
dict shape is written down once (in ``_layout``) yet costs no interpretation
per packet.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ticker_core.kite import MODE_FULL, MODE_LTP, MODE_QUOTE
from ticker_core.kite_wire._frame import (
    Buffer,
    DecodeStats,
    EncodeError,
    is_heartbeat,
    pack_frame,
    scan,
)
from ticker_core.kite_wire._layout import (
    CHANGE,
    CLOSE,
    DEPTH,
    DEPTH_ENTRY_FIELDS,
    DEPTH_LEVELS,
    DEPTH_SIDES,
    DIVISOR_BY_SEGMENT,
    INSTRUMENT_TOKEN,
    KIND_BY_LENGTH,
    LAST_PRICE,
    MODE,
    SEGMENT_MASK,
    TRADABLE,
    PacketKind,
    Role,
    WireField,
    is_tradable,
)
from ticker_core.tz import IST

#: A tick as Kite's client delivers it to ``on_ticks`` (nested dicts for
#: ``ohlc`` and ``depth``), with timezone-aware timestamps.
Tick = dict[str, Any]
#: Datetimes already made for Unix seconds, so a frame whose packets share a
#: timestamp builds each datetime once.
Stamps = dict[int, datetime]
#: Builds one tick from unpacked wire values, the segment's divisor and tradability.
Builder = Callable[[Sequence[Any], float, bool, Stamps], Tick]

# --- decoding ----------------------------------------------------------------


def _value_expr(field: WireField, index: int, body: list[str]) -> str:
    """Source of the tick value of wire value ``v[index]``; may add setup lines to ``body``."""
    if field.role is Role.PRICE:
        return f"v[{index}] / div"
    if field.role is Role.TIMESTAMP:
        body += [
            f"t{index} = v[{index}]",
            f"s{index} = stamps.get(t{index})",
            f"if s{index} is None:",
            f"    s{index} = stamps[t{index}] = from_timestamp(t{index}, IST)",
        ]
        return f"s{index}"
    return f"v[{index}]"


def _builder_source(kind: PacketKind) -> str:
    """Python source of the function that builds a tick dict of ``kind``.

    Keys come out in the official client's order: ``tradable``, ``mode``, then
    the wire fields in wire order with a group (``ohlc``) nested where its first
    member is, ``change`` right after the group holding ``close``, and
    ``depth`` last.
    """
    layout = kind.layout
    body: list[str] = []
    index = {f.name: i for i, f in enumerate(layout.fields)}
    value: dict[str, str] = {}
    for i, f in enumerate(layout.fields):
        if f.in_tick:
            value[f.name] = _value_expr(f, i, body)
    if layout.has_change:
        # Named once: used both as values and to derive the percent change.
        body += [f"last = v[{index[LAST_PRICE]}] / div", f"close = v[{index[CLOSE]}] / div"]
        value[LAST_PRICE], value[CLOSE] = "last", "close"
    entries = [f"{TRADABLE!r}: tradable", f"{MODE!r}: {layout.mode!r}"]
    grouped: set[str] = set()
    for f in layout.fields:
        if not f.in_tick:
            continue
        if f.group is None:
            entries.append(f"{f.name!r}: {value[f.name]}")
            continue
        if f.group in grouped:
            continue
        grouped.add(f.group)
        members = [m for m in layout.fields if m.group == f.group]
        inner = ", ".join(f"{m.name!r}: {value[m.name]}" for m in members)
        entries.append(f"{f.group!r}: {{{inner}}}")
        if layout.has_change and any(m.name == CLOSE for m in members):
            # The official client's formula, operation for operation, so the
            # float result is bit-identical; 0.0 rather than its int 0.
            entries.append(f"{CHANGE!r}: (last - close) * 100 / close if close else 0.0")
    if layout.has_depth:
        at = len(layout.fields)
        sides = []
        for side in DEPTH_SIDES:
            levels = []
            for _ in range(DEPTH_LEVELS):
                level = ", ".join(
                    f"{e.name!r}: {_value_expr(e, at + k, body)}"
                    for k, e in enumerate(DEPTH_ENTRY_FIELDS)
                )
                levels.append(f"{{{level}}}")
                at += len(DEPTH_ENTRY_FIELDS)
            sides.append(f"{side!r}: [{', '.join(levels)}]")
        entries.append(f"{DEPTH!r}: {{{', '.join(sides)}}}")
    lines = ["def build(v, div, tradable, stamps):"]
    lines += [f"    {line}" for line in body]
    lines.append(f"    return {{{', '.join(entries)}}}")
    return "\n".join(lines) + "\n"


def _compile_builder(kind: PacketKind) -> Builder:
    namespace: dict[str, Any] = {"from_timestamp": datetime.fromtimestamp, "IST": IST}
    code = compile(_builder_source(kind), f"<kite_wire {kind.name} builder>", "exec")
    # Generated, not interpreted per packet: one dict literal per packet type is
    # what makes this path several times faster than the official parser. The
    # source is built only from this package's layout constants (names through
    # repr()), never from input, as namedtuple and dataclasses do.
    exec(code, namespace)  # noqa: S102  # nosec B102
    build: Builder = namespace["build"]
    return build


#: Builder of every packet type (also used by the columnar ``to_dicts``).
BUILDERS: dict[PacketKind, Builder] = {kind: _compile_builder(kind) for kind in PacketKind}
_STRUCTS = {kind: struct.Struct(kind.layout.struct_format) for kind in PacketKind}
#: (unpack_from, builder) by packet length: the whole decode dispatch.
_CODEC_BY_LENGTH = {
    length: (_STRUCTS[kind].unpack_from, BUILDERS[kind]) for length, kind in KIND_BY_LENGTH.items()
}
_TRADABLE_BY_SEGMENT = tuple(is_tradable(segment) for segment in range(SEGMENT_MASK + 1))


def parse_ticks(frame: Buffer, *, stats: DecodeStats | None = None) -> list[Tick]:
    """Decode a binary frame into the ticks Kite's client gives ``on_ticks``.

    Differences from the official client: timestamps are aware datetimes in
    IST, prices (depth included) are signed, ``change`` is 0.0 rather than 0
    when close is 0. A heartbeat gives []. Packets of an unknown length are
    skipped and counted in ``stats``. Raises a :class:`FrameError` subclass when
    the frame's structure is broken; ``err.salvage`` holds the intact packets.
    """
    if is_heartbeat(frame):
        if stats is not None:
            stats.frames += 1
            stats.heartbeats += 1
        return []
    starts, lengths = scan(frame, stats)
    ticks: list[Tick] = []
    append = ticks.append
    stamps: Stamps = {}
    divisors = DIVISOR_BY_SEGMENT
    tradable = _TRADABLE_BY_SEGMENT
    codecs = _CODEC_BY_LENGTH
    skipped = 0
    for start, length in zip(starts, lengths, strict=True):
        codec = codecs.get(length)
        if codec is None:
            skipped += 1
            continue
        unpack, build = codec
        values = unpack(frame, start)
        segment = values[0] & SEGMENT_MASK
        append(build(values, divisors[segment], tradable[segment], stamps))
    if stats is not None:
        stats.frames += 1
        stats.ticks += len(ticks)
        stats.skipped_packets += skipped
    return ticks


# --- encoding ----------------------------------------------------------------

#: Keys leading to a value inside a tick dict, e.g. ("depth", "buy", 0, "price").
TickPath = tuple[str | int, ...]
#: Where each field after the token sits in a tick dict, by packet type.
_PATHS: dict[PacketKind, list[TickPath]] = {
    kind: [(f.name,) if f.group is None else (f.group, f.name) for f in kind.layout.fields[1:]]
    for kind in PacketKind
}
#: Every depth entry field with its place in a tick dict, in wire order.
_DEPTH_PATHS: list[tuple[WireField, TickPath]] = [
    (e, (DEPTH, side, level, e.name))
    for side in DEPTH_SIDES
    for level in range(DEPTH_LEVELS)
    for e in DEPTH_ENTRY_FIELDS
]


def _kind_of(tick: Mapping[str, Any]) -> PacketKind:
    """The packet type a tick dict encodes to, from its ``mode`` and its keys.

    Index packets are the quote/full shapes without the tradable instruments'
    fields, so the keys tell them apart, not the segment.
    """
    mode = tick.get(MODE)
    if mode == MODE_LTP:
        return PacketKind.LTP
    if mode == MODE_QUOTE:
        return PacketKind.QUOTE if "last_traded_quantity" in tick else PacketKind.INDEX_QUOTE
    if mode == MODE_FULL:
        return PacketKind.FULL if DEPTH in tick else PacketKind.INDEX_FULL
    modes = ", ".join(repr(m) for m in (MODE_LTP, MODE_QUOTE, MODE_FULL))
    raise EncodeError(f"tick mode {mode!r} is not one of {modes}")


def _lookup(tick: Mapping[str, Any], path: TickPath) -> Any:
    node: Any = tick
    try:
        for key in path:
            node = node[key]
    except (KeyError, IndexError, TypeError) as exc:
        raise EncodeError(f"tick has no {_dotted(path)}") from exc
    return node


def _dotted(path: TickPath) -> str:
    return ".".join(str(p) for p in path)


def _wire_value(field: WireField, value: Any, divisor: float, path: TickPath) -> int:
    """The wire integer of a tick value, checked against the field's wire range.

    ``path`` locates the value in the tick; it is formatted only for an error.
    """
    if isinstance(value, bool):
        raise EncodeError(f"{_dotted(path)} is a bool, not a {field.role.value}")
    if field.role is Role.PRICE:
        try:
            scaled = float(value) * divisor
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"{_dotted(path)} = {value!r} is not a number") from exc
        if not math.isfinite(scaled):
            raise EncodeError(f"{_dotted(path)} = {value!r} is not finite")
        raw = round(scaled)
    elif field.role is Role.TIMESTAMP and isinstance(value, datetime):
        if value.tzinfo is None:
            raise EncodeError(f"{_dotted(path)} is a naive datetime; the wire carries instants")
        raw = math.floor(value.timestamp())
    else:
        try:
            raw = operator.index(value)
        except TypeError as exc:
            raise EncodeError(f"{_dotted(path)} = {value!r} is not an integer") from exc
    low, high = field.role.wire_range
    if not low <= raw <= high:
        raise EncodeError(f"{_dotted(path)} = {value!r} is outside the wire range [{low}, {high}]")
    return raw


def encode_packet(tick: Mapping[str, Any]) -> bytes:
    """One packet (without its length prefix) from a tick in the ``parse_ticks`` shape.

    The packet type follows from ``mode`` and the keys present: quote and full
    ticks without the tradable instruments' keys are index packets. Derived
    keys (``tradable``, ``change``) are ignored; an index packet's net change
    is derived from last price and close. Prices are rounded to the nearest
    wire unit (1 / the segment's divisor); timestamps may be aware datetimes
    or Unix seconds. Raises :class:`EncodeError` for a missing key or a value
    the wire cannot carry.
    """
    kind = _kind_of(tick)
    layout = kind.layout
    token_path = (INSTRUMENT_TOKEN,)
    token = _wire_value(layout.fields[0], _lookup(tick, token_path), 1.0, token_path)
    divisor = DIVISOR_BY_SEGMENT[token & SEGMENT_MASK]
    values: list[int] = [token]
    by_name: dict[str, int] = {INSTRUMENT_TOKEN: token}
    for f, path in zip(layout.fields[1:], _PATHS[kind], strict=True):
        if f.in_tick:
            raw = _wire_value(f, _lookup(tick, path), divisor, path)
        else:
            # The index net change Kite sends: last minus close in wire units,
            # saturated because it is derived and invisible to Kite's client.
            low, high = f.role.wire_range
            raw = min(max(by_name[LAST_PRICE] - by_name[CLOSE], low), high)
        by_name[f.name] = raw
        values.append(raw)
    if layout.has_depth:
        for side in DEPTH_SIDES:
            levels = _lookup(tick, (DEPTH, side))
            if not isinstance(levels, Sequence) or len(levels) != DEPTH_LEVELS:
                raise EncodeError(f"depth.{side} is not a list of {DEPTH_LEVELS} levels")
        for e, path in _DEPTH_PATHS:
            values.append(_wire_value(e, _lookup(tick, path), divisor, path))
    return _STRUCTS[kind].pack(*values)


def encode_frame(ticks: Iterable[Mapping[str, Any]]) -> bytes:
    """A binary frame of ``ticks`` (dicts in the ``parse_ticks`` shape), in order."""
    return pack_frame([encode_packet(tick) for tick in ticks])
