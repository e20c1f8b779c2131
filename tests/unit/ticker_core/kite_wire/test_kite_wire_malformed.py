"""Malformed binary frames: typed errors with salvage, counted skips, never anything else."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker_core.kite_wire import (
    DecodedFrame,
    DecodeStats,
    FrameError,
    PacketCountMismatchError,
    TrailingBytesError,
    TruncatedFrameError,
    decode_frame,
    parse_ticks,
)

TOKEN = 408065  # an NSE equity
LTP_A = struct.pack(">Ii", TOKEN, 100)
LTP_B = struct.pack(">Ii", TOKEN, 200)
QUOTE = struct.pack(">IiIiIIIiiii", TOKEN, 300, 1, 300, 1, 1, 1, 290, 310, 280, 295)

DECODERS: list[Callable[..., object]] = [parse_ticks, decode_frame]


def framed(*packets: bytes, count: int | None = None) -> bytes:
    body = b"".join(struct.pack(">H", len(p)) + p for p in packets)
    return struct.pack(">H", len(packets) if count is None else count) + body


GOOD = framed(LTP_A, QUOTE, LTP_B)


# Each named kind of malformed frame: bytes, expected error, intact packets, lost bytes.
MALFORMED = {
    "cut inside a length prefix": (GOOD[: 2 + 10 + 46 + 1], TruncatedFrameError, (LTP_A, QUOTE), 1),
    "cut inside a packet body": (GOOD[:-3], TruncatedFrameError, (LTP_A, QUOTE), 7),
    "count says one packet, 3-byte frame": (b"\x00\x01\x00", TruncatedFrameError, (), 1),
    "packet length runs past the end": (
        framed(LTP_A, count=2) + b"\x00\xb8" + QUOTE,
        TruncatedFrameError,
        (LTP_A,),
        46,
    ),
    "count larger than the packets": (
        framed(LTP_A, LTP_B, count=5),
        PacketCountMismatchError,
        (LTP_A, LTP_B),
        0,
    ),
    "count smaller than the packets": (
        framed(LTP_A, LTP_B, count=1),
        TrailingBytesError,
        (LTP_A,),
        10,
    ),
    "junk after the last packet": (
        GOOD + b"\xde\xad",
        TrailingBytesError,
        (LTP_A, QUOTE, LTP_B),
        2,
    ),
    "count zero with bytes after it": (b"\x00\x00" + LTP_A, TrailingBytesError, (), 8),
}


@pytest.mark.parametrize("decode", DECODERS, ids=["parse_ticks", "decode_frame"])
@pytest.mark.parametrize("name", list(MALFORMED))
def test_structural_faults_raise_a_typed_error_that_keeps_what_was_intact(
    name: str, decode: Callable[..., object]
) -> None:
    # Given a structurally broken frame
    frame, error, intact, lost_bytes = MALFORMED[name]
    stats = DecodeStats()
    # When it is decoded
    with pytest.raises(error) as raised:
        decode(frame, stats=stats)
    # Then the error says how many packets survived and how many bytes were lost
    err = raised.value
    assert isinstance(err, FrameError)
    assert isinstance(err, ValueError)  # generic handlers still catch it
    assert (err.intact, err.lost_bytes) == (len(intact), lost_bytes)
    assert err.missing == max(err.declared - len(intact), 0)
    assert err.offset == len(frame) - lost_bytes
    # And its salvage is a well-formed frame of exactly the intact packets
    assert err.salvage == framed(*intact)
    assert len(parse_ticks(err.salvage)) == len(intact)
    # And the stats counted the loss, not a decoded frame
    assert (stats.malformed_frames, stats.frames) == (1, 0)
    assert (stats.missing_packets, stats.lost_bytes) == (err.missing, err.lost_bytes)


def test_error_messages_name_the_fault() -> None:
    # Given a frame cut mid-packet, When parsed, Then the message locates the fault
    with pytest.raises(TruncatedFrameError, match=r"announces 3 packets; packet 2 at byte 58"):
        parse_ticks(GOOD[:-3])


@pytest.mark.parametrize("decode", DECODERS, ids=["parse_ticks", "decode_frame"])
@pytest.mark.parametrize(
    "odd_packet",
    [b"", b"\x00" * 12, b"\x01" * 183, b"\x02" * 185],
    ids=["zero length", "12 bytes", "183 bytes", "185 bytes"],
)
def test_a_packet_of_unknown_length_is_skipped_and_counted(
    odd_packet: bytes, decode: Callable[..., object]
) -> None:
    # Given a well-formed frame with one packet of a length no layout has
    frame = framed(LTP_A, odd_packet, QUOTE)
    stats = DecodeStats()
    # When decoded
    result = decode(frame, stats=stats)
    # Then the other packets decode and the odd one is counted, not raised
    ticks = result.to_dicts() if isinstance(result, DecodedFrame) else result
    assert ticks == parse_ticks(framed(LTP_A, QUOTE))
    assert (stats.skipped_packets, stats.ticks, stats.frames) == (1, 2, 1)


def test_columnar_result_carries_its_skip_count() -> None:
    # Given a frame of two unknown-length packets and one LTP
    decoded = decode_frame(framed(b"\x00" * 3, LTP_A, b"\x00" * 3))
    # Then the result itself says what was skipped
    assert (decoded.declared, decoded.skipped, len(decoded)) == (3, 2, 1)


def test_columnar_fast_path_falls_back_when_lengths_only_look_uniform() -> None:
    # Given a frame whose size fits N packets of the first one's length, but whose
    # packets differ (28 + 8 + 48 bytes = 3 x 28 + prefixes)
    index_quote = struct.pack(">Iiiiiii", 256265, 1, 1, 1, 1, 1, 0)
    frame = framed(index_quote, LTP_A, b"\x00" * 48)
    assert len(frame) == 2 + 3 * (28 + 2)
    # When decoded to columns, Then the real packets are found and the odd one skipped
    decoded = decode_frame(frame)
    assert decoded.to_dicts() == parse_ticks(frame)
    assert decoded.skipped == 1


def valid_frames() -> st.SearchStrategy[bytes]:
    packets = st.lists(st.sampled_from([LTP_A, LTP_B, QUOTE, b"", b"\x07" * 9]), max_size=6)
    return packets.map(lambda ps: framed(*ps))


def damaged_frames() -> st.SearchStrategy[bytes]:
    """Valid frames cut short, extended with junk, or with one byte changed."""
    cut = st.tuples(valid_frames(), st.integers(0, 400)).map(lambda t: t[0][: t[1]])
    extended = st.tuples(valid_frames(), st.binary(min_size=1, max_size=8)).map(
        lambda t: t[0] + t[1]
    )
    flipped = st.tuples(valid_frames(), st.integers(0, 400), st.integers(0, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
    )
    return st.one_of(cut, extended, flipped)


def outcome(decode: Callable[[bytes], object], frame: bytes) -> object:
    """What a decoder makes of a frame: its ticks, or the error type and salvage."""
    try:
        result = decode(frame)
    except FrameError as err:
        return (type(err), err.intact, err.lost_bytes, err.salvage)
    return result.to_dicts() if isinstance(result, DecodedFrame) else result


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.binary(max_size=64), damaged_frames()))
def test_arbitrary_bytes_raise_nothing_but_frame_errors(frame: bytes) -> None:
    # Given any bytes at all, valid frames damaged in every way included
    # When both decoders read them (anything but FrameError fails this test)
    ticks_outcome = outcome(parse_ticks, frame)
    columns_outcome = outcome(decode_frame, frame)
    # Then they agree: the same ticks, or the same error with the same salvage
    assert ticks_outcome == columns_outcome
    if isinstance(ticks_outcome, tuple):
        # And a salvage always decodes cleanly
        assert len(parse_ticks(ticks_outcome[3])) <= ticks_outcome[1]
