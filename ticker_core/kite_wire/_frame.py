"""Frame structure: splitting a frame into packets, the error hierarchy, framing.

Both decode paths split frames with :func:`scan`, so they agree on which frames
are malformed and what is salvageable from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

from ticker_core.kite_wire._layout import (
    FRAME_HEADER_SIZE,
    MAX_PACKET_LENGTH,
    MAX_PACKETS,
    MIN_DATA_FRAME_SIZE,
    PACKET_PREFIX_SIZE,
    UINT16,
)

#: Anything a frame may arrive as; a memoryview must be one-dimensional bytes.
Buffer = bytes | bytearray | memoryview

#: What Kite sends to keep an idle connection open: a single byte.
HEARTBEAT = b"\x00"


class FrameError(ValueError):
    """A binary frame whose structure is broken, so packets past the fault are lost.

    Raised before anything is decoded. The packets before the fault are whole
    and decodable: ``salvage`` is a well-formed frame holding exactly those
    ``intact`` packets, so a caller keeps them with ``parse_ticks(err.salvage)``
    or ``decode_frame(err.salvage)`` and counts the loss from ``missing`` and
    ``lost_bytes``.
    """

    def __init__(
        self,
        message: str,
        *,
        declared: int,
        intact: int,
        offset: int,
        frame_size: int,
        salvage: bytes,
    ) -> None:
        super().__init__(message)
        #: Packets the frame header announced.
        self.declared = declared
        #: Whole packets before the fault (all of them are in ``salvage``).
        self.intact = intact
        #: Byte offset of the fault: where the broken packet or the extra bytes start.
        self.offset = offset
        #: Bytes from ``offset`` to the end of the frame, which nothing decodes.
        self.lost_bytes = frame_size - offset
        #: A well-formed frame of the ``intact`` packets.
        self.salvage = salvage

    @property
    def missing(self) -> int:
        """Announced packets that did not arrive whole (0 when bytes were extra)."""
        return max(self.declared - self.intact, 0)


class TruncatedFrameError(FrameError):
    """A packet's length prefix or body runs past the end of the frame (cut mid-packet)."""


class PacketCountMismatchError(FrameError):
    """The frame ends cleanly between packets, but before the announced count is reached."""


class TrailingBytesError(FrameError):
    """Bytes remain after the announced number of packets."""


class EncodeError(ValueError):
    """A value cannot be represented on the wire (missing, wrong type or out of range)."""


@dataclass(slots=True)
class DecodeStats:
    """Running counts a caller passes to the decoders (e.g. one per connection).

    ``frames`` counts calls that returned (heartbeats included); a frame that
    raised :class:`FrameError` counts in ``malformed_frames`` instead, and its
    salvage, if the caller decodes it, then counts as a frame.
    """

    frames: int = 0
    heartbeats: int = 0
    ticks: int = 0
    #: Whole packets of a length no layout has, skipped.
    skipped_packets: int = 0
    malformed_frames: int = 0
    #: Sum of ``FrameError.missing`` and ``FrameError.lost_bytes`` over malformed frames.
    missing_packets: int = 0
    lost_bytes: int = 0

    def _record_error(self, error: FrameError) -> None:
        self.malformed_frames += 1
        self.missing_packets += error.missing
        self.lost_bytes += error.lost_bytes


def is_heartbeat(frame: Buffer) -> bool:
    """Whether ``frame`` is too short to hold a packet count (the official client's rule)."""
    return len(frame) < MIN_DATA_FRAME_SIZE


def scan(frame: Buffer, stats: DecodeStats | None) -> tuple[list[int], list[int]]:
    """Start offsets and lengths of the packets of a data frame (not a heartbeat).

    Trusts the header's count: walks exactly that many packets, and raises a
    :class:`FrameError` subclass if the bytes disagree with it.
    """
    size = len(frame)
    declared = frame[0] << 8 | frame[1]
    starts: list[int] = []
    lengths: list[int] = []
    add_start, add_length = starts.append, lengths.append
    at = FRAME_HEADER_SIZE
    for _ in range(declared):
        start = at + PACKET_PREFIX_SIZE
        if start > size:  # one test per packet for both ways of running out
            error = PacketCountMismatchError if at == size else TruncatedFrameError
            _fail(error, frame, declared, starts, at, stats)
        length = frame[at] << 8 | frame[at + 1]
        end = start + length
        if end > size:
            _fail(TruncatedFrameError, frame, declared, starts, at, stats)
        add_start(start)
        add_length(length)
        at = end
    if at != size:
        _fail(TrailingBytesError, frame, declared, starts, at, stats)
    return starts, lengths


_REASON = {
    TruncatedFrameError: "packet {intact} at byte {offset} runs past the end",
    PacketCountMismatchError: "the frame ends after {intact} packets",
    TrailingBytesError: "{lost} bytes follow the last packet at byte {offset}",
}


def _fail(
    error: type[FrameError],
    frame: Buffer,
    declared: int,
    starts: list[int],
    offset: int,
    stats: DecodeStats | None,
) -> NoReturn:
    intact = len(starts)
    reason = _REASON[error].format(intact=intact, offset=offset, lost=len(frame) - offset)
    exc = error(
        f"frame of {len(frame)} bytes announces {declared} packets; {reason}",
        declared=declared,
        intact=intact,
        offset=offset,
        frame_size=len(frame),
        salvage=UINT16.pack(intact) + bytes(frame[FRAME_HEADER_SIZE:offset]),
    )
    if stats is not None:
        stats._record_error(exc)
    raise exc


def pack_frame(packets: Iterable[Buffer]) -> bytes:
    """A frame of already-encoded packets, each given its length prefix.

    Packets are framed as they are, whatever their length, so the simulator can
    inject packets no layout has.
    """
    parts: list[Buffer] = []
    for packet in packets:
        if len(packet) > MAX_PACKET_LENGTH:
            raise EncodeError(f"a packet of {len(packet)} bytes exceeds {MAX_PACKET_LENGTH}")
        parts.append(UINT16.pack(len(packet)))
        parts.append(packet)
    count = len(parts) // 2
    if count > MAX_PACKETS:
        raise EncodeError(f"{count} packets exceed the {MAX_PACKETS} one frame can announce")
    return UINT16.pack(count) + b"".join(parts)


def join_frames(frames: Iterable[Buffer]) -> bytes:
    """One frame holding the packets of ``frames`` in order (heartbeats dropped).

    Concatenates bodies and adds up counts without checking the frames, so a
    malformed input stays malformed in the same way.
    """
    count = 0
    bodies: list[Buffer] = []
    for frame in frames:
        if is_heartbeat(frame):
            continue
        count += frame[0] << 8 | frame[1]
        bodies.append(frame[FRAME_HEADER_SIZE:])
    if count > MAX_PACKETS:
        raise EncodeError(f"{count} packets exceed the {MAX_PACKETS} one frame can announce")
    return UINT16.pack(count) + b"".join(bodies)
