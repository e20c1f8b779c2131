"""The WebSocket API's client protocol: what a client sends, what it receives (pure).

Connecting
----------
The client offers two subprotocols in ``Sec-WebSocket-Protocol``: this
protocol's name, :data:`SUBPROTOCOL`, and its Cognito ID token (browsers can
set this header; a query string would end up in access logs). The server
selects :data:`SUBPROTOCOL`, never echoing the token.

Client messages (JSON text, routed on ``action``)
-------------------------------------------------
``{"action": "subscribe", "id": "1", "instruments": [256265, "NSE:INFY"],
"chains": [{"underlying": "NIFTY", "expiry": "2026-12-03"}],
"channels": ["ticks", "greeks"]}``
    Instruments by ``instrument_token`` or ``EXCHANGE:TRADINGSYMBOL``, option
    chains by underlying and expiry (every call and put of that expiry).
    ``channels`` defaults to both; Greeks exist for options only.
``{"action": "unsubscribe", "id": "2", "instruments": [...], "chains": [...],
"channels": [...]}`` or ``{"action": "unsubscribe", "all": true}``
    ``channels`` defaults to both.
``{"action": "ping", "id": "3"}``

``id`` is optional and echoed in the reply.

Server messages
---------------
Replies: ``{"type": "subscribed"|"unsubscribed"|"pong"|"error", "id": ...}``,
an error with a stable ``code`` (:class:`ErrorCode`) and a ``message``.
Data: ``{"type": "ticks", "data": [<tick/1 record>, ...]}`` and
``{"type": "greeks", "data": [<greeks/1 record>, ...]}``: one message per
stream batch carrying the latest record of each subscribed instrument that
changed (split only when it would pass API Gateway's 128 KB message limit).
A client that falls behind gets the latest value per instrument, not a
backlog: :func:`merge_records` is that rule, applied by the fan-out to
what it could not deliver and by the gateway to what a client has not read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ticker_core.kite import MAX_INSTRUMENT_TOKEN
from ticker_core.subscriptions import UNDERLYING_PATTERN

K = TypeVar("K")

SUBPROTOCOL: Final = "ticker.v1"
"""The protocol's name in ``Sec-WebSocket-Protocol``."""
MAX_MESSAGE_BYTES: Final = 128 * 1024
"""API Gateway's WebSocket message limit (frames are 32 KB; it reassembles them)."""
MAX_ID_CHARS: Final = 64
MAX_SELECTORS: Final = 1000
MAX_CHAINS: Final = 20
SYMBOL_PATTERN: Final = re.compile(r"^([A-Z][A-Z0-9_-]{0,15}):(\S{1,64})$")


class Channel(StrEnum):
    """A stream a client can subscribe to."""

    TICKS = "ticks"
    GREEKS = "greeks"


ALL_CHANNELS: Final = frozenset(Channel)


class Action(StrEnum):
    """The routes clients send to (API Gateway's ``$request.body.action``)."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    PING = "ping"


class ErrorCode(StrEnum):
    """Every error a client can receive; stable (clients branch on it)."""

    BAD_REQUEST = "bad_request"
    """Not JSON, not an object, or a field breaks its rule (``details`` names it)."""
    UNKNOWN_ACTION = "unknown_action"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    """Not in today's instruments: the feed cannot stream it."""
    UNKNOWN_CHAIN = "unknown_chain"
    GREEKS_OPTIONS_ONLY = "greeks_options_only"
    TOO_MANY_INSTRUMENTS = "too_many_instruments"
    """The connection would subscribe more than its limit."""
    RATE_LIMITED = "rate_limited"
    """More messages per second than the limit; the message was not acted on."""
    FEED_BUDGET_EXHAUSTED = "feed_budget_exhausted"
    """Streaming the new instruments would pass the budget clients may add to the feed."""
    TOO_MANY_CONNECTIONS = "too_many_connections"
    """On connect: the user has the most connections allowed."""
    BUSY = "busy"
    """Another request of this connection is still being applied; send again."""
    PROTOCOL_REQUIRED = "protocol_required"
    CONNECTION_CLOSED = "connection_closed"
    """The connection is no longer registered; connect again."""
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"


