"""Rate limits and fault injection state."""

from __future__ import annotations

import pytest

from kite_sim.clock import ManualClock
from kite_sim.faults import FaultController, FaultSpecError, parse_cli_fault
from kite_sim.order_rate import OrderRateMeter
from kite_sim.ratelimit import Category, Limit, RateLimiter, category_for, scaled_limits


def test_quote_limit_is_one_per_second_sliding() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    assert limiter.allow("k", Category.QUOTE)
    assert not limiter.allow("k", Category.QUOTE)
    clock.advance(0.999)
    assert not limiter.allow("k", Category.QUOTE)
    clock.advance(0.002)
    assert limiter.allow("k", Category.QUOTE)
    # Another key has its own window
    assert limiter.allow("other", Category.QUOTE)
    assert limiter.refused == 2


def test_order_limits_per_second_and_per_minute() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    allowed = sum(limiter.allow("k", Category.ORDERS) for _ in range(15))
    assert allowed == 10
    # 200 per minute: keep 10 a second for 20 s, then the minute cap bites
    total = 10
    for _ in range(25):
        clock.advance(1.0)
        total += sum(limiter.allow("k", Category.ORDERS) for _ in range(10))
    assert total == 200


def test_the_calls_in_the_current_window_can_be_read() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    for _ in range(3):
        limiter.allow("k", Category.OTHER)
    assert limiter.in_window("k", Category.OTHER) == 3
    assert limiter.in_window("other", Category.OTHER) == 0
    clock.advance(1.0)
    assert limiter.in_window("k", Category.OTHER) == 0


def test_disabled_and_custom_limits() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, {Category.OTHER: (Limit(2, 1.0),)})
    assert [limiter.allow("k", Category.OTHER) for _ in range(3)] == [True, True, False]
    assert limiter.allow("k", Category.QUOTE)  # no limits configured for it
    limiter.enabled = False
    assert all(limiter.allow("k", Category.OTHER) for _ in range(10))
    assert scaled_limits(100)[Category.QUOTE][0].count == 100


@pytest.mark.parametrize(
    ("method", "path", "category"),
    [
        ("GET", "/quote", Category.QUOTE),
        ("GET", "/quote/ltp", Category.QUOTE),
        ("GET", "/instruments/historical/1/minute", Category.HISTORICAL),
        ("POST", "/orders/regular", Category.ORDERS),
        ("GET", "/orders/123", Category.OTHER),
        ("GET", "/orders", Category.OTHER),
        ("GET", "/portfolio/positions", Category.OTHER),
    ],
)
def test_categories(method: str, path: str, category: Category) -> None:
    assert category_for(method, path) is category


def test_counted_rest_faults_match_prefix_and_run_out() -> None:
    faults = FaultController(ManualClock())
    faults.fail_rest(503, 2, path_prefix="/orders")
    assert faults.take_rest_error("GET", "/quote") is None
    assert faults.take_rest_error("POST", "/orders/regular") == 503
    assert faults.take_rest_error("GET", "/orders") == 503
    assert faults.take_rest_error("GET", "/orders") is None
    assert faults.fired["rest_error"] == 2
    faults.fail_rest(500, None, method="DELETE")
    assert faults.take_rest_error("GET", "/x") is None
    assert faults.take_rest_error("DELETE", "/x") == 500
    assert faults.take_rest_error("DELETE", "/x") == 500
    assert faults.take_rest_error("DELETE", "/_sim/faults") is None


def test_handshake_refusal_per_api_key() -> None:
    faults = FaultController(ManualClock())
    faults.refuse_handshakes(429, 1, api_key="a")
    assert faults.take_handshake_refusal("b") is None
    assert faults.take_handshake_refusal("a") == 429
    assert faults.take_handshake_refusal("a") is None


def test_silence_expires_with_time() -> None:
    clock = ManualClock()
    faults = FaultController(clock)
    faults.silence(5.0, api_key="a")
    assert faults.is_silent("a")
    assert not faults.is_silent("b")
    clock.advance(5.1)
    assert not faults.is_silent("a")
    faults.silence(1.0)
    assert faults.is_silent("b")


def test_specs_apply_schedule_and_describe() -> None:
    clock = ManualClock()
    expired: list[str | None] = []
    faults = FaultController(clock, expire_tokens=lambda key: expired.append(key) or 1)
    faults.apply({"kind": "drop", "api_key": "a", "count": 1})
    faults.apply({"kind": "malformed", "malformed": "bad_length"})
    actions = faults.take_connection_actions()
    assert [(a.kind, a.api_key, a.count, a.malformed) for a in actions] == [
        ("drop", "a", 1, "truncated"),
        ("malformed", None, None, "bad_length"),
    ]
    assert faults.take_connection_actions() == []
    faults.apply({"kind": "latency", "rest_ms": 50, "ws_ms": 20})
    assert faults.rest_latency == pytest.approx(0.05)
    assert faults.ws_latency == pytest.approx(0.02)
    faults.apply({"kind": "expire_tokens", "api_key": "a"})
    assert expired == ["a"]
    faults.apply({"kind": "refuse_handshake", "status": 403, "every": 10})
    faults.apply({"kind": "silence", "seconds": 3, "at": 2})
    assert faults.run_due() == 0
    clock.advance(2)
    assert faults.run_due() == 1
    assert faults.is_silent(None)
    clock.advance(8)
    assert faults.run_due() == 1
    assert faults.take_handshake_refusal(None) == 403
    described = faults.describe()
    assert described["scheduled"][0]["kind"] == "refuse_handshake"
    faults.apply({"kind": "clear"})
    assert faults.describe()["scheduled"] == []
    assert faults.rest_latency == 0.0


