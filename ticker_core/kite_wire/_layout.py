"""The one definition of Kite's binary packet layouts.

Everything else in :mod:`ticker_core.kite_wire` is derived from the tables in
this module: the ``struct`` formats and the generated dict builders of the
per-tick path, the numpy dtypes of the columnar path, and both encoders. A
field's *role* decides its wire type, its signedness and whether it is divided
by the segment's price divisor, so those three facts cannot disagree between
the paths.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from ticker_core.kite import MODE_FULL, MODE_LTP, MODE_QUOTE, Segment

# --- frame structure ---------------------------------------------------------

#: Big-endian uint16: the packet count at the start of a frame, and the length
#: prefix in front of every packet.
UINT16 = struct.Struct(">H")
#: Bytes of the packet count that opens a frame.
FRAME_HEADER_SIZE = UINT16.size
#: Bytes of the length prefix in front of each packet.
PACKET_PREFIX_SIZE = UINT16.size
#: The most packets one frame can announce, and the longest packet it can hold.
MAX_PACKETS = MAX_PACKET_LENGTH = 0xFFFF
#: Frames shorter than this are heartbeats (the official client's rule).
MIN_DATA_FRAME_SIZE = FRAME_HEADER_SIZE

# --- segments and prices -----------------------------------------------------

#: The exchange segment is the low byte of the instrument token.
SEGMENT_MASK = 0xFF


#: Prices travel as integers in the segment's smallest unit; most segments
#: quote in paise.
DEFAULT_PRICE_DIVISOR = 100.0
#: Currency derivatives (CDS, BCD) and NSE commodities (NCO) quote finer than paise.
_SPECIAL_DIVISORS: dict[int, float] = {
    Segment.CDS: 10_000_000.0,
    Segment.BCD: 10_000.0,
    Segment.NCO: 10_000.0,
}
#: Divisor for every possible segment byte, indexed by segment, so a lookup is
#: one index rather than a branch (the columnar path makes an array of it).
DIVISOR_BY_SEGMENT: tuple[float, ...] = tuple(
    _SPECIAL_DIVISORS.get(segment, DEFAULT_PRICE_DIVISOR) for segment in range(SEGMENT_MASK + 1)
)


def segment_of(instrument_token: int) -> int:
    """The exchange segment code carried in the token's low byte."""
    return instrument_token & SEGMENT_MASK


def price_divisor(segment: int) -> float:
    """What a wire price of ``segment`` is divided by to give rupees (or the quote unit)."""
    return DIVISOR_BY_SEGMENT[segment & SEGMENT_MASK]


def is_tradable(segment: int) -> bool:
    """Indices are not tradable; every other segment is (Kite's ``tradable`` key)."""
    return segment != Segment.INDICES


# --- fields ------------------------------------------------------------------


class Role(Enum):
    """What a wire field holds; decides its type, signedness and scaling."""

    #: uint32 instrument token; its low byte is the segment. (A field role,
    #: not a credential, whatever the secret scanners think of the word.)
    TOKEN = "token"  # noqa: S105  # nosec B105
    #: int32, divided by the segment's divisor. Signed, unlike the official
    #: client: spreads and some commodities trade below zero.
    PRICE = "price"
    #: uint32 count: quantities, volume, open interest.
    QUANTITY = "quantity"
    #: uint32 Unix seconds, decoded to an aware datetime in IST.
    TIMESTAMP = "timestamp"
    #: uint16 number of orders at a depth level.
    ORDERS = "orders"

    @property
    def struct_code(self) -> str:
        """The ``struct`` format character of this role's wire type."""
        return _STRUCT_CODE[self]

    @property
    def scaled(self) -> bool:
        """Whether the wire integer is divided by the segment's price divisor."""
        return self is Role.PRICE

    @property
    def wire_range(self) -> tuple[int, int]:
        """Inclusive bounds of the wire integer."""
        return _WIRE_RANGE[self.struct_code]


