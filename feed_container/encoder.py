"""Tick user records straight from decoded columns: the feed's hot-path JSON encoder.

``ticker_core.records.encode_tick`` takes one tick dict at a time (about
12 us for a full-mode tick): too slow for 100,000 ticks/s on a shared core.
This encoder works on a whole :class:`~ticker_core.kite_wire.PacketBatch`:

* the part of a record that depends only on the instrument and the mode
  (schema, token, exchange, tradingsymbol, underlying, mode, tradable) is a
  prefix string built once per instrument and cached;
* the receive time and account are one suffix per frame;
* exchange timestamps are formatted once per distinct second (cached);
* every other value goes through one ``%`` template per packet type, fed by
  ``zip`` over ``tolist()`` columns, so the per-value work is C code
  (``%r`` of a float is ``repr``, exactly what ``encode_tick`` writes).

Templates and every text piece are ``bytes``: ``bytes % values`` writes the
record as it is sent, about 30% faster than formatting a ``str`` and
encoding it (a record is ASCII: names go through ``encode_basestring_ascii``;
``%r`` of a float is ``ascii(x)``, which is ``repr(x)``).

The per-row loop itself runs in C when ``feed_container._recordfmt`` is built
(``_recordfmt.c``; ``make venv`` and the image's builder stage compile it):
the template is split once into its literal text and slot kinds, and each
row is written straight into a buffer, the same bytes as ``template % row``
(the tests hold both paths to that). Without it (no C compiler where the
package was installed) the ``%`` path runs, slower: :data:`FORMATTER` says
which, and the container logs it at start.

The output is byte-identical to ``encode_tick(tick, underlying=...,
received_at=..., exchange=..., tradingsymbol=..., account=...)`` for the
same ticks; ``tests/unit/feed/test_encoder.py`` holds it to that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from ticker_core.instruments import InstrumentRegistry
from ticker_core.kite_wire import DEPTH_LEVELS, DEPTH_SIDES, PacketBatch, PacketKind
from ticker_core.kite_wire._layout import DIVISOR_BY_SEGMENT
from ticker_core.tz import IST

FormatRows = Callable[[tuple[bytes, ...], bytes, tuple[list[Any], ...], int], list[bytes]]
_format_rows: FormatRows | None
try:
    from feed_container import _recordfmt

    _format_rows = _recordfmt.format_rows
except ImportError:  # not compiled where the package was installed: the % path runs
    _format_rows = None

#: Which per-row formatter runs: "c" (``_recordfmt``) or "python" (``bytes % row``).
FORMATTER = "python" if _format_rows is None else "c"

#: Partition key (and ``underlying``) of a token missing from the day's instruments.
UNKNOWN_UNDERLYING = "UNKNOWN"

_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
_OHLC_CHANGE = ',"ohlc":{"open":%r,"high":%r,"low":%r,"close":%r},"change":%r'
_QUOTE = (
    ',"last_traded_quantity":%d,"average_traded_price":%r,"volume_traded":%d,'
    '"total_buy_quantity":%d,"total_sell_quantity":%d' + _OHLC_CHANGE
)
_LEVELS = ",".join(['{"price":%r,"quantity":%d,"orders":%d}'] * DEPTH_LEVELS)
_FULL_EXTRA = (
    ',"last_trade_time":"%s","oi":%d,"oi_day_high":%d,"oi_day_low":%d,'
    '"exchange_timestamp":"%s","depth":{"buy":[' + _LEVELS + '],"sell":[' + _LEVELS + "]}"
)
_OHLC_COLUMNS = ("open", "high", "low", "close", "change")
_QUOTE_COLUMNS = (
    "last_traded_quantity",
    "average_traded_price",
    "volume_traded",
    "total_buy_quantity",
    "total_sell_quantity",
    *_OHLC_COLUMNS,
)
_STAMP = "stamp:"
_DEPTH = "depth"

#: Per packet type: the body template after the prefix and the value sources in order.
#: A source is a column name, ``stamp:<column>`` (ISO time in IST), or ``depth``.
_LAYOUT: dict[PacketKind, tuple[str, tuple[str, ...]]] = {
    PacketKind.LTP: ("%s%r", ("last_price",)),
    PacketKind.INDEX_QUOTE: ("%s%r" + _OHLC_CHANGE, ("last_price", *_OHLC_COLUMNS)),
    PacketKind.INDEX_FULL: (
        "%s%r" + _OHLC_CHANGE + ',"exchange_timestamp":"%s"',
        ("last_price", *_OHLC_COLUMNS, _STAMP + "exchange_timestamp"),
    ),
    PacketKind.QUOTE: ("%s%r" + _QUOTE, ("last_price", *_QUOTE_COLUMNS)),
    PacketKind.FULL: (
        "%s%r" + _QUOTE + _FULL_EXTRA,
        (
            "last_price",
            *_QUOTE_COLUMNS,
            _STAMP + "last_trade_time",
            "oi",
            "oi_day_high",
            "oi_day_low",
            _STAMP + "exchange_timestamp",
            _DEPTH,
        ),
    ),
}
_MAX_CACHED_STAMPS = 100_000


_PrefixTable = tuple[npt.NDArray[np.int64], npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class InstrumentMeta:
    """What a record says about its instrument beyond the tick."""

    underlying: str
    exchange: str | None
    tradingsymbol: str | None


def utc_iso(when: datetime) -> str:
    """``received_at`` as the records codec writes it (UTC, microseconds)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


