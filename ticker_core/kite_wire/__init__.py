"""Kite Connect's WebSocket wire format: decode and encode binary frames and text messages.

Binary frames
-------------
All integers are big-endian. A frame is::

    uint16 count, then count x (uint16 length, length bytes of packet)

A frame shorter than two bytes is a heartbeat (Kite sends one byte) and
decodes to no ticks. The packet length tells the packet type (see
:class:`PacketKind`; the fields are defined once, in ``_layout``):

====== =========== ======================================================
length kind        fields
====== =========== ======================================================
8      LTP         token, last_price
28     INDEX_QUOTE token, last_price, high, low, open, close, net change
32     INDEX_FULL  INDEX_QUOTE + exchange_timestamp
44     QUOTE       token, last_price, last_traded_quantity,
                   average_traded_price, volume_traded, total_buy_quantity,
                   total_sell_quantity, open, high, low, close
184    FULL        QUOTE + last_trade_time, oi, oi_day_high, oi_day_low,
                   exchange_timestamp, then 10 depth entries (uint32
                   quantity, int32 price, uint16 orders, 2 bytes padding):
                   5 buy levels, then 5 sell levels
====== =========== ======================================================

The segment is ``token & 0xFF``. Prices are integers divided by 1e7 for CDS
(3), 1e4 for BCD (6) and NCO (12), and 100 otherwise; indices (9) are not
tradable. Prices are read as signed int32 (spreads and some commodities go
negative; the official client reads them unsigned); quantities, volumes, open
interest and timestamps are unsigned. Timestamps are Unix seconds, decoded to
aware datetimes in IST.

Two decoders share one frame splitter and therefore one error policy:
:func:`parse_ticks` gives the official client's tick dicts;
:func:`decode_frame` gives numpy columns per packet type for the feed's hot
loop, and converts back to the same dicts with ``to_dicts()``.

Error policy
------------
Decoding raises nothing but :class:`FrameError` subclasses.

* Structure broken, so packet boundaries past the fault cannot be trusted:
  **raise**, before decoding anything.

  - :class:`TruncatedFrameError`: a packet's length prefix or body runs past the
    end of the frame.
  - :class:`PacketCountMismatchError`: the frame ends cleanly between packets
    before the announced count.
  - :class:`TrailingBytesError`: bytes remain after the announced packets.

  Nothing is lost silently: the error carries ``declared``, ``intact``,
  ``missing`` and ``lost_bytes``, and ``salvage``, a well-formed frame of the
  intact packets before the fault, which the caller decodes to keep them.
* One packet of a length no layout has (0 included), boundaries intact:
  **skip and count** it (``DecodedFrame.skipped``, ``DecodeStats``); the
  other packets decode normally.

Any byte values in a well-formed packet are a valid tick, so nothing else can
go wrong. Text messages never raise (:func:`parse_text`); encoders raise
:class:`EncodeError` for values the wire cannot carry.
"""

from ticker_core.kite import Segment
from ticker_core.kite_wire._columnar import (
    Column,
    DecodedFrame,
    PacketBatch,
    column_names,
    decode_frame,
    depth_column,
    encode_columns,
)
from ticker_core.kite_wire._frame import (
    HEARTBEAT,
    Buffer,
    DecodeStats,
    EncodeError,
    FrameError,
    PacketCountMismatchError,
    TrailingBytesError,
    TruncatedFrameError,
    join_frames,
    pack_frame,
)
from ticker_core.kite_wire._layout import (
    DEPTH_LEVELS,
    DEPTH_SIDES,
    MODE_PACKET_BYTES,
    PacketKind,
    PacketLayout,
    Role,
    WireField,
    price_divisor,
    segment_of,
)
from ticker_core.kite_wire._text import (
    ErrorMessage,
    InvalidMessage,
    JsonValue,
    OrderUpdate,
    ServerMessage,
    TextMessage,
    UnknownMessage,
    encode_text,
    parse_text,
)
from ticker_core.kite_wire._ticks import Tick, encode_frame, encode_packet, parse_ticks

__all__ = [
    "DEPTH_LEVELS",
    "DEPTH_SIDES",
    "HEARTBEAT",
    "MODE_PACKET_BYTES",
    "Buffer",
    "Column",
    "DecodeStats",
    "DecodedFrame",
    "EncodeError",
    "ErrorMessage",
    "FrameError",
    "InvalidMessage",
    "JsonValue",
    "OrderUpdate",
    "PacketBatch",
    "PacketCountMismatchError",
    "PacketKind",
    "PacketLayout",
    "Role",
    "Segment",
    "ServerMessage",
    "TextMessage",
    "Tick",
    "TrailingBytesError",
    "TruncatedFrameError",
    "UnknownMessage",
    "WireField",
    "column_names",
    "decode_frame",
    "depth_column",
    "encode_columns",
    "encode_frame",
    "encode_packet",
    "encode_text",
    "join_frames",
    "pack_frame",
    "parse_text",
    "parse_ticks",
    "price_divisor",
    "segment_of",
]