PROTOCOL_HEADER: Final = "Sec-WebSocket-Protocol"


def offered_protocols(header: str | None) -> list[str]:
    """The subprotocols of a ``Sec-WebSocket-Protocol`` header, in order."""
    return [p.strip() for p in (header or "").split(",") if p.strip()]


def token_from_protocols(protocols: list[str]) -> str | None:
    """The token a client offered beside :data:`SUBPROTOCOL` (None unless exactly one)."""
    others = [p for p in protocols if p != SUBPROTOCOL]
    return others[0] if len(others) == 1 and SUBPROTOCOL in protocols else None


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header's value, its name matched case-insensitively (API Gateway keeps the case sent)."""
    wanted = name.lower()
    return next((v for k, v in (headers or {}).items() if k.lower() == wanted), None)


# --------------------------------------------------------------------------- requests

TokenRef = Annotated[int, Field(ge=1, le=MAX_INSTRUMENT_TOKEN, strict=True)]
SymbolRef = Annotated[str, Field(pattern=SYMBOL_PATTERN.pattern)]


class ChainSelector(BaseModel):
    """Every call and put of one underlying and expiry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    underlying: Annotated[str, Field(pattern=UNDERLYING_PATTERN.pattern)]
    expiry: date
    exchange: Annotated[str, Field(pattern=r"^[A-Z]{2,8}$")] | None = None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(max_length=MAX_ID_CHARS)] | None = None


class _Selection(_Request):
    instruments: Annotated[list[TokenRef | SymbolRef], Field(max_length=MAX_SELECTORS)] = []
    chains: Annotated[list[ChainSelector], Field(max_length=MAX_CHAINS)] = []
    channels: Annotated[list[Channel], Field(min_length=1)] = [Channel.TICKS, Channel.GREEKS]

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[Channel]) -> list[Channel]:
        return sorted(set(value))


class SubscribeRequest(_Selection):
    """``subscribe``: add instruments and chains on the given channels."""

    action: Literal[Action.SUBSCRIBE]


class UnsubscribeRequest(_Selection):
    """``unsubscribe``: remove them (or everything, with ``all``)."""

    action: Literal[Action.UNSUBSCRIBE]
    all: bool = False


class PingRequest(_Request):
    """``ping``: a pong back (and proof the connection is alive)."""

    action: Literal[Action.PING]


Request = SubscribeRequest | UnsubscribeRequest | PingRequest
_MODELS: Final[dict[str, type[BaseModel]]] = {
    Action.SUBSCRIBE: SubscribeRequest,
    Action.UNSUBSCRIBE: UnsubscribeRequest,
    Action.PING: PingRequest,
}


class ProtocolError(Exception):
    """A client message this protocol refuses; ``code`` and ``message`` go back to it."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = dict(details or {})

    def reply(self) -> dict[str, Any]:
        """The error message for the client."""
        return error_reply(self.code, self.message, self.request_id, self.details)


def _request_id(payload: Mapping[str, Any]) -> str | None:
    value = payload.get("id")
    return value if isinstance(value, str) and len(value) <= MAX_ID_CHARS else None


def parse_request(body: str | bytes | None) -> Request:
    """The client message as a typed request; :class:`ProtocolError` saying what is wrong."""
    try:
        payload = json.loads(body or "")
    except (ValueError, TypeError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "The message is not JSON.") from exc
    if not isinstance(payload, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "The message must be a JSON object.")
    request_id = _request_id(payload)
    action = payload.get("action")
    model = _MODELS.get(action) if isinstance(action, str) else None
    if model is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_ACTION,
            f"Unknown action {str(action)[:40]!r}; send one of: {', '.join(Action)}.",
            request_id=request_id,
            details={"actions": [str(a) for a in Action]},
        )
    try:
        request = model.model_validate(payload)
    except ValidationError as exc:
        problems: list[dict[str, str]] = []
        for error in exc.errors(include_url=False, include_input=False):
            problem = {"field": _field(error["loc"]), "message": _rule(error)}
            if problem not in problems:  # a union reports each branch's failure
                problems.append(problem)
        first = problems[0]
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{first['field']}: {first['message']}",
            request_id=request_id,
            details={"problems": problems[:20]},
        ) from exc
    if isinstance(request, SubscribeRequest | UnsubscribeRequest):
        selects = request.instruments or request.chains
        if isinstance(request, UnsubscribeRequest) and request.all:
            if selects:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    "Send either all or instruments/chains, not both.",
                    request_id=request_id,
                )
        elif not selects:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "Name at least one instrument or chain.",
                request_id=request_id,
            )
    return request  # type: ignore[return-value]  # one of the three models