class ColumnarTickEncoder:
    """Encodes decoded batches to ``tick/1`` user records; caches per instrument.

    One per instruments registry (rebuild it when the registry changes).
    Not thread-safe: owned by the event loop's pipeline.
    """

    def __init__(self, registry: InstrumentRegistry | None) -> None:
        self._registry = registry
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=object))
        self._prefixes: dict[PacketKind, tuple[npt.NDArray[np.int64], npt.NDArray[Any]]] = (
            dict.fromkeys(PacketKind, empty)
        )
        self._stamps: dict[int, bytes] = {}

    def meta(self, token: int) -> InstrumentMeta:
        """The instrument's underlying, exchange and tradingsymbol (unknown tokens too)."""
        instrument = self._registry.by_token(token) if self._registry is not None else None
        if instrument is None:
            return InstrumentMeta(UNKNOWN_UNDERLYING, None, None)
        return InstrumentMeta(instrument.underlying, instrument.exchange, instrument.tradingsymbol)

    def suffix(self, received_at: datetime, account: str | None) -> bytes:
        """The end of every record of one frame: receive time and account."""
        tail = "}" if account is None else f',"account":{_json_string(account)}}}'
        return (f',"received_at":"{utc_iso(received_at)}"' + tail).encode()

    def encode(self, batch: PacketBatch, suffix: bytes) -> list[bytes]:
        """One user record per row of ``batch``, in row order."""
        rows = len(batch)
        if rows == 0:
            return []
        prices = _price_style(batch, native=_format_rows is not None)
        columns: list[list[Any]] = [self._prefix_column(batch)]
        for source in _LAYOUT[batch.kind][1]:
            if source == _DEPTH:
                columns.extend(_depth_columns(batch, prices))
            elif source.startswith(_STAMP):
                columns.append(self._stamp_column(batch[source[len(_STAMP) :]].tolist()))
            elif source in _PRICE_COLUMNS:
                columns.extend(_price_columns(batch[source], prices))
            else:
                columns.append(batch[source].tolist())
        if _format_rows is not None:
            literals, kinds = _compiled(batch.kind, prices)
            return _format_rows(
                (*literals[:-1], literals[-1] + suffix), kinds, tuple(columns), rows
            )
        template = _template(batch.kind, prices) + suffix.replace(b"%", b"%%")
        return [template % values for values in zip(*columns, strict=True)]

    def _prefix_column(self, batch: PacketBatch) -> list[bytes]:
        # Per kind, the cached prefixes sit in an object array beside a sorted token
        # array: one searchsorted and one take per batch, no per-row Python.
        tokens = batch["instrument_token"]
        known, prefixes = self._prefixes[batch.kind]
        at = np.searchsorted(known, tokens)
        hit = known[np.minimum(at, known.size - 1)] == tokens if known.size else None
        if hit is None or not hit.all():
            self._add_prefixes(batch, tokens if hit is None else tokens[~hit])
            known, prefixes = self._prefixes[batch.kind]
            at = np.searchsorted(known, tokens)
        column: list[bytes] = prefixes[at].tolist()
        return column

    def _add_prefixes(self, batch: PacketBatch, missing: npt.NDArray[np.int64]) -> None:
        kind = batch.kind
        rows = {token: row for row, token in enumerate(batch["instrument_token"].tolist())}
        tradable = batch["tradable"].tolist()
        fresh = np.unique(missing)
        texts = [self._prefix(kind, t, tradable[rows[t]]) for t in fresh.tolist()]
        known, prefixes = self._prefixes[kind]
        tokens = np.concatenate([known, fresh])
        values = np.concatenate([prefixes, np.array(texts, dtype=object)])
        order = np.argsort(tokens)
        self._prefixes[kind] = (tokens[order], values[order])

    def _prefix(self, kind: PacketKind, token: int, tradable: bool) -> bytes:
        meta = self.meta(token)
        exchange = "null" if meta.exchange is None else _json_string(meta.exchange)
        symbol = "null" if meta.tradingsymbol is None else _json_string(meta.tradingsymbol)
        return (
            f'{{"schema":"tick/1","instrument_token":{token},"exchange":{exchange},'
            f'"tradingsymbol":{symbol},"underlying":{_json_string(meta.underlying)},'
            f'"mode":"{kind.mode}","tradable":{"true" if tradable else "false"},"last_price":'
        ).encode()

    def _stamp_column(self, seconds: list[int]) -> list[bytes]:
        stamps = self._stamps
        if len(stamps) > _MAX_CACHED_STAMPS:
            stamps.clear()
        out = []
        for s in seconds:
            text = stamps.get(s)
            if text is None:
                text = stamps[s] = datetime.fromtimestamp(s, IST).isoformat().encode()
            out.append(text)
        return out


