"""Fault injection (sans-I/O): what the server should break, and when.

The controller only holds state; the HTTP and WebSocket layers ask it, at the
right moments, whether to refuse a handshake, fail a REST call, lose the
answer of a call it served (hang or reset: an ambiguous outcome for the
client), add latency, stay silent, drop connections or send a malformed frame. Faults come from
tests (call the methods), the admin API and the CLI (both as JSON specs,
see :meth:`FaultController.apply`), optionally scheduled ``at`` a number of
seconds after start or repeated ``every`` so many seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from kite_sim.clock import MonotonicClock

HANG_AFTER_ACCEPT = "hang_after_accept"
RESET_AFTER_ACCEPT = "reset_after_accept"
AFTER_ACCEPT_KINDS = (HANG_AFTER_ACCEPT, RESET_AFTER_ACCEPT)
FAULT_KINDS = (
    "drop",
    "silence",
    "malformed",
    "refuse_handshake",
    "rest_error",
    "latency",
    *AFTER_ACCEPT_KINDS,
    "expire_tokens",
    "clear",
)
MALFORMED_KINDS = ("truncated", "bad_length", "count_mismatch", "garbage")


class FaultSpecError(ValueError):
    """A fault description that cannot be applied."""


@dataclass
class FaultScope:
    """Which events a fault applies to, and how many more times (None: until cleared)."""

    remaining: int | None = 1
    api_key: str | None = None
    path_prefix: str = ""
    method: str | None = None

    def matches(self, *, api_key: str | None = None, method: str = "", path: str = "") -> bool:
        """Whether this fault applies to the event."""
        if self.api_key is not None and api_key != self.api_key:
            return False
        if self.method is not None and method.upper() != self.method.upper():
            return False
        return path.startswith(self.path_prefix)

    def take(self) -> bool:
        """Use one firing; False when none are left."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclass
class CountedFault(FaultScope):
    """Answer matching events with HTTP ``status`` (a refused handshake, a failed call)."""

    status: int = 500


@dataclass
class AfterAcceptFault(FaultScope):
    """A REST call is served (an order placed and recorded), then its answer goes astray.

    ``hang_after_accept``: the answer is held ``seconds`` (past the client's
    timeout); ``reset_after_accept``: the connection is reset instead of
    answered. The client cannot tell whether its call took effect.
    """

    kind: str = HANG_AFTER_ACCEPT
    seconds: float = 0.0


@dataclass
class ConnectionAction:
    """A one-shot action on live WebSocket connections."""

    kind: str  # "drop" or "malformed"
    api_key: str | None = None
    count: int | None = None  # how many connections; None = all matching
    malformed: str = "truncated"


@dataclass
class _Scheduled:
    at: float
    spec: dict[str, Any]
    every: float | None = None