_STRUCT_CODE = {
    Role.TOKEN: "I",
    Role.PRICE: "i",
    Role.QUANTITY: "I",
    Role.TIMESTAMP: "I",
    Role.ORDERS: "H",
}
_WIRE_RANGE = {"I": (0, 2**32 - 1), "i": (-(2**31), 2**31 - 1), "H": (0, 2**16 - 1)}
#: Big-endian numpy type of each struct code.
_NUMPY_CODE = {"I": ">u4", "i": ">i4", "H": ">u2"}


@dataclass(frozen=True)
class WireField:
    """One field of a packet, in wire order."""

    #: Key in the tick dict (inside ``group`` when set) and column name.
    name: str
    role: Role
    #: Nested dict the key lives in (``"ohlc"``), or None for top level.
    group: str | None = None
    #: False for fields Kite sends but its client does not put in the tick:
    #: the index packets' absolute net change (the client derives ``change``).
    in_tick: bool = True

    @property
    def size(self) -> int:
        """Bytes on the wire."""
        return struct.calcsize(">" + self.role.struct_code)


def _price(name: str, group: str | None = None) -> WireField:
    return WireField(name, Role.PRICE, group)


def _quantity(name: str) -> WireField:
    return WireField(name, Role.QUANTITY)


def _timestamp(name: str) -> WireField:
    return WireField(name, Role.TIMESTAMP)


def _ohlc(*names: str) -> tuple[WireField, ...]:
    return tuple(_price(name, OHLC) for name in names)


#: Tick keys the decoders add that are not wire fields.
TRADABLE = "tradable"
MODE = "mode"
#: Percent change of ``last_price`` over the previous ``close`` (0 when close
#: is 0), derived by the client and placed right after the ``ohlc`` group.
CHANGE = "change"
OHLC = "ohlc"
LAST_PRICE = "last_price"
CLOSE = "close"
DEPTH = "depth"
INSTRUMENT_TOKEN = "instrument_token"  # noqa: S105  # nosec B105

#: Market depth: five levels of bids, then five of offers.
DEPTH_SIDES = ("buy", "sell")
DEPTH_LEVELS = 5
#: One depth entry; the two bytes after ``orders`` are padding.
DEPTH_ENTRY_FIELDS = (
    _quantity("quantity"),
    _price("price"),
    WireField("orders", Role.ORDERS),
)
DEPTH_ENTRY_SIZE = 12
_DEPTH_PADDING = DEPTH_ENTRY_SIZE - sum(f.size for f in DEPTH_ENTRY_FIELDS)


@dataclass(frozen=True)
class PacketLayout:
    """A packet type: its fields in wire order, optionally followed by depth."""

    mode: str
    fields: tuple[WireField, ...]
    #: Whether DEPTH_SIDES x DEPTH_LEVELS depth entries follow the fields.
    has_depth: bool = False

    @property
    def struct_format(self) -> str:
        """``struct`` format of the whole packet; unpacking yields fields then depth."""
        entry = "".join(f.role.struct_code for f in DEPTH_ENTRY_FIELDS) + f"{_DEPTH_PADDING}x"
        depth = entry * (len(DEPTH_SIDES) * DEPTH_LEVELS) if self.has_depth else ""
        return ">" + "".join(f.role.struct_code for f in self.fields) + depth

    @property
    def value_count(self) -> int:
        """How many values unpacking yields: one per field, then one per depth entry field."""
        depth = len(DEPTH_ENTRY_FIELDS) * len(DEPTH_SIDES) * DEPTH_LEVELS if self.has_depth else 0
        return len(self.fields) + depth

    @property
    def length(self) -> int:
        """Packet length in bytes, which is what tells packet types apart on the wire."""
        return struct.calcsize(self.struct_format)

    @property
    def offsets(self) -> dict[str, int]:
        """Byte offset of every field, plus ``"depth"`` when the layout has it."""
        offsets: dict[str, int] = {}
        at = 0
        for f in self.fields:
            offsets[f.name] = at
            at += f.size
        if self.has_depth:
            offsets[DEPTH] = at
        return offsets

    @property
    def has_change(self) -> bool:
        """Whether the client derives ``change`` (every packet that carries a close)."""
        return any(f.name == CLOSE for f in self.fields)

    def numpy_dtype(self) -> np.dtype[Any]:
        """Structured big-endian dtype of one packet; depth is a (sides x levels) subarray."""
        offsets = self.offsets
        names = [f.name for f in self.fields]
        formats: list[Any] = [_NUMPY_CODE[f.role.struct_code] for f in self.fields]
        if self.has_depth:
            names.append(DEPTH)
            formats.append((depth_entry_dtype(), (len(DEPTH_SIDES), DEPTH_LEVELS)))
        return np.dtype(
            {
                "names": names,
                "formats": formats,
                "offsets": [offsets[n] for n in names],
                "itemsize": self.length,
            }
        )