def _depth_columns(batch: PacketBatch, prices: str) -> list[list[Any]]:
    """Depth values in template order: per side, per level, price, quantity, orders."""
    price, quantity, orders = batch["depth_price"], batch["depth_quantity"], batch["depth_orders"]
    if prices in (_REPR, _NATIVE):  # one list per price column: three tolist() calls in all
        rows = len(batch)
        columns = (a.reshape(rows, -1).T.tolist() for a in (price, quantity, orders))
        return [column for level in zip(*columns, strict=True) for column in level]
    out: list[list[Any]] = []
    for side in range(len(DEPTH_SIDES)):
        for level in range(DEPTH_LEVELS):
            out.extend(_price_columns(price[:, side, level], prices))
            out.append(quantity[:, side, level].tolist())
            out.append(orders[:, side, level].tolist())
    return out


# -- prices --------------------------------------------------------------------------
# repr() of a float is most of the cost of a record. A wire price is an int32
# divided by 100 or 10,000 (every segment but CDS), so it has at most four
# decimals and ten significant digits; repr of such a float is that decimal,
# written shortest (trailing zeros dropped, at least one decimal: "123.0"),
# because no shorter decimal lies within the float's half-ulp. So the text is
# the integer part ("%d") and a fraction looked up in a 10,000-entry table,
# both C-speed. Batches with a CDS row (divisor 1e7, where repr may switch to
# exponent notation) keep %r. The change column is computed, not a wire price:
# always %r. Tests compare both styles with repr over the whole wire range.

_PRICE_COLUMNS = frozenset(("last_price", "average_traded_price", "open", "high", "low", "close"))
_SCALE = 10_000
_FRACTIONS = np.array(
    [("." + (f"{i:04d}".rstrip("0") or "0")).encode() for i in range(_SCALE)], dtype=object
)
_SIGNS = np.array([b"", b"-"], dtype=object)
_TABLE_DIVISORS = np.array(
    [d in (100.0, float(_SCALE)) for d in DIVISOR_BY_SEGMENT], dtype=np.bool_
)
#: Price styles: repr for every price, unsigned split, signed split, and native: the C
#: formatter's price slot (``%p``), which does the split itself (``_recordfmt.c``).
_REPR, _UNSIGNED, _SIGNED, _NATIVE = "r", "u", "s", "n"
_STYLE_FORMAT = {_REPR: "%r", _UNSIGNED: "%d%s", _SIGNED: "%s%d%s", _NATIVE: "%p"}
_templates: dict[tuple[PacketKind, str], bytes] = {}
_compiled_templates: dict[tuple[PacketKind, str], tuple[tuple[bytes, ...], bytes]] = {}
_DIRECTIVE = re.compile(rb"%(.)")


