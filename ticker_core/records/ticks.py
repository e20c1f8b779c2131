"""Tick user records: one JSON object per tick, schema ``tick/1`` (``schemas/tick.v1.json``).

Input is the tick dict the official kiteconnect client produces (``on_ticks``)
for any packet mode (ltp, index quote/full, quote, full), plus the envelope the
feed adds: the underlying (the partition key), when the frame was received,
and optionally the instrument's exchange, tradingsymbol and the feed account.

Output is compact, ASCII, RFC 8259 JSON with keys in the schema's order, so
equal ticks give equal bytes. Fields beyond the packet's mode are absent, not
null. Exchange timestamps are rendered in IST, ``received_at`` in UTC with
microseconds.

Speed: the feed encodes about 100,000 ticks/s. ``json`` on a dict costs
building the dict plus the encoder's generic walk; the fast path here formats
the five known kiteconnect shapes with f-strings after cheap exact-type and
finiteness checks (about 2x faster, see ``BENCHMARKS.md``). Anything else
(numpy scalars, an unusual key set, a bad value) takes the checked path,
which validates every field and either produces the very same bytes the fast
path would have or raises :class:`RecordEncodeError`; the tests hold the two
paths byte-identical.

Reading: :func:`check_tick` is the one statement of the schema's rules for
readers (field set, types, bounds), applied to an object parsed by any JSON
library: :func:`decode_tick` here (the stdlib), the Lambdas with orjson.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from ticker_core.kite import MAX_INSTRUMENT_TOKEN, MODES
from ticker_core.kite_wire import DEPTH_LEVELS
from ticker_core.records._jsonfmt import (
    EARLIEST_INSTANT,
    ENCODER,
    decoded_choice,
    decoded_instant,
    decoded_integer,
    decoded_number,
    decoded_object,
    decoded_string_or_null,
    decoded_text,
    exchange_time,
    fail,
    integer,
    json_string,
    loads_object,
    number,
    one_of,
    require_fields,
    string_or_null,
    text,
    timestamp_or_none,
    utc_time,
)
from ticker_core.records.errors import (
    FieldError,
    FieldRangeError,
    RecordEncodeError,
    SchemaVersionError,
)

TICK_SCHEMA: Final = "tick/1"
"""Value of every tick record's ``schema`` field."""

MAX_DEPTH_LEVELS: Final = 5
"""Kite's full mode carries five bid and five ask levels."""

KITE_NEVER: Final = EARLIEST_INSTANT
"""Kite writes 0 for a time that has not happened (an untraded contract's last trade
time); a decoded record carries None for it, as for an absent time."""

_MODES: Final[frozenset[str | None]] = frozenset(MODES)
_MODE_JSON: Final = {mode: f'"{mode}"' for mode in MODES}
_REQUIRED_IN: Final = ("instrument_token", "mode", "tradable", "last_price")

TICK_FIELDS: Final = (
    "schema", "instrument_token", "exchange", "tradingsymbol", "underlying", "mode", "tradable",
    "last_price", "last_traded_quantity", "average_traded_price", "volume_traded",
    "total_buy_quantity", "total_sell_quantity", "ohlc", "change", "last_trade_time", "oi",
    "oi_day_high", "oi_day_low", "exchange_timestamp", "depth", "received_at", "account",
)  # fmt: skip
"""Every field of a ``tick/1`` record, in the schema's order (none other is allowed)."""

TICK_REQUIRED: Final = frozenset(
    {"schema", "instrument_token", "underlying", "mode", "tradable", "last_price", "received_at"}
)
TICK_QUANTITIES: Final = (
    "last_traded_quantity", "volume_traded", "total_buy_quantity", "total_sell_quantity", "oi",
    "oi_day_high", "oi_day_low",
)  # fmt: skip
"""The optional integer fields."""

TICK_PRICES: Final = ("average_traded_price", "change")
"""The optional number fields outside ``ohlc``."""

OHLC_FIELDS: Final = ("open", "high", "low", "close")
KITE_TIMES: Final = ("last_trade_time", "exchange_timestamp")
"""The exchange's optional timestamps (null allowed; Kite's 0 decodes as None)."""

DEPTH_SIDES: Final = ("buy", "sell")
DEPTH_LEVEL_FIELDS: Final = ("price", "quantity", "orders")