def depth_entry_dtype() -> np.dtype[Any]:
    """Structured big-endian dtype of one depth entry (padding included in itemsize)."""
    at = 0
    offsets = []
    for f in DEPTH_ENTRY_FIELDS:
        offsets.append(at)
        at += f.size
    return np.dtype(
        {
            "names": [f.name for f in DEPTH_ENTRY_FIELDS],
            "formats": [_NUMPY_CODE[f.role.struct_code] for f in DEPTH_ENTRY_FIELDS],
            "offsets": offsets,
            "itemsize": DEPTH_ENTRY_SIZE,
        }
    )


_TOKEN = WireField(INSTRUMENT_TOKEN, Role.TOKEN)
_LAST_PRICE = _price(LAST_PRICE)
_INDEX_QUOTE_FIELDS = (
    _TOKEN,
    _LAST_PRICE,
    *_ohlc("high", "low", "open", CLOSE),
    WireField("net_change", Role.PRICE, in_tick=False),
)
_QUOTE_FIELDS = (
    _TOKEN,
    _LAST_PRICE,
    _quantity("last_traded_quantity"),
    _price("average_traded_price"),
    _quantity("volume_traded"),
    _quantity("total_buy_quantity"),
    _quantity("total_sell_quantity"),
    *_ohlc("open", "high", "low", CLOSE),
)


class PacketKind(Enum):
    """The five packet types, told apart on the wire by their length (8/28/32/44/184)."""

    _value_: PacketLayout

    #: Last traded price only.
    LTP = PacketLayout(MODE_LTP, (_TOKEN, _LAST_PRICE))
    #: An index in quote mode: price, OHLC and the absolute net change.
    INDEX_QUOTE = PacketLayout(MODE_QUOTE, _INDEX_QUOTE_FIELDS)
    #: An index in full mode: the quote plus the exchange timestamp.
    INDEX_FULL = PacketLayout(MODE_FULL, (*_INDEX_QUOTE_FIELDS, _timestamp("exchange_timestamp")))
    #: A tradable instrument in quote mode.
    QUOTE = PacketLayout(MODE_QUOTE, _QUOTE_FIELDS)
    #: A tradable instrument in full mode: quote, OI, timestamps and 5-level depth.
    FULL = PacketLayout(
        MODE_FULL,
        (
            *_QUOTE_FIELDS,
            _timestamp("last_trade_time"),
            _quantity("oi"),
            _quantity("oi_day_high"),
            _quantity("oi_day_low"),
            _timestamp("exchange_timestamp"),
        ),
        has_depth=True,
    )

    @property
    def layout(self) -> PacketLayout:
        """The field layout of this packet type."""
        return self._value_

    @property
    def length(self) -> int:
        """Packet length in bytes."""
        return self._value_.length

    @property
    def mode(self) -> str:
        """Kite's ``mode`` value for ticks of this type."""
        return self._value_.mode

    def __repr__(self) -> str:
        return f"<PacketKind.{self.name}: {self.length} bytes>"


#: Packet type by packet length; a length not here is skipped and counted.
KIND_BY_LENGTH: dict[int, PacketKind] = {kind.length: kind for kind in PacketKind}

#: Bytes of one tradable instrument's packet in each mode (an index's are smaller): the
#: load an instrument puts on its connection.
MODE_PACKET_BYTES: dict[str, int] = {
    MODE_LTP: PacketKind.LTP.length,
    MODE_QUOTE: PacketKind.QUOTE.length,
    MODE_FULL: PacketKind.FULL.length,
}
