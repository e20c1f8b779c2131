"""The feed's frames, encoded with ticker_core's Kite wire codec.

One frame per connection per feed round: the market's columns for the
instruments due, grouped by packet kind (LTP, QUOTE/INDEX_QUOTE,
FULL/INDEX_FULL), each group encoded by the vectorized columnar encoder and
the groups joined into one frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from kite_sim.faults import FaultSpecError
from kite_sim.feed import MODE_FULL, MODE_LTP, MODE_QUOTE
from kite_sim.market import Market
from ticker_core.kite_wire import (
    HEARTBEAT,
    PacketKind,
    depth_column,
    encode_columns,
    encode_text,
    join_frames,
    pack_frame,
)

UINT32_MAX = 2**32 - 1

__all__ = ["HEARTBEAT", "encode_text", "encode_ticks", "malformed_frame", "one_packet"]


def _quantity(values: NDArray[Any]) -> NDArray[np.int64]:
    # Kite's quantities are uint32 on the wire; a very long, very fast run
    # saturates rather than wrapping.
    out: NDArray[np.int64] = np.minimum(values, UINT32_MAX).astype(np.int64)
    return out


def _columns(market: Market, idx: NDArray[np.int64], kind: PacketKind) -> dict[str, Any]:
    cols: dict[str, Any] = {
        "instrument_token": market.tokens[idx],
        "last_price": market.ltp[idx],
    }
    if kind is PacketKind.LTP:
        return cols
    cols.update(
        open=market.open[idx],
        high=market.high[idx],
        low=market.low[idx],
        close=market.close[idx],
    )
    if kind in (PacketKind.INDEX_QUOTE, PacketKind.INDEX_FULL):
        if kind is PacketKind.INDEX_FULL:
            cols["exchange_timestamp"] = market.exchange_time[idx]
        return cols
    cols.update(
        last_traded_quantity=_quantity(market.last_qty[idx]),
        average_traded_price=market.vwap[idx],
        volume_traded=_quantity(market.volume[idx]),
        total_buy_quantity=_quantity(market.buy_qty[idx]),
        total_sell_quantity=_quantity(market.sell_qty[idx]),
    )
    if kind is PacketKind.FULL:
        cols.update(
            last_trade_time=market.last_trade_time[idx],
            oi=_quantity(market.oi[idx]),
            oi_day_high=_quantity(market.oi_high[idx]),
            oi_day_low=_quantity(market.oi_low[idx]),
            exchange_timestamp=market.exchange_time[idx],
        )
        n = len(idx)
        quantity = np.empty((n, 2, 5), dtype=np.int64)
        price = np.empty((n, 2, 5), dtype=np.float64)
        orders = np.empty((n, 2, 5), dtype=np.int64)
        quantity[:, 0], quantity[:, 1] = market.bid_qty[idx], market.ask_qty[idx]
        price[:, 0], price[:, 1] = market.bid_px[idx], market.ask_px[idx]
        orders[:, 0], orders[:, 1] = market.bid_n[idx], market.ask_n[idx]
        cols[depth_column("quantity")] = _quantity(quantity)
        cols[depth_column("price")] = price
        cols[depth_column("orders")] = np.minimum(orders, 0xFFFF)
    return cols


def encode_ticks(market: Market, idx: NDArray[np.int64], modes: NDArray[np.int8]) -> bytes:
    """One frame with a packet per instrument of ``idx``, in its connection's mode."""
    index = market.is_index[idx]
    frames = []
    ltp = idx[modes == MODE_LTP]
    if len(ltp):
        frames.append(encode_columns(PacketKind.LTP, _columns(market, ltp, PacketKind.LTP)))
    for mode, tradable_kind, index_kind in (
        (MODE_QUOTE, PacketKind.QUOTE, PacketKind.INDEX_QUOTE),
        (MODE_FULL, PacketKind.FULL, PacketKind.INDEX_FULL),
    ):
        in_mode = modes == mode
        for kind, sel in (
            (tradable_kind, idx[in_mode & ~index]),
            (index_kind, idx[in_mode & index]),
        ):
            if len(sel):
                frames.append(encode_columns(kind, _columns(market, sel, kind)))
    if len(frames) == 1:
        return frames[0]
    return join_frames(frames)


def one_packet(market: Market, k: int) -> bytes:
    """One LTP packet (without its length prefix), for malformed-frame faults."""
    frame = encode_columns(PacketKind.LTP, _columns(market, np.array([k]), PacketKind.LTP))
    return frame[4:]


def malformed_frame(kind: str, packet: bytes) -> bytes:
    """A binary frame that breaks Kite's framing in the way ``kind`` says.

    ``packet`` is one well-formed packet. truncated: the frame ends inside the
    packet; bad_length: a packet of a length no Kite mode has; count_mismatch:
    the header announces more packets than follow; garbage: bytes that are no
    frame at all.
    """
    good = pack_frame([packet])
    if kind == "truncated":
        return good[: 4 + max(1, len(packet) // 2)]
    if kind == "bad_length":
        return pack_frame([(packet + bytes(13))[:13]])
    if kind == "count_mismatch":
        return pack_frame([packet, packet, packet])[:2] + good[2:]
    if kind == "garbage":
        return b"\xff\xfe\x00\x07garbage"
    raise FaultSpecError(f"unknown malformed kind {kind!r}")
