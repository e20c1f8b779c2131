"""The WebSocket API's routes: connect, disconnect, subscribe, unsubscribe, ping (pure logic).

Every state change goes through the stores of :mod:`lambdas.ws.state`; the
instruments come from the day's registry. A route's answer is what API
Gateway sends back: a status for ``$connect`` (anything but 2xx refuses the
connection), a reply message for the others (the routes have a route
response).

Order of writes, so that a crash between two of them loses nothing a client
was told it has: a subscribe joins the subscriber index first and records
the connection's subscriptions after (a crash leaves index entries that the
client asked for; sending the request again completes it), and an
unsubscribe leaves the index first (a crash leaves the connection listing
instruments it no longer receives; sending it again completes it). Both run
under the connection's lease, so two messages of one connection never
interleave their writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Protocol

from lambdas.ws.protocol import (
    ALL_CHANNELS,
    SUBPROTOCOL,
    ChainSelector,
    Channel,
    ErrorCode,
    PingRequest,
    ProtocolError,
    SubscribeRequest,
    UnsubscribeRequest,
    error_reply,
    parse_request,
)
from lambdas.ws.state import (
    BusyError,
    Connection,
    ConnectionGoneError,
    ConnectionStore,
    FeedBudgetExhaustedError,
    Identity,
    SubscriberIndex,
    Subscriptions,
)
from ticker_core.instruments import Instrument, OptionChain

MAX_LISTED = 20
"""Instruments named in one error's details, at most."""