_LEVEL_VALUES: Final = operator.itemgetter(*DEPTH_LEVEL_FIELDS)
_OHLC_VALUES: Final = operator.itemgetter(*OHLC_FIELDS)
_FLOAT: Final = {float}
_INT: Final = {int}
_FIELD_SET: Final = frozenset(TICK_FIELDS)
_OHLC_SET: Final = frozenset(OHLC_FIELDS)
_DEPTH_SET: Final = frozenset(DEPTH_SIDES)
_LEVEL_SET: Final = frozenset(DEPTH_LEVEL_FIELDS)


_Envelope = tuple[str, datetime, str | None, str | None, str | None]
"""underlying, received_at, exchange, tradingsymbol, account."""


class _CheckedPathError(Exception):
    """The fast path cannot vouch for this tick; the checked path decides."""


def encode_tick(
    tick: Mapping[str, Any],
    *,
    underlying: str,
    received_at: datetime,
    exchange: str | None = None,
    tradingsymbol: str | None = None,
    account: str | None = None,
) -> bytes:
    """One tick as a ``tick/1`` JSON user record (UTF-8 bytes).

    ``tick`` is a kiteconnect tick dict; keys the schema does not know are
    ignored. Timestamps must be timezone-aware datetimes (or None where Kite
    may omit them). ``exchange`` and ``tradingsymbol`` are written as null when
    not known; ``account`` is left out when None.

    Raises :class:`RecordEncodeError` for a tick the schema cannot describe: a
    missing required field, a wrong type, a non-finite price, a naive
    timestamp, more than five depth levels.
    """
    envelope = (underlying, received_at, exchange, tradingsymbol, account)
    try:
        encoded = _encode_fast(tick, envelope)
    except Exception:  # whatever the fast path trips on, the checked path decides
        encoded = _encode_checked(tick, envelope)
    return encoded.encode()


def decode_tick(data: bytes) -> dict[str, Any]:
    """A ``tick/1`` user record back as a dict, checked by :func:`check_tick`.

    Raises a :class:`RecordDecodeError` subclass when ``data`` is not strict
    JSON, not an object, of another schema version (SchemaVersionError), or
    breaks a field's rule (FieldError, FieldRangeError).
    """
    return check_tick(loads_object(data, TICK_SCHEMA))


def check_tick(record: dict[str, Any]) -> dict[str, Any]:
    """A parsed ``tick/1`` object checked against ``tick.v1.json``; returns ``record``.

    The schema's every rule, once, for every reader of ticks whatever parsed
    the JSON: its field set (no other field), the required fields, each
    field's type (integers as JSON Schema has them: 2.0 is the integer 2),
    the token's 32 bits, the modes, at most five depth levels, orders >= 0;
    and what a JSON Schema cannot say: numbers are finite, timestamps are ISO
    8601 with a UTC offset within Kite's range (1970 to 2106). In place,
    timestamps become aware datetimes and integral floats ints; Kite's 0 for
    "never" (:data:`KITE_NEVER`) becomes None. Raises :class:`FieldError`
    (bad_field) or :class:`FieldRangeError` (out_of_range) naming the field.
    """
    # Each check takes the common case inline (an exact type and a bound) and hands
    # anything else to the decoders in _jsonfmt, which accept or name the fault: the
    # depth levels alone are 30 values per full tick.
    if record.get("schema") != TICK_SCHEMA:
        raise SchemaVersionError(f"schema {record.get('schema')!r:.40} is not {TICK_SCHEMA!r}")
    keys = record.keys()
    if not keys <= _FIELD_SET:
        decoded_object("tick", record, _FIELD_SET)
    if not keys >= TICK_REQUIRED:
        require_fields("", record, TICK_REQUIRED)
    token = record["instrument_token"]
    if type(token) is not int:
        token = record["instrument_token"] = decoded_integer("instrument_token", token)
    if not 0 <= token <= MAX_INSTRUMENT_TOKEN:
        raise FieldRangeError("instrument_token", "must be an unsigned 32-bit integer")
    underlying = record["underlying"]
    if type(underlying) is not str or not underlying:
        decoded_text("underlying", underlying)
    mode = record["mode"]
    if type(mode) is not str or mode not in _MODES:
        decoded_choice("mode", mode, _MODES)
    if type(record["tradable"]) is not bool:
        raise FieldError("tradable", "must be a boolean")
    get = record.get
    for name in ("exchange", "tradingsymbol"):
        value = get(name)
        if value is not None and type(value) is not str:
            decoded_string_or_null(name, value)
    if type(get("account", "")) is not str:
        raise FieldError("account", "must be a string")
    # All quantities ints, all prices finite floats (absent ones stand in as such): Kite's case.
    if set(map(type, [get(name, 0) for name in TICK_QUANTITIES])) != _INT:
        for name in TICK_QUANTITIES:
            if name in keys:
                record[name] = decoded_integer(name, record[name])
    prices = [record["last_price"], *[get(name, 0.0) for name in TICK_PRICES]]
    total = sum(prices) if set(map(type, prices)) == _FLOAT else math.nan
    if total - total != 0.0:  # not all finite floats (or an overflowing sum): look closer
        decoded_number("last_price", record["last_price"])
        for name in TICK_PRICES:
            if name in keys:
                decoded_number(name, record[name])
    if "ohlc" in keys:
        _check_ohlc(record["ohlc"])
    for name in KITE_TIMES:
        value = record.get(name)
        if value is not None:
            instant = record[name] = decoded_instant(name, value)
            if instant.year <= KITE_NEVER.year and instant == KITE_NEVER:
                record[name] = None
    record["received_at"] = decoded_instant("received_at", record["received_at"])
    if "depth" in keys:
        _check_depth(record["depth"])
    return record