def test_bad_specs_are_refused() -> None:
    faults = FaultController(ManualClock())
    with pytest.raises(FaultSpecError):
        faults.apply({"kind": "meteor"})
    with pytest.raises(FaultSpecError):
        faults.apply({"kind": "rest_error", "status": "x"})
    with pytest.raises(FaultSpecError):
        faults.apply({"kind": "malformed", "malformed": "weird"})
    with pytest.raises(FaultSpecError):
        faults.apply({"kind": "expire_tokens"})


def test_cli_fault_syntax() -> None:
    assert parse_cli_fault("rest_error:status=503,count=2,path_prefix=/orders") == {
        "kind": "rest_error",
        "status": 503,
        "count": 2,
        "path_prefix": "/orders",
    }
    assert parse_cli_fault('{"kind": "drop"}') == {"kind": "drop"}
    assert parse_cli_fault("latency:rest_ms=1.5,count=none")["count"] is None
    with pytest.raises(FaultSpecError):
        parse_cli_fault("drop:oops")
    with pytest.raises(FaultSpecError):
        parse_cli_fault("[1]")
    with pytest.raises(FaultSpecError):
        parse_cli_fault("{oops")
    with pytest.raises(FaultSpecError):
        parse_cli_fault("meteor:x=1")


def test_after_accept_faults_match_count_and_are_described() -> None:
    # Given a hang on the next order placement and a reset on the next cancel
    faults = FaultController(ManualClock())
    faults.apply(
        {"kind": "hang_after_accept", "seconds": 5, "path_prefix": "/orders", "method": "POST"}
    )
    faults.apply({"kind": "reset_after_accept", "path_prefix": "/orders", "method": "DELETE"})
    assert [f["kind"] for f in faults.describe()["after_accept"]] == [
        "hang_after_accept",
        "reset_after_accept",
    ]
    # When calls are served, Then only the matching ones lose their answer, once each
    assert faults.take_after_accept("GET", "/orders") is None
    hang = faults.take_after_accept("POST", "/orders/regular", "key")
    assert hang is not None
    assert (hang.kind, hang.seconds) == ("hang_after_accept", 5.0)
    assert faults.take_after_accept("POST", "/orders/regular") is None
    reset = faults.take_after_accept("DELETE", "/orders/regular/1")
    assert reset is not None
    assert reset.kind == "reset_after_accept"
    assert faults.take_after_accept("POST", "/_sim/faults") is None
    assert faults.fired == {"hang_after_accept": 1, "reset_after_accept": 1}
    assert faults.describe()["after_accept"] == []


def test_after_accept_faults_by_api_key_until_cleared() -> None:
    faults = FaultController(ManualClock())
    faults.lose_answers("reset_after_accept", count=None, api_key="a")
    assert faults.take_after_accept("POST", "/orders/regular", "b") is None
    assert faults.take_after_accept("POST", "/orders/regular", "a") is not None
    assert faults.take_after_accept("POST", "/orders/regular", "a") is not None
    faults.clear()
    assert faults.take_after_accept("POST", "/orders/regular", "a") is None


def test_bad_after_accept_specs_are_refused() -> None:
    faults = FaultController(ManualClock())
    with pytest.raises(FaultSpecError, match="seconds"):
        faults.apply({"kind": "hang_after_accept"})
    with pytest.raises(FaultSpecError):
        faults.apply({"kind": "hang_after_accept", "seconds": "soon"})
    with pytest.raises(FaultSpecError):
        faults.lose_answers("vanish")


def test_order_rate_meter_keeps_the_peak_per_second_window_per_key() -> None:
    # Given order calls of key "a": 3 within 0.5 s, then 2 more 1 s later, refused ones counted
    clock = ManualClock()
    meter = OrderRateMeter(clock)
    for accepted in (True, True, False):
        meter.record("a", accepted=accepted)
        clock.advance(0.25)
    clock.advance(1.0)
    meter.record("a", accepted=True)
    meter.record("b", accepted=True)
    clock.advance(0.1)
    meter.record("a", accepted=True)
    # Then the peak is the busiest window, sent and accepted apart, and keys are separate
    described = meter.describe()
    assert described["a"]["received"] == 5
    assert described["a"]["refused"] == 1
    assert described["a"]["max_received_in_window"] == 3
    assert described["a"]["max_accepted_in_window"] == 2
    assert meter.peak("b") == 1
    assert meter.peak("nobody") == 0
    stamps = described["a"]["timestamps"]
    assert stamps == sorted(stamps)
    assert len(stamps) == 5


def test_order_rate_window_is_half_open() -> None:
    # Given calls exactly one second apart, Then no window holds two of them
    clock = ManualClock()
    meter = OrderRateMeter(clock)
    for _ in range(5):
        meter.record("a", accepted=True)
        clock.advance(1.0)
    assert meter.peak("a") == 1