class InstrumentLookup(Protocol):
    """The day's instruments, as far as subscriptions go (the registry)."""

    def by_token(self, token: int) -> Instrument | None:
        """The instrument with this token, if listed."""
        ...

    def by_symbol(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        """The instrument Kite calls ``exchange:tradingsymbol``, if listed."""
        ...

    def option_chain(
        self, underlying: str, expiry: date, *, exchange: str | None = None
    ) -> OptionChain | None:
        """The underlying's chain for one expiry, if listed."""
        ...


@dataclass(frozen=True)
class Limits:
    """What one user and one connection may do."""

    max_instruments: int = 1000
    """Instruments one connection may subscribe (any channels)."""
    messages_per_second: int = 10
    """Client messages one connection may send per second."""
    max_connections_per_user: int = 5
    feed_budget: int = 2000
    """Instruments clients may add to the feed's desired set, in all."""
    connection_ttl_seconds: float = 2 * 3600 + 600
    """API Gateway closes a connection after two hours; its entry expires a little later."""
    lease_seconds: float = 10.0
    busy_wait_seconds: float = 3.0


@dataclass(frozen=True)
class ConnectAnswer:
    """``$connect``'s answer: 200 accepts (selecting the protocol), anything else refuses."""

    status: int
    reply: dict[str, Any] | None = None
    protocol: str | None = None


def identity_from_authorizer(context: Mapping[str, Any] | None) -> Identity | None:
    """The user the authorizer verified (its context), or None when there is none."""
    if not context:
        return None
    user_id = context.get("sub") or context.get("principalId")
    if not isinstance(user_id, str) or not user_id:
        return None
    username = context.get("username")
    return Identity(user_id, username if isinstance(username, str) and username else user_id)


class Routes:
    """The routes over the stores (one per execution environment)."""

    def __init__(
        self,
        connections: ConnectionStore,
        subscribers: SubscriberIndex,
        instruments: Callable[[], InstrumentLookup],
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._connections = connections
        self._subscribers = subscribers
        self._instruments = instruments
        self.limits = limits
        self._clock = clock
        self._sleep = sleep

    # -- $connect / $disconnect -------------------------------------------------------

    def connect(
        self, connection_id: str, identity: Identity | None, protocols: list[str]
    ) -> ConnectAnswer:
        """Register the connection of a user the authorizer verified."""
        if identity is None:  # the authorizer always passes one: a misconfigured route
            return ConnectAnswer(401, error_reply(ErrorCode.INTERNAL_ERROR, "Unauthorized."))
        if SUBPROTOCOL not in protocols:
            message = f"Offer the subprotocol {SUBPROTOCOL} (and the token) when connecting."
            return ConnectAnswer(400, error_reply(ErrorCode.PROTOCOL_REQUIRED, message))
        now = self._clock()
        connection = Connection(
            connection_id,
            identity,
            connected_at=now,
            expires_at=now + self.limits.connection_ttl_seconds,
        )
        if not self._connections.open(
            connection, max_per_user=self.limits.max_connections_per_user, now=now
        ):
            limit = self.limits.max_connections_per_user
            return ConnectAnswer(
                429,
                error_reply(
                    ErrorCode.TOO_MANY_CONNECTIONS,
                    f"A user may hold {limit} connections at once; close one first.",
                    details={"limit": limit},
                ),
            )
        return ConnectAnswer(200, protocol=SUBPROTOCOL)

    def disconnect(self, connection_id: str) -> Connection | None:
        """Forget the connection and everything it subscribed (also after a 410)."""
        return remove_connection(self._connections, self._subscribers, connection_id)

    # -- messages ---------------------------------------------------------------------

    def message(self, connection_id: str, body: str | bytes | None) -> dict[str, Any]:
        """One client message -> its reply (an error reply for anything refused).

        Every message counts against the rate, a malformed one too.
        """
        request_id: str | None = None
        try:
            try:
                request = parse_request(body)
            except ProtocolError as exc:
                malformed: ProtocolError | None = exc
                request_id = exc.request_id
            else:
                malformed, request_id = None, request.id
            if not self._connections.take_message_slot(
                connection_id, per_second=self.limits.messages_per_second, now=self._clock()
            ):
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"More than {self.limits.messages_per_second} messages in a second; "
                    "this one was not acted on.",
                    details={"limit_per_second": self.limits.messages_per_second},
                )
            if malformed is not None:
                raise malformed
            if isinstance(request, PingRequest):
                return {"type": "pong", "id": request_id, "server_time": _iso(self._clock())}
            if isinstance(request, SubscribeRequest):
                return self._subscribe(connection_id, request)
            return self._unsubscribe(connection_id, request)
        except ProtocolError as exc:
            exc.request_id = exc.request_id or request_id
            return exc.reply()
        except ConnectionGoneError:
            return error_reply(
                ErrorCode.CONNECTION_CLOSED, "This connection is closed; connect again.", request_id
            )
        except BusyError:  # the lease expired mid-request and another took it: nothing kept
            return error_reply(
                ErrorCode.BUSY,
                "Another request of this connection was applied meanwhile; send this again.",
                request_id,
            )

    def _leased(self, connection_id: str) -> Connection:
        deadline = self._clock() + self.limits.busy_wait_seconds
        delay = 0.05
        while True:
            try:
                return self._connections.lease(
                    connection_id, now=self._clock(), seconds=self.limits.lease_seconds
                )
            except BusyError:
                if self._clock() + delay > deadline:
                    raise ProtocolError(
                        ErrorCode.BUSY,
                        "Another request of this connection is being applied; send this again.",
                    ) from None
                self._sleep(delay)
                delay = min(delay * 2, 0.5)

    def _subscribe(self, connection_id: str, request: SubscribeRequest) -> dict[str, Any]:
        wanted = self._select(request.instruments, request.chains, set(request.channels))
        channels = applicable_channels(wanted, set(request.channels))
        connection = self._leased(connection_id)
        try:
            merged = merge_subscriptions(connection.subscriptions, channels)
            if len(merged) > self.limits.max_instruments:
                raise ProtocolError(
                    ErrorCode.TOO_MANY_INSTRUMENTS,
                    f"A connection may subscribe {self.limits.max_instruments} instruments; "
                    f"this would make {len(merged)}.",
                    details={
                        "limit": self.limits.max_instruments,
                        "subscribed": len(connection.subscriptions),
                        "requested": len(channels),
                    },
                )
            additions = subtract_subscriptions(channels, connection.subscriptions)
            if additions:
                self._join(connection_id, additions)
            try:
                self._connections.commit(replace(connection, subscriptions=merged))
            except BaseException:
                if additions:
                    self._subscribers.leave(connection_id, additions)
                raise
        except BaseException:
            self._connections.release(connection)
            raise
        return {
            "type": "subscribed",
            "id": request.id,
            "instruments": [
                _described(wanted[token], sorted(merged[token])) for token in sorted(channels)
            ],
            "total": len(merged),
        }

    def _join(self, connection_id: str, additions: Subscriptions) -> None:
        try:
            self._subscribers.join(connection_id, additions, budget=self.limits.feed_budget)
        except FeedBudgetExhaustedError as exc:
            raise ProtocolError(
                ErrorCode.FEED_BUDGET_EXHAUSTED,
                f"The feed can stream {exc.available} more instruments for clients; "
                f"this needs {exc.needed}.",
                details={"needed": exc.needed, "available": exc.available},
            ) from exc
        except BaseException:
            self._subscribers.leave(connection_id, additions)  # what was joined before it failed
            raise

    def _unsubscribe(self, connection_id: str, request: UnsubscribeRequest) -> dict[str, Any]:
        selected = (
            None
            if request.all
            else set(self._select(request.instruments, request.chains, set(request.channels)))
        )
        connection = self._leased(connection_id)
        try:
            current = connection.subscriptions
            tokens = current.keys() if selected is None else selected & current.keys()
            removals = {
                token: current[token] & frozenset(request.channels)
                for token in tokens
                if current[token] & frozenset(request.channels)
            }
            remaining = subtract_subscriptions(current, removals)
            if removals:
                self._subscribers.leave(connection_id, removals)
            self._connections.commit(replace(connection, subscriptions=remaining))
        except BaseException:
            self._connections.release(connection)
            raise
        return {
            "type": "unsubscribed",
            "id": request.id,
            "instruments": sorted(
                token for token, channels in removals.items() if token not in remaining
            ),
            "total": len(remaining),
        }

    # -- instruments ------------------------------------------------------------------

    def _select(
        self,
        refs: Iterable[int | str],
        chains: Iterable[ChainSelector],
        channels: set[Channel],
    ) -> dict[int, Instrument]:
        """The instruments named, by token; :class:`ProtocolError` naming any unknown."""
        registry = self._instruments()
        found: dict[int, Instrument] = {}
        unknown: list[int | str] = []
        for ref in refs:
            if isinstance(ref, int):
                instrument = registry.by_token(ref)
            else:
                exchange, _, symbol = ref.partition(":")
                instrument = registry.by_symbol(exchange, symbol)
            if instrument is None:
                unknown.append(ref)
            else:
                found[instrument.instrument_token] = instrument
        if unknown:
            raise ProtocolError(
                ErrorCode.UNKNOWN_INSTRUMENT,
                f"Not in today's instruments (the feed cannot stream them): "
                f"{', '.join(map(str, unknown[:MAX_LISTED]))}.",
                details={"instruments": unknown[:MAX_LISTED], "count": len(unknown)},
            )
        for selector in chains:
            chain = registry.option_chain(
                selector.underlying, selector.expiry, exchange=selector.exchange
            )
            if chain is None:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_CHAIN,
                    f"No option chain for {selector.underlying} expiring "
                    f"{selector.expiry.isoformat()}.",
                    details={
                        "underlying": selector.underlying,
                        "expiry": selector.expiry.isoformat(),
                    },
                )
            for row in chain.rows:
                for option in (row.ce, row.pe):
                    if option is not None:
                        found[option.instrument_token] = option
        return found


