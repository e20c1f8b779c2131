"""The columnar path: frames to and from numpy columns, one batch per packet type.

Decoding views the frame through structured dtypes derived from the layouts
(no per-packet Python work when every packet has the same length, which is
the common case of a connection in one mode) and converts each field once
for all rows: prices to float64 through a per-segment divisor table, every
integer to int64 (so consumers' arithmetic cannot wrap), depth to
(rows, sides, levels) arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from ticker_core.kite_wire._frame import (
    Buffer,
    DecodeStats,
    EncodeError,
    is_heartbeat,
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
    FRAME_HEADER_SIZE,
    INSTRUMENT_TOKEN,
    KIND_BY_LENGTH,
    LAST_PRICE,
    MAX_PACKETS,
    PACKET_PREFIX_SIZE,
    SEGMENT_MASK,
    TRADABLE,
    UINT16,
    PacketKind,
    Role,
    WireField,
    is_tradable,
)
from ticker_core.kite_wire._ticks import BUILDERS, Stamps, Tick

#: A column: shape (rows,) for fields, (rows, sides, levels) for depth.
Column = npt.NDArray[Any]
#: Rows to keep: a boolean mask, an array or sequence of row numbers, or a slice.
Rows = npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]] | Sequence[int] | slice

_DIVISORS = np.array(DIVISOR_BY_SEGMENT, dtype=np.float64)
_TRADABLE = np.array([is_tradable(s) for s in range(SEGMENT_MASK + 1)], dtype=np.bool_)
_PACKET_DTYPE = {kind: kind.layout.numpy_dtype() for kind in PacketKind}
#: A packet with its length prefix: how a frame of one packet type looks
#: after its count, so np.frombuffer can view the whole frame at once.
_RECORD_DTYPE = {
    kind: np.dtype(
        {
            "names": ["length", "packet"],
            "formats": [">u2", _PACKET_DTYPE[kind]],
            "offsets": [0, PACKET_PREFIX_SIZE],
            "itemsize": PACKET_PREFIX_SIZE + kind.length,
        }
    )
    for kind in PacketKind
}
_DEPTH_SHAPE = (len(DEPTH_SIDES), DEPTH_LEVELS)


def depth_column(entry: str) -> str:
    """Column name of a depth entry field: ``depth_quantity``, ``depth_price``, ``depth_orders``."""
    return f"{DEPTH}_{entry}"


def column_names(kind: PacketKind) -> tuple[str, ...]:
    """The columns a batch of ``kind`` has, wire fields first.

    Wire fields keep their tick names, with ``ohlc`` flattened to open, high,
    low and close; index packets add ``net_change`` (on the wire, not in the
    tick). Then ``tradable``, ``change`` when the packet has a close, and the
    depth columns for full quotes.
    """
    layout = kind.layout
    names = [f.name for f in layout.fields] + [TRADABLE]
    if layout.has_change:
        names.append(CHANGE)
    if layout.has_depth:
        names += [depth_column(e.name) for e in DEPTH_ENTRY_FIELDS]
    return tuple(names)


@dataclass(frozen=True, eq=False)
class PacketBatch:
    """The packets of one type from a frame, as columns of equal length.

    Prices (depth included) are float64 in rupees (or the segment's quote
    unit); every integer, timestamps included (Unix seconds), is int64;
    ``tradable`` is bool; depth columns are (rows, sides, levels) with sides
    in ``DEPTH_SIDES`` order. ``positions`` holds each row's packet number in
    its frame, so batches of a mixed frame can be put back in wire order.
    """

    kind: PacketKind
    positions: npt.NDArray[np.intp]
    columns: Mapping[str, Column]

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, name: str) -> Column:
        """The column ``name`` (see :func:`column_names`)."""
        return self.columns[name]

    def select(self, rows: Rows) -> PacketBatch:
        """A batch of the chosen rows (e.g. those that passed validation)."""
        return PacketBatch(
            self.kind,
            self.positions[rows],
            {name: column[rows] for name, column in self.columns.items()},
        )

    def to_dicts(self) -> list[Tick]:
        """The rows as tick dicts, equal to what :func:`parse_ticks` gives for them."""
        layout = self.kind.layout
        rows, fields = len(self), len(layout.fields)
        # Rows of Python values in wire order (fields, then each depth level's
        # entry fields), which is what the shared tick builder reads.
        wire = np.empty((rows, layout.value_count), dtype=object)
        for i, f in enumerate(layout.fields):
            wire[:, i] = self.columns[f.name]
        if layout.has_depth:
            step = len(DEPTH_ENTRY_FIELDS)
            for k, e in enumerate(DEPTH_ENTRY_FIELDS):
                wire[:, fields + k :: step] = self.columns[depth_column(e.name)].reshape(rows, -1)
        build = BUILDERS[self.kind]
        stamps: Stamps = {}
        # Prices are already divided, so the builder divides by 1.0, which
        # leaves every float unchanged.
        return [
            build(values, 1.0, tradable, stamps)
            for values, tradable in zip(wire.tolist(), self.columns[TRADABLE].tolist(), strict=True)
        ]


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """A decoded frame: one batch per packet type present, in :class:`PacketKind` order."""

    batches: tuple[PacketBatch, ...]
    #: Packets the frame header announced (0 for a heartbeat).
    declared: int
    #: Whole packets of a length no layout has, skipped.
    skipped: int

    def __len__(self) -> int:
        """Ticks decoded (``declared - skipped``)."""
        return sum(len(b) for b in self.batches)

    def batch(self, kind: PacketKind) -> PacketBatch | None:
        """The batch of ``kind``, or None when the frame had no such packet."""
        for b in self.batches:
            if b.kind is kind:
                return b
        return None

    def to_dicts(self) -> list[Tick]:
        """Every tick in wire order, equal to ``parse_ticks`` of the same frame."""
        numbered = [
            pair
            for b in self.batches
            for pair in zip(b.positions.tolist(), b.to_dicts(), strict=True)
        ]
        numbered.sort(key=itemgetter(0))
        return [tick for _, tick in numbered]


def decode_frame(frame: Buffer, *, stats: DecodeStats | None = None) -> DecodedFrame:
    """Decode a binary frame into columns, one :class:`PacketBatch` per packet type.

    Same error policy as :func:`parse_ticks`: a heartbeat gives an empty
    frame, unknown packet lengths are skipped and counted (``skipped`` and
    ``stats``), broken structure raises a :class:`FrameError` subclass whose
    ``salvage`` holds the intact packets.
    """
    if is_heartbeat(frame):
        if stats is not None:
            stats.frames += 1
            stats.heartbeats += 1
        return DecodedFrame((), 0, 0)
    decoded = _decode_uniform(frame)
    if decoded is None:
        decoded = _decode_mixed(frame, stats)
    if stats is not None:
        stats.frames += 1
        stats.ticks += len(decoded)
        stats.skipped_packets += decoded.skipped
    return decoded


def _decode_uniform(frame: Buffer) -> DecodedFrame | None:
    """The frame when all its packets share one known length, else None.

    If the frame's size is exactly what ``declared`` packets of the first
    packet's length take, and every length prefix at those strides says so,
    then walking the frame would visit exactly these packets: one view, no loop.
    """
    size = len(frame)
    declared = frame[0] << 8 | frame[1]
    if size < FRAME_HEADER_SIZE + PACKET_PREFIX_SIZE:
        return None
    kind = KIND_BY_LENGTH.get(frame[2] << 8 | frame[3])
    if kind is None or size != FRAME_HEADER_SIZE + declared * _RECORD_DTYPE[kind].itemsize:
        return None
    records = np.frombuffer(frame, _RECORD_DTYPE[kind], declared, FRAME_HEADER_SIZE)
    if not (records["length"] == kind.length).all():
        return None
    batch = _decode_packets(kind, records["packet"], np.arange(declared))
    return DecodedFrame((batch,), declared, 0)


def _decode_mixed(frame: Buffer, stats: DecodeStats | None) -> DecodedFrame:
    """The general path: walk the length prefixes, then gather each type's packets."""
    starts, lengths = scan(frame, stats)
    declared = len(starts)
    start_at = np.array(starts, dtype=np.intp)
    length_of = np.array(lengths, dtype=np.intp)
    batches = []
    for kind in PacketKind:
        positions = np.flatnonzero(length_of == kind.length)
        if positions.size:
            batches.append(
                _decode_packets(kind, _gather(frame, kind, start_at[positions]), positions)
            )
    decoded = sum(len(b) for b in batches)
    return DecodedFrame(tuple(batches), declared, declared - decoded)


