"""Kite's text messages: JSON objects ``{"type": ..., "data": ...}`` on the same socket.

``order`` carries an order update (the same object as a postback), ``error``
a server error string, ``message`` an informational payload. Parsing never
raises: anything unusable comes back as :class:`InvalidMessage`, so a reader
loop handles every outcome with one ``match``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ticker_core.kite_wire._frame import EncodeError

#: A JSON value as ``json.loads`` returns it.
JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

TYPE_ORDER = "order"
TYPE_ERROR = "error"
TYPE_MESSAGE = "message"


@dataclass(frozen=True)
class OrderUpdate:
    """An order update (``type`` ``order``): Kite's order object, as sent."""

    data: dict[str, JsonValue]

    @property
    def order_id(self) -> str | None:
        """The order's id, when the update carries one as a string."""
        value = self.data.get("order_id")
        return value if isinstance(value, str) else None

    @property
    def status(self) -> str | None:
        """The order's status (OPEN, COMPLETE, REJECTED, ...), when present."""
        value = self.data.get("status")
        return value if isinstance(value, str) else None

    @property
    def update_key(self) -> str:
        """Which state of which order this is: ``order_id|time|status|filled_quantity``.

        The same fields identify an update wherever it arrives (this message,
        Kite's postback of it, the order book): the time is Kite's
        ``exchange_update_timestamp``, else ``order_timestamp`` (one-second
        resolution, so status and filled quantity tell apart states within a
        second). A field missing is left empty: the key is a hint for
        de-duplication and tracing, not a validation.
        """
        data = self.data
        when = data.get("exchange_update_timestamp") or data.get("order_timestamp")
        fields = (self.order_id, when, self.status, data.get("filled_quantity"))
        return "|".join("" if value is None else str(value) for value in fields)


@dataclass(frozen=True)
class ErrorMessage:
    """A server error (``type`` ``error``); the official client raises ``on_error`` with code 0."""

    message: str


@dataclass(frozen=True)
class ServerMessage:
    """An informational message (``type`` ``message``)."""

    data: JsonValue


@dataclass(frozen=True)
class UnknownMessage:
    """Well-formed JSON with a ``type`` this codec does not know; kept, not dropped."""

    type: str
    data: JsonValue


@dataclass(frozen=True)
class InvalidMessage:
    """A text message that cannot be used: not UTF-8, not JSON, or not the envelope."""

    reason: str
    raw: str


TextMessage = OrderUpdate | ErrorMessage | ServerMessage | UnknownMessage | InvalidMessage


def parse_text(message: str | bytes) -> TextMessage:
    """Classify one text message; never raises.

    An ``order`` whose ``data`` is not a non-empty object, or an ``error``
    whose ``data`` is not a string, is invalid (the official client ignores
    the former); the raw text stays in the result for logging.
    """
    if isinstance(message, bytes):
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return InvalidMessage("not UTF-8", message.decode("utf-8", "replace"))
    else:
        text = message
    try:
        envelope = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # RecursionError: pathologically nested arrays exceed the parser's depth.
        return InvalidMessage(f"not JSON: {type(exc).__name__}", text)
    if not isinstance(envelope, dict):
        return InvalidMessage("not a JSON object", text)
    kind = envelope.get("type")
    if not isinstance(kind, str):
        return InvalidMessage("no string 'type'", text)
    data: JsonValue = envelope.get("data")
    if kind == TYPE_ORDER:
        if isinstance(data, dict) and data:
            return OrderUpdate(data)
        return InvalidMessage("order without an object in 'data'", text)
    if kind == TYPE_ERROR:
        if isinstance(data, str):
            return ErrorMessage(data)
        return InvalidMessage("error without a string in 'data'", text)
    if kind == TYPE_MESSAGE:
        return ServerMessage(data)
    return UnknownMessage(kind, data)


def encode_text(message_type: str, data: JsonValue) -> str:
    """The text message ``{"type": message_type, "data": data}``, compact as Kite sends it.

    Raises :class:`EncodeError` when ``data`` is not JSON-serializable (NaN included).
    """
    try:
        return json.dumps(
            {"type": message_type, "data": data}, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"{message_type!r} data is not JSON: {exc}") from exc