@dataclass
class FaultController:
    """Everything currently injected."""

    clock: MonotonicClock
    expire_tokens: Callable[[str | None], int] | None = None
    handshake_refusals: list[CountedFault] = field(default_factory=list)
    rest_errors: list[CountedFault] = field(default_factory=list)
    after_accept: list[AfterAcceptFault] = field(default_factory=list)
    rest_latency: float = 0.0
    ws_latency: float = 0.0
    _silent_until: dict[str | None, float] = field(default_factory=dict)
    _actions: list[ConnectionAction] = field(default_factory=list)
    _scheduled: list[_Scheduled] = field(default_factory=list)
    fired: dict[str, int] = field(default_factory=dict)

    # -- handshakes -------------------------------------------------------
    def refuse_handshakes(
        self, status: int = 503, count: int | None = 1, api_key: str | None = None
    ) -> None:
        """Refuse the next ``count`` WebSocket handshakes with HTTP ``status``."""
        self.handshake_refusals.append(CountedFault(count, api_key, status=status))

    def take_handshake_refusal(self, api_key: str | None) -> int | None:
        """The status to refuse this handshake with, if a fault says so."""
        return self._take(self.handshake_refusals, "refuse_handshake", api_key=api_key)

    # -- REST --------------------------------------------------------------
    def fail_rest(
        self,
        status: int = 500,
        count: int | None = 1,
        *,
        path_prefix: str = "",
        method: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """Fail the next ``count`` REST calls under ``path_prefix`` with ``status``."""
        self.rest_errors.append(CountedFault(count, api_key, path_prefix, method, status=status))

    def take_rest_error(self, method: str, path: str, api_key: str | None = None) -> int | None:
        """The status to fail this REST call with, if a fault says so."""
        if path.startswith("/_sim"):
            return None
        return self._take(self.rest_errors, "rest_error", api_key=api_key, method=method, path=path)

    def _take(self, faults: list[CountedFault], name: str, **event: Any) -> int | None:
        fault = _take_first(faults, **event)
        if fault is None:
            return None
        self.fired[name] = self.fired.get(name, 0) + 1
        return fault.status

    def lose_answers(
        self,
        kind: str,
        *,
        seconds: float = 0.0,
        count: int | None = 1,
        path_prefix: str = "",
        method: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """Serve the next ``count`` matching REST calls, then hang or reset instead of answering.

        ``kind`` is ``hang_after_accept`` (hold the answer ``seconds``) or
        ``reset_after_accept`` (reset the connection). Only calls that
        succeed use a firing: the call took effect, its answer is what is lost.
        """
        if kind not in AFTER_ACCEPT_KINDS:
            raise FaultSpecError(f"unknown after-accept kind {kind!r}; one of {AFTER_ACCEPT_KINDS}")
        if kind == HANG_AFTER_ACCEPT and seconds <= 0:
            raise FaultSpecError("hang_after_accept needs seconds > 0")
        self.after_accept.append(
            AfterAcceptFault(count, api_key, path_prefix, method, kind=kind, seconds=seconds)
        )

    def take_after_accept(
        self, method: str, path: str, api_key: str | None = None
    ) -> AfterAcceptFault | None:
        """The fault that loses the answer of this served REST call, if one says so."""
        if path.startswith("/_sim"):
            return None
        fault = _take_first(self.after_accept, api_key=api_key, method=method, path=path)
        if fault is not None:
            self.fired[fault.kind] = self.fired.get(fault.kind, 0) + 1
        return fault

    # -- WebSocket -----------------------------------------------------------
    def silence(self, seconds: float, api_key: str | None = None) -> None:
        """No ticks and no heartbeats for ``seconds`` (one API key, or everyone)."""
        self._silent_until[api_key] = self.clock.monotonic() + seconds
        self.fired["silence"] = self.fired.get("silence", 0) + 1

    def is_silent(self, api_key: str | None) -> bool:
        """Whether connections of ``api_key`` must stay silent now."""
        now = self.clock.monotonic()
        return any(
            until > now and (key is None or key == api_key)
            for key, until in self._silent_until.items()
        )

    def drop_connections(self, api_key: str | None = None, count: int | None = None) -> None:
        """Abort live connections (no close frame), as a network failure would."""
        self._actions.append(ConnectionAction("drop", api_key, count))

    def send_malformed(
        self, kind: str = "truncated", api_key: str | None = None, count: int | None = None
    ) -> None:
        """Send one malformed binary frame on live connections."""
        if kind not in MALFORMED_KINDS:
            raise FaultSpecError(f"unknown malformed kind {kind!r}; one of {MALFORMED_KINDS}")
        self._actions.append(ConnectionAction("malformed", api_key, count, kind))

    def take_connection_actions(self) -> list[ConnectionAction]:
        """The pending one-shot connection actions (cleared by taking)."""
        actions, self._actions = self._actions, []
        for action in actions:
            self.fired[action.kind] = self.fired.get(action.kind, 0) + 1
        return actions

    # -- everything ----------------------------------------------------------
    def clear(self) -> None:
        """Remove every fault, pending action and schedule."""
        self.handshake_refusals.clear()
        self.rest_errors.clear()
        self.after_accept.clear()
        self.rest_latency = 0.0
        self.ws_latency = 0.0
        self._silent_until.clear()
        self._actions.clear()
        self._scheduled.clear()

    def apply(self, spec: Mapping[str, Any]) -> None:
        """Apply a JSON fault spec now, or schedule it when it has ``at``/``every``.

        ``{"kind": "drop"|"silence"|"malformed"|"refuse_handshake"|"rest_error"|
        "latency"|"hang_after_accept"|"reset_after_accept"|"expire_tokens"|"clear",
        ...}`` with, by kind: ``api_key``, ``count``, ``seconds``, ``status``,
        ``path_prefix``, ``method``,
        ``malformed`` (truncated|bad_length|count_mismatch|garbage),
        ``rest_ms``/``ws_ms``; plus optional ``at`` and ``every`` (seconds).
        """
        spec = dict(spec)
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        at = spec.pop("at", None)
        every = spec.pop("every", None)
        if at is not None or every is not None:
            start = self.clock.monotonic() + float(at if at is not None else every)
            self._scheduled.append(_Scheduled(start, spec, None if every is None else float(every)))
            return
        self._apply_now(spec)

    def _apply_now(self, spec: dict[str, Any]) -> None:
        kind = spec["kind"]
        api_key = spec.get("api_key")
        count = spec.get("count")
        try:
            if kind == "drop":
                self.drop_connections(api_key, count)
            elif kind == "silence":
                self.silence(float(spec.get("seconds", 10.0)), api_key)
            elif kind == "malformed":
                self.send_malformed(str(spec.get("malformed", "truncated")), api_key, count)
            elif kind == "refuse_handshake":
                self.refuse_handshakes(int(spec.get("status", 503)), _count(spec), api_key)
            elif kind == "rest_error":
                self.fail_rest(
                    int(spec.get("status", 500)),
                    _count(spec),
                    path_prefix=str(spec.get("path_prefix", "")),
                    method=spec.get("method"),
                    api_key=api_key,
                )
            elif kind in AFTER_ACCEPT_KINDS:
                self.lose_answers(
                    kind,
                    seconds=float(spec.get("seconds", 0.0)),
                    count=_count(spec),
                    path_prefix=str(spec.get("path_prefix", "")),
                    method=spec.get("method"),
                    api_key=api_key,
                )
            elif kind == "latency":
                self.rest_latency = float(spec.get("rest_ms", 0.0)) / 1000.0
                self.ws_latency = float(spec.get("ws_ms", 0.0)) / 1000.0
            elif kind == "expire_tokens":
                if self.expire_tokens is None:
                    raise FaultSpecError("token expiry is not wired to a session store")
                self.expire_tokens(api_key)
                self.fired["expire_tokens"] = self.fired.get("expire_tokens", 0) + 1
            else:  # clear
                self.clear()
        except (TypeError, ValueError) as exc:
            raise FaultSpecError(f"bad {kind} fault: {exc}") from exc

    def run_due(self) -> int:
        """Apply scheduled faults whose time has come; how many ran."""
        now = self.clock.monotonic()
        ran = 0
        for item in list(self._scheduled):
            if item.at > now:
                continue
            self._apply_now(dict(item.spec))
            ran += 1
            if item.every is None:
                self._scheduled.remove(item)
            else:
                item.at = now + item.every
        return ran

    def describe(self) -> dict[str, Any]:
        """What is injected, as JSON (admin API)."""
        now = self.clock.monotonic()
        return {
            "handshake_refusals": [asdict(f) for f in self.handshake_refusals],
            "rest_errors": [asdict(f) for f in self.rest_errors],
            "after_accept": [asdict(f) for f in self.after_accept],
            "rest_latency_ms": self.rest_latency * 1000.0,
            "ws_latency_ms": self.ws_latency * 1000.0,
            "silent": {
                (k or "*"): round(until - now, 3)
                for k, until in self._silent_until.items()
                if until > now
            },
            "pending_actions": [asdict(a) for a in self._actions],
            "scheduled": [
                {"in_seconds": round(s.at - now, 3), "every": s.every, **s.spec}
                for s in self._scheduled
            ],
            "fired": dict(self.fired),
        }


F = TypeVar("F", bound=FaultScope)


def _take_first(faults: list[F], **event: Any) -> F | None:
    """The first fault that matches the event and has a firing left (used up: removed)."""
    for fault in list(faults):
        if fault.matches(**event) and fault.take():
            if fault.remaining == 0:
                faults.remove(fault)
            return fault
    return None


def _count(spec: Mapping[str, Any]) -> int | None:
    count = spec.get("count", 1)
    return None if count is None else int(count)


def parse_cli_fault(text: str) -> dict[str, Any]:
    """``kind[:key=value,...]`` (or a JSON object) from the command line, as a spec."""
    import json

    text = text.strip()
    if text[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FaultSpecError(f"bad JSON fault spec: {exc}") from exc
        if not isinstance(parsed, dict):
            raise FaultSpecError("a fault spec must be a JSON object")
        return parsed
    kind, _, rest = text.partition(":")
    if kind not in FAULT_KINDS:
        raise FaultSpecError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
    spec: dict[str, Any] = {"kind": kind}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise FaultSpecError(f"expected key=value in {item!r}")
        spec[key] = _scalar(value)
    return spec


def _scalar(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return None if value in ("none", "null") else value