def _price_style(batch: PacketBatch, *, native: bool) -> str:
    if native:  # the C price slot writes every segment's prices (CDS included)
        return _NATIVE
    segments = batch["instrument_token"] & 0xFF
    if not _TABLE_DIVISORS[segments].all():
        return _REPR
    columns = [batch[name] for name in _PRICE_COLUMNS if name in batch.columns]
    if "depth_price" in batch.columns:
        columns.append(batch["depth_price"])
    negative = any(bool((c < 0).any()) for c in columns)
    return _SIGNED if negative else _UNSIGNED


def _price_columns(values: npt.NDArray[np.float64], style: str) -> list[list[Any]]:
    if style in (_REPR, _NATIVE):
        return [values.tolist()]
    scaled = np.rint(values * _SCALE).astype(np.int64)
    if style == _UNSIGNED:
        whole, fraction = np.divmod(scaled, _SCALE)
        return [whole.tolist(), _FRACTIONS[fraction].tolist()]
    magnitude = np.abs(scaled)
    whole, fraction = np.divmod(magnitude, _SCALE)
    sign = _SIGNS[(scaled < 0).view(np.int8)]
    return [sign.tolist(), whole.tolist(), _FRACTIONS[fraction].tolist()]


def _template(kind: PacketKind, style: str) -> bytes:
    """The kind's body template with every wire price in ``style``."""
    key = (kind, style)
    template = _templates.get(key)
    if template is None:
        body, sources = _LAYOUT[kind]
        # Rebuild the body slot by slot: %r slots that hold wire prices change style.
        slots = body.split("%")
        out = [slots[0]]
        values = ["%s"]  # the prefix
        for source in sources:
            if source == _DEPTH:
                values += [_PRICE, "%d", "%d"] * (len(DEPTH_SIDES) * DEPTH_LEVELS)
            elif source.startswith(_STAMP):
                values.append("%s")
            elif source in _PRICE_COLUMNS:
                values.append(_PRICE)
            else:
                values.append("%r" if source == "change" else "%d")
        for slot, value in zip(slots[1:], values, strict=True):
            fmt = _STYLE_FORMAT[style] if value == _PRICE else value
            out.append(fmt + slot[1:])
        template = _templates[key] = "".join(out).encode()
    return template


def _compiled(kind: PacketKind, style: str) -> tuple[tuple[bytes, ...], bytes]:
    """The kind's template as the C formatter takes it: literal text around each slot, and
    each slot's kind (``d``, ``r`` or ``s``)."""
    key = (kind, style)
    compiled = _compiled_templates.get(key)
    if compiled is None:
        compiled = _compiled_templates[key] = split_template(_template(kind, style))
    return compiled


def split_template(template: bytes) -> tuple[tuple[bytes, ...], bytes]:
    """(literals, kinds) of a ``bytes`` template using only ``%d``, ``%r``, ``%s``, ``%p``
    (the C formatter's wire-price slot) and ``%%``."""
    literals: list[bytes] = []
    kinds = bytearray()
    text = bytearray()
    at = 0
    for match in _DIRECTIVE.finditer(template):
        text += template[at : match.start()]
        at = match.end()
        directive = match.group(1)
        if directive == b"%":
            text += b"%"
            continue
        if directive not in (b"d", b"r", b"s", b"p"):
            raise ValueError(f"unsupported directive %{directive.decode()} in {template!r}")
        literals.append(bytes(text))
        kinds += directive
        text.clear()
    if b"%" in template[at:]:
        raise ValueError(f"incomplete directive at the end of {template!r}")
    literals.append(bytes(text) + template[at:])
    return tuple(literals), bytes(kinds)


_PRICE = "price"