def _check_ohlc(value: object) -> None:
    if type(value) is dict and len(value) == len(OHLC_FIELDS) and value.keys() == _OHLC_SET:
        prices = _OHLC_VALUES(value)
        total = sum(prices) if set(map(type, prices)) == _FLOAT else math.nan
        if total - total == 0.0:  # four finite floats (an overflowing sum: the long way)
            return
    ohlc = decoded_object("ohlc", value, _OHLC_SET)
    require_fields("ohlc", ohlc, _OHLC_SET)
    for name in OHLC_FIELDS:
        decoded_number(f"ohlc.{name}", ohlc[name])


def _check_depth(value: object) -> None:
    depth = decoded_object("depth", value, _DEPTH_SET)
    require_fields("depth", depth, _DEPTH_SET)
    for side in DEPTH_SIDES:
        levels = depth[side]
        where = f"depth.{side}"
        if type(levels) is not list:
            raise FieldError(where, "must be an array")
        if len(levels) > MAX_DEPTH_LEVELS:
            raise FieldRangeError(where, f"has more than {MAX_DEPTH_LEVELS} levels")
        if not _plain_levels(levels):
            for level in levels:
                _check_level(where, level)


def _plain_levels(levels: list[Any]) -> bool:
    """Whether every level is exactly {price: finite float, quantity: int, orders: int >= 0}.

    Kite's case, checked a side at a time; anything else is for :func:`_check_level`.
    """
    try:
        # Three keys, all three of them found: exactly the level's field set.
        rows = [_LEVEL_VALUES(level) for level in levels if len(level) == 3]
    except (KeyError, TypeError):
        return False
    if len(rows) != len(levels):
        return False
    for price, quantity, orders in rows:
        if not (
            type(price) is float
            and price - price == 0.0  # finite
            and type(quantity) is int
            and type(orders) is int
            and orders >= 0
        ):
            return False
    return True


def _check_level(where: str, value: object) -> None:
    level = decoded_object(where, value, _LEVEL_SET)
    require_fields(where, level, _LEVEL_SET)
    decoded_number(f"{where}.price", level["price"])
    level["quantity"] = decoded_integer(f"{where}.quantity", level["quantity"])
    orders = level["orders"] = decoded_integer(f"{where}.orders", level["orders"])
    if orders < 0:
        raise FieldRangeError(f"{where}.orders", "must be >= 0")


# -- fast path ---------------------------------------------------------------
# Kite's shapes, by key count: 4 ltp, 6 index quote, 7 index full, 11 quote,
# 17 full. A dict of that size in which every key read below exists has
# exactly that key set, so no field is silently left out. Values must have the
# exact types kiteconnect produces (int, float; change may be int 0) and be
# finite; then repr() is what json writes.