def _gather(frame: Buffer, kind: PacketKind, starts: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
    """Copies of the ``kind`` packets starting at ``starts``, as one structured array.

    A view of the frame with a packet-sized opaque item at every byte offset
    lets one fancy index copy whole packets, row by row; opaque items copy
    faster than structured ones, and the copy is contiguous, so the packet
    dtype can view it afterwards.
    """
    item = np.dtype((np.void, kind.length))
    windows = np.ndarray((len(frame) - kind.length + 1,), item, frame, 0, (1,))
    return windows[starts].view(_PACKET_DTYPE[kind])


def _decode_packets(
    kind: PacketKind, packets: npt.NDArray[Any], positions: npt.NDArray[np.intp]
) -> PacketBatch:
    """Native columns of a structured array of packets of ``kind``."""
    layout = kind.layout
    token = packets[INSTRUMENT_TOKEN].astype(np.int64)
    segment = token & SEGMENT_MASK
    divisor = _DIVISORS[segment]
    columns: dict[str, Column] = {INSTRUMENT_TOKEN: token}
    for f in layout.fields[1:]:
        columns[f.name] = _native(f, packets[f.name], divisor)
    columns[TRADABLE] = _TRADABLE[segment]
    if layout.has_change:
        last, close = columns[LAST_PRICE], columns[CLOSE]
        change = np.zeros(len(token))
        # Same operations in the same order as the tick path: bit-identical.
        np.divide((last - close) * 100, close, out=change, where=close != 0)
        columns[CHANGE] = change
    if layout.has_depth:
        depth = packets[DEPTH]
        per_row = divisor[:, np.newaxis, np.newaxis]
        for e in DEPTH_ENTRY_FIELDS:
            columns[depth_column(e.name)] = _native(e, depth[e.name], per_row)
    return PacketBatch(kind, positions, columns)


def _native(field: WireField, raw: npt.NDArray[Any], divisor: npt.NDArray[np.float64]) -> Column:
    if field.role.scaled:
        return raw / divisor
    return raw.astype(np.int64)


# --- encoding ----------------------------------------------------------------


def encode_columns(kind: PacketKind, columns: Mapping[str, npt.ArrayLike]) -> bytes:
    """A frame of ``kind`` packets from columns shaped like a decoded batch's.

    Every wire field of the layout is required (``net_change`` of index
    packets is derived from last price and close when absent); derived
    columns (``tradable``, ``change``) are ignored, so a decoded batch's
    columns encode back to its packets. Timestamps are Unix seconds (or
    datetime64). Prices are rounded to the nearest wire unit. Raises
    :class:`EncodeError` for a missing column, a wrong shape or type, or a
    value outside the wire range. Join frames of several types with
    :func:`join_frames`.
    """
    layout = kind.layout
    token = _wire_column(layout.fields[0], columns, INSTRUMENT_TOKEN, None, 1.0)
    rows = len(token)
    if rows > MAX_PACKETS:
        raise EncodeError(f"{rows} packets exceed the {MAX_PACKETS} one frame can announce")
    records = np.zeros(rows, _RECORD_DTYPE[kind])
    records["length"] = kind.length
    packets = records["packet"]
    packets[INSTRUMENT_TOKEN] = token
    divisor = _DIVISORS[token & SEGMENT_MASK]
    for f in layout.fields[1:]:
        if f.in_tick or f.name in columns:
            packets[f.name] = _wire_column(f, columns, f.name, (rows,), divisor)
        else:
            # Kite's index net change: last minus close in wire units,
            # saturated as in the tick encoder.
            low, high = f.role.wire_range
            net = packets[LAST_PRICE].astype(np.int64) - packets[CLOSE].astype(np.int64)
            packets[f.name] = np.clip(net, low, high)
    if layout.has_depth:
        per_row = divisor[:, np.newaxis, np.newaxis]
        for e in DEPTH_ENTRY_FIELDS:
            name = depth_column(e.name)
            packets[DEPTH][e.name] = _wire_column(e, columns, name, (rows, *_DEPTH_SHAPE), per_row)
    return UINT16.pack(rows) + records.tobytes()


def _wire_column(
    field: WireField,
    columns: Mapping[str, npt.ArrayLike],
    name: str,
    shape: tuple[int, ...] | None,
    divisor: npt.NDArray[np.float64] | float,
) -> npt.NDArray[Any]:
    """A column as wire integers, checked for shape, type and the field's wire range.

    ``shape`` None accepts any one-dimensional column (the first one sets the rows).
    """
    if name not in columns:
        raise EncodeError(f"no column {name!r}")
    try:
        values = np.asarray(columns[name])
    except ValueError as exc:  # ragged nested sequences
        raise EncodeError(f"column {name!r} is not an array: {exc}") from exc
    if shape is None:
        if values.ndim != 1:
            raise EncodeError(f"column {name!r} has shape {values.shape}, not (rows,)")
    elif values.shape != shape:
        raise EncodeError(f"column {name!r} has shape {values.shape}, not {shape}")
    if field.role is Role.TIMESTAMP and values.dtype.kind == "M":
        values = values.astype("datetime64[s]").astype(np.int64)
    if field.role.scaled:
        if values.dtype.kind not in "iuf":
            raise EncodeError(f"column {name!r} of {values.dtype} is not numeric")
        wire = np.rint(values.astype(np.float64) * divisor)
        if not np.isfinite(wire).all():
            raise EncodeError(f"column {name!r} has a value that is not finite")
    elif values.dtype.kind in "iu":
        wire = values
    else:
        raise EncodeError(f"column {name!r} of {values.dtype} is not integer")
    low, high = field.role.wire_range
    if wire.size and (wire.min() < low or wire.max() > high):
        raise EncodeError(f"column {name!r} has a value outside the wire range [{low}, {high}]")
    return wire