def applicable_channels(
    instruments: Mapping[int, Instrument], channels: set[Channel]
) -> dict[int, frozenset[Channel]]:
    """Each instrument's channels: Greeks only for options; :class:`ProtocolError` if none."""
    out: dict[int, frozenset[Channel]] = {}
    refused: list[str] = []
    for token, instrument in instruments.items():
        usable = frozenset(channels if instrument.is_option else channels - {Channel.GREEKS})
        if usable:
            out[token] = usable
        else:
            refused.append(f"{instrument.exchange}:{instrument.tradingsymbol}")
    if refused:
        raise ProtocolError(
            ErrorCode.GREEKS_OPTIONS_ONLY,
            f"Greeks exist for options only: {', '.join(refused[:MAX_LISTED])}.",
            details={"instruments": refused[:MAX_LISTED], "count": len(refused)},
        )
    return out


def merge_subscriptions(
    current: Subscriptions, added: Subscriptions
) -> dict[int, frozenset[Channel]]:
    """``current`` with ``added``'s channels joined in."""
    merged = dict(current)
    for token, channels in added.items():
        merged[token] = merged.get(token, frozenset()) | channels
    return merged


def subtract_subscriptions(
    current: Subscriptions, removed: Subscriptions
) -> dict[int, frozenset[Channel]]:
    """``current`` without ``removed``'s channels (instruments left with none are dropped)."""
    out: dict[int, frozenset[Channel]] = {}
    for token, channels in current.items():
        left = channels - removed.get(token, frozenset())
        if left:
            out[token] = left
    return out


def remove_connection(
    connections: ConnectionStore,
    subscribers: SubscriberIndex,
    connection_id: str,
    seen: Iterable[int] = (),
) -> Connection | None:
    """Forget a connection: its entry, its user's count and its subscriber entries.

    ``seen`` are instruments the caller found it subscribed to in the index
    (the fan-out, after a 410): they are left too, whether or not the
    connection's own entry still lists them.
    """
    removed = connections.close(connection_id)
    removals: dict[int, frozenset[Channel]] = dict.fromkeys(seen, ALL_CHANNELS)
    if removed is not None:
        removals.update(dict.fromkeys(removed.subscriptions, ALL_CHANNELS))
    if removals:
        subscribers.leave(connection_id, removals)
    return removed


def _described(instrument: Instrument, channels: list[Channel]) -> dict[str, Any]:
    return {
        "instrument_token": instrument.instrument_token,
        "exchange": instrument.exchange,
        "tradingsymbol": instrument.tradingsymbol,
        "channels": [str(c) for c in channels],
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