def _encode_fast(t: Mapping[str, Any], envelope: _Envelope) -> str:
    underlying, received_at, exchange, tradingsymbol, account = envelope
    size = len(t)
    token = t["instrument_token"]
    last_price = t["last_price"]
    tradable = t["tradable"]
    if type(token) is not int or type(last_price) is not float or not underlying:
        raise _CheckedPathError
    if not 0 <= token <= MAX_INSTRUMENT_TOKEN:
        raise _CheckedPathError
    if last_price - last_price != 0.0:  # NaN or infinite
        raise _CheckedPathError
    tradable_json = "true" if tradable is True else "false" if tradable is False else None
    if tradable_json is None:
        raise _CheckedPathError
    if size == 4:
        middle = ""
    elif size == 6:
        middle = _fast_ohlc_change(t)
    elif size == 7:
        timestamp = _fast_time(t["exchange_timestamp"])
        middle = f'{_fast_ohlc_change(t)},"exchange_timestamp":{timestamp}'
    elif size == 11:
        middle = _fast_quote(t)
    elif size == 17:
        middle = _fast_quote(t) + _fast_full(t)
    else:
        raise _CheckedPathError
    return (
        f'{{"schema":"tick/1","instrument_token":{token!r},'
        f'"exchange":{"null" if exchange is None else json_string(exchange)},'
        f'"tradingsymbol":{"null" if tradingsymbol is None else json_string(tradingsymbol)},'
        f'"underlying":{json_string(underlying)},"mode":{_MODE_JSON[t["mode"]]},'
        f'"tradable":{tradable_json},'
        f'"last_price":{last_price!r}{middle},"received_at":"{utc_time(received_at)}"'
        + ("}" if account is None else f',"account":{json_string(account)}}}')
    )


def _fast_time(value: datetime | None) -> str:
    return "null" if value is None else f'"{exchange_time(value)}"'


def _fast_ohlc_change(t: Mapping[str, Any]) -> str:
    ohlc = t["ohlc"]
    op, hi, lo, cl = ohlc["open"], ohlc["high"], ohlc["low"], ohlc["close"]
    change = t["change"]
    if not (type(op) is type(hi) is type(lo) is type(cl) is float):
        raise _CheckedPathError
    if type(change) is not float and type(change) is not int:
        raise _CheckedPathError
    total = op + hi + lo + cl + change
    if total - total != 0.0:
        raise _CheckedPathError
    return (
        f',"ohlc":{{"open":{op!r},"high":{hi!r},"low":{lo!r},"close":{cl!r}}},"change":{change!r}'
    )


def _fast_quote(t: Mapping[str, Any]) -> str:
    ltq = t["last_traded_quantity"]
    atp = t["average_traded_price"]
    volume = t["volume_traded"]
    buy_qty = t["total_buy_quantity"]
    sell_qty = t["total_sell_quantity"]
    if not (type(ltq) is type(volume) is type(buy_qty) is type(sell_qty) is int):
        raise _CheckedPathError
    if type(atp) is not float or atp - atp != 0.0:
        raise _CheckedPathError
    return (
        f',"last_traded_quantity":{ltq!r},"average_traded_price":{atp!r},'
        f'"volume_traded":{volume!r},"total_buy_quantity":{buy_qty!r},'
        f'"total_sell_quantity":{sell_qty!r}' + _fast_ohlc_change(t)
    )


def _fast_full(t: Mapping[str, Any]) -> str:
    oi, oi_high, oi_low = t["oi"], t["oi_day_high"], t["oi_day_low"]
    if not (type(oi) is type(oi_high) is type(oi_low) is int):
        raise _CheckedPathError
    depth = t["depth"]
    return (
        f',"last_trade_time":{_fast_time(t["last_trade_time"])},"oi":{oi!r},'
        f'"oi_day_high":{oi_high!r},"oi_day_low":{oi_low!r},'
        f'"exchange_timestamp":{_fast_time(t["exchange_timestamp"])},'
        f'"depth":{{"buy":[{_fast_levels(depth["buy"])}],"sell":[{_fast_levels(depth["sell"])}]}}'
    )