def _field(location: Sequence[int | str]) -> str:
    parts: list[str] = []
    for part in location:
        # A union's branch names (int, constrained-str) say nothing to a client.
        if isinstance(part, str) and (part in ("int", "str") or part.startswith("constrained-")):
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts).lstrip(".") or "message"


def _rule(error: Mapping[str, Any]) -> str:
    location = error.get("loc", ())
    if "instruments" in location:
        return (
            "must be an instrument token (an integer in 1..4294967295) or 'EXCHANGE:TRADINGSYMBOL'"
        )
    if error.get("type") == "extra_forbidden":
        return "is not a field of this action"
    return str(error.get("msg", "is invalid"))


# --------------------------------------------------------------------------- replies


def error_reply(
    code: ErrorCode,
    message: str,
    request_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An error message."""
    reply: dict[str, Any] = {"type": "error", "id": request_id, "code": str(code)}
    reply["message"] = message
    if details:
        reply["details"] = dict(details)
    return reply


def encode(message: Mapping[str, Any]) -> str:
    """A reply as the text the client receives (compact JSON)."""
    return json.dumps(message, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- data messages

_PREFIX: Final = {channel: f'{{"type":"{channel}","data":['.encode() for channel in Channel}
_SUFFIX: Final = b"]}"


def data_message_chunks(
    channel: Channel, records: Iterable[tuple[K, bytes]], max_bytes: int = MAX_MESSAGE_BYTES
) -> Iterator[tuple[list[K], bytes]]:
    """The data messages carrying ``records`` (key, raw ``tick/1``/``greeks/1`` JSON), in order.

    One message unless it would pass ``max_bytes``; each comes with the keys
    of the records it carries. A record too large for a message on its own is
    sent alone (API Gateway would refuse it: records are far below the limit).
    """
    prefix = _PREFIX[channel]
    room = max_bytes - len(prefix) - len(_SUFFIX)
    keys: list[K] = []
    chunk: list[bytes] = []
    size = 0
    for key, record in records:
        extra = len(record) + (1 if chunk else 0)
        if chunk and size + extra > room:
            yield keys, prefix + b",".join(chunk) + _SUFFIX
            keys, chunk, size, extra = [], [], 0, len(record)
        keys.append(key)
        chunk.append(record)
        size += extra
    if chunk:
        yield keys, prefix + b",".join(chunk) + _SUFFIX


def data_messages(
    channel: Channel, records: Iterable[bytes], max_bytes: int = MAX_MESSAGE_BYTES
) -> list[bytes]:
    """The data messages carrying ``records`` (see :func:`data_message_chunks`)."""
    return [m for _, m in data_message_chunks(channel, enumerate(records), max_bytes)]


def parse_data_message(body: bytes) -> tuple[Channel, dict[int, bytes]] | None:
    """A data message's channel and its records by instrument (latest wins); None otherwise."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or message.get("type") not in ALL_CHANNELS:
        return None
    data = message.get("data")
    if not isinstance(data, list):
        return None
    records: dict[int, bytes] = {}
    for record in data:
        token = record.get("instrument_token") if isinstance(record, dict) else None
        if isinstance(token, bool) or not isinstance(token, int):
            return None
        records[token] = json.dumps(record, separators=(",", ":")).encode()
    return Channel(message["type"]), records


def merge_records(older: dict[int, bytes], newer: Mapping[int, bytes]) -> dict[int, bytes]:
    """Conflation: the latest record per instrument (``older`` is updated and returned)."""
    older.update(newer)
    return older