def _fast_levels(levels: list[Mapping[str, Any]]) -> str:
    if len(levels) > DEPTH_LEVELS:
        raise _CheckedPathError
    out = []
    for level in levels:
        price, quantity, orders = level["price"], level["quantity"], level["orders"]
        if type(price) is not float or price - price != 0.0:
            raise _CheckedPathError
        if type(quantity) is not int or type(orders) is not int or orders < 0:
            raise _CheckedPathError
        out.append(f'{{"price":{price!r},"quantity":{quantity!r},"orders":{orders!r}}}')
    return ",".join(out)


# -- checked path ------------------------------------------------------------
# Builds the same object as a dict, validating each field, and lets json
# write it. The output equals the fast path's for every tick both accept.


def _ohlc(name: str, value: object) -> dict[str, float | int]:
    if not isinstance(value, Mapping):
        fail(name, "must be a mapping", value)
    try:
        return {k: number(f"{name}.{k}", value[k]) for k in ("open", "high", "low", "close")}
    except KeyError as exc:
        raise RecordEncodeError(f"{name} lacks {exc}") from exc


def _levels(name: str, value: object) -> list[dict[str, float | int]]:
    if not isinstance(value, list | tuple) or len(value) > DEPTH_LEVELS:
        fail(name, f"must be a list of at most {DEPTH_LEVELS} levels", value)
    levels = []
    for i, level in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(level, Mapping):
            fail(where, "must be a mapping", level)
        try:
            levels.append(
                {
                    "price": number(f"{where}.price", level["price"]),
                    "quantity": integer(f"{where}.quantity", level["quantity"]),
                    "orders": _orders(f"{where}.orders", level["orders"]),
                }
            )
        except KeyError as exc:
            raise RecordEncodeError(f"{where} lacks {exc}") from exc
    return levels


def _token(value: object) -> int:
    token = integer("instrument_token", value)
    if not 0 <= token <= MAX_INSTRUMENT_TOKEN:
        fail("instrument_token", "must be an unsigned 32-bit integer", value)
    return token


def _orders(name: str, value: object) -> int:
    orders = integer(name, value)
    if orders < 0:
        fail(name, "must be >= 0", value)
    return orders


def _depth(name: str, value: object) -> dict[str, list[dict[str, float | int]]]:
    if not isinstance(value, Mapping) or "buy" not in value or "sell" not in value:
        fail(name, "must be a mapping with buy and sell", value)
    return {side: _levels(f"{name}.{side}", value[side]) for side in ("buy", "sell")}


def _tick_time(name: str, value: object) -> str | None:
    return timestamp_or_none(name, value, exchange_time)


# Optional tick fields in schema order, with their checks.
_OPTIONAL: Final[tuple[tuple[str, Callable[[str, Any], object]], ...]] = (
    ("last_traded_quantity", integer),
    ("average_traded_price", number),
    ("volume_traded", integer),
    ("total_buy_quantity", integer),
    ("total_sell_quantity", integer),
    ("ohlc", _ohlc),
    ("change", number),
    ("last_trade_time", _tick_time),
    ("oi", integer),
    ("oi_day_high", integer),
    ("oi_day_low", integer),
    ("exchange_timestamp", _tick_time),
    ("depth", _depth),
)


def _encode_checked(t: Mapping[str, Any], envelope: _Envelope) -> str:
    underlying, received_at, exchange, tradingsymbol, account = envelope
    if not isinstance(t, Mapping):
        fail("tick", "must be a mapping", t)
    missing = [name for name in _REQUIRED_IN if name not in t]
    if missing:
        raise RecordEncodeError(f"tick lacks {missing}")
    tradable = t["tradable"]
    if type(tradable) is not bool:
        fail("tradable", "must be a bool", tradable)
    record: dict[str, object] = {
        "schema": TICK_SCHEMA,
        "instrument_token": _token(t["instrument_token"]),
        "exchange": string_or_null("exchange", exchange),
        "tradingsymbol": string_or_null("tradingsymbol", tradingsymbol),
        "underlying": text("underlying", underlying),
        "mode": one_of("mode", t["mode"], _MODES),
        "tradable": tradable,
        "last_price": number("last_price", t["last_price"]),
    }
    for name, check in _OPTIONAL:
        if name in t:
            record[name] = check(name, t[name])
    record["received_at"] = timestamp_or_none("received_at", received_at, utc_time)
    if record["received_at"] is None:
        fail("received_at", "must be a timezone-aware datetime", received_at)
    if account is not None:
        record["account"] = string_or_null("account", account)
    return ENCODER.encode(record)
