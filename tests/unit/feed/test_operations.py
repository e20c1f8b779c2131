"""Settings from the environment, metrics as Prometheus and EMF, JSON logs without secrets."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import secrets
import time

import pytest

from feed_container import logs
from feed_container.metrics import Metrics, weighted_quantile
from feed_container.settings import VARIABLE_PREFIXES, FeedEnvironment
from ticker_adapters.settings import SettingsError

REQUIRED = {
    "KITE_CREDENTIALS_KMS_KEY_ARN": (
        "arn:aws:kms:ap-south-1:123456789012:key/8c1f2a3e-5d4b-4c6a-9e8f-0a1b2c3d"
    ),
    "SUBSCRIPTIONS_TABLE_NAME": "subs",
    "TICKS_STREAM_NAME": "ticks",
}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment with none of the variables the feed reads."""
    for name in list(os.environ):
        if name.startswith(VARIABLE_PREFIXES):
            monkeypatch.delenv(name)
    return monkeypatch


def test_settings_come_from_the_shared_names_and_feed_variables(
    environ: pytest.MonkeyPatch,
) -> None:
    # Given the shared names and a few FEED_ knobs in the environment
    for key, value in {**REQUIRED, "FEED_ACCOUNTS": " a1, a2 ,", "FEED_LINGER_MS": "20"}.items():
        environ.setenv(key, value)
    # When the container reads its environment
    environment = FeedEnvironment.from_env()
    # Then each section has its value, and the rest their production defaults
    assert environment.feed.accounts == ("a1", "a2")
    assert environment.feed.linger_seconds == pytest.approx(0.02)
    assert environment.feed.max_connections_per_key == 3
    assert environment.vault.kms_key_arn == REQUIRED["KITE_CREDENTIALS_KMS_KEY_ARN"]
    assert environment.vault.prefix == "ticker/kite"
    assert environment.ticks.name == "ticks"
    assert environment.subscriptions.name == "subs"
    assert environment.kite.ws_url == "wss://ws.kite.trade"
    assert environment.snapshot is None
    assert environment.order_updates_queue_url is None
    assert environment.feed.order_updates_buffer == 10_000


@pytest.mark.parametrize(
    "url",
    [
        "https://sqs.ap-south-1.amazonaws.com/123456789012/ticker-order-updates",
        "http://127.0.0.1:5000/123456789012/order-updates",
    ],
)
def test_the_order_updates_queue_is_read_from_its_shared_name(
    environ: pytest.MonkeyPatch, url: str
) -> None:
    for key, value in {**REQUIRED, "ORDER_UPDATES_QUEUE_URL": url}.items():
        environ.setenv(key, value)
    assert FeedEnvironment.from_env().order_updates_queue_url == url


def test_an_empty_order_updates_queue_url_turns_forwarding_off(
    environ: pytest.MonkeyPatch,
) -> None:
    for key, value in {**REQUIRED, "ORDER_UPDATES_QUEUE_URL": ""}.items():
        environ.setenv(key, value)
    assert FeedEnvironment.from_env().order_updates_queue_url is None


def test_an_order_updates_queue_in_clear_off_loopback_is_refused(
    environ: pytest.MonkeyPatch,
) -> None:
    # Given a queue URL that would carry traders' orders in clear to another machine
    for key, value in {
        **REQUIRED,
        "ORDER_UPDATES_QUEUE_URL": "http://sqs.ap-south-1.amazonaws.com/123456789012/q",
    }.items():
        environ.setenv(key, value)
    # When the environment loads, Then it is refused, by name
    with pytest.raises(SettingsError) as raised:
        FeedEnvironment.from_env()
    assert set(raised.value.problems) == {"ORDER_UPDATES_QUEUE_URL"}


def test_every_missing_variable_is_named_at_once(environ: pytest.MonkeyPatch) -> None:
    # Given an environment with nothing set but the snapshot source
    environ.setenv("FEED_INSTRUMENTS_SOURCE", "snapshot")
    # When the container reads it, Then one error names every required variable
    with pytest.raises(SettingsError) as raised:
        FeedEnvironment.from_env()
    assert set(raised.value.problems) == {*REQUIRED, "INSTRUMENTS_BUCKET"}


def test_the_snapshot_source_reads_the_shared_snapshot_settings(
    environ: pytest.MonkeyPatch,
) -> None:
    for key, value in {
        **REQUIRED,
        "FEED_INSTRUMENTS_SOURCE": "snapshot",
        "INSTRUMENTS_BUCKET": "refdata",
    }.items():
        environ.setenv(key, value)
    snapshot = FeedEnvironment.from_env().snapshot
    assert snapshot is not None
    assert (snapshot.bucket, snapshot.prefix) == ("refdata", "instruments/")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FEED_MAX_CONNECTIONS_PER_KEY", "4"),
        ("FEED_MAX_INSTRUMENTS_PER_CONNECTION", "3001"),
        ("FEED_MEMORY_LOW_BYTES", str(300 * 1024 * 1024)),
        ("FEED_INSTRUMENTS_SOURCE", "s3://bucket/prefix/"),
        ("FEED_REQUEST_RECORDS", "501"),
        ("FEED_MEMORY_MAX_BYTES", str(100 * 1024 * 1024)),
        ("FEED_STOP_TIMEOUT_SECONDS", "17"),
    ],
)
def test_settings_refuse_what_kite_or_kinesis_would(
    environ: pytest.MonkeyPatch, key: str, value: str
) -> None:
    for k, v in {**REQUIRED, key: value}.items():
        environ.setenv(k, v)
    with pytest.raises(SettingsError) as raised:
        FeedEnvironment.from_env()
    assert all(name.startswith("FEED_") for name in raised.value.problems)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KITE_WS_URL", "ws://ws.kite.example:8400"),
        ("KITE_REST_URL", "http://api.kite.example"),
        ("KITE_WS_URL", "wss:///no-host"),
    ],
)
def test_kite_urls_in_clear_are_refused_off_loopback(
    environ: pytest.MonkeyPatch, key: str, value: str
) -> None:
    # Given a plain-text Kite URL to another machine (the access token would travel in clear)
    for k, v in {**REQUIRED, key: value}.items():
        environ.setenv(k, v)
    # When the environment loads, Then it refuses it, naming the variable
    with pytest.raises(SettingsError) as raised:
        FeedEnvironment.from_env()
    assert set(raised.value.problems) == {key}


def test_kite_urls_in_clear_are_allowed_to_loopback(environ: pytest.MonkeyPatch) -> None:
    urls = {"KITE_WS_URL": "ws://127.0.0.1:8400", "KITE_REST_URL": "http://[::1]:8400"}
    for k, v in {**REQUIRED, **urls}.items():
        environ.setenv(k, v)
    assert FeedEnvironment.from_env().kite.ws_url == "ws://127.0.0.1:8400"


@pytest.mark.parametrize(
    "key_id",
    [
        "alias/ticker",
        "arn:aws:kms:ap-south-1:123456789012:alias/ticker",
        "8c1f2a3e-5d4b-4c6a-9e8f-0a1b2c3d4e5f",
    ],
)
def test_a_kms_alias_is_refused_at_start_with_the_reason(
    environ: pytest.MonkeyPatch, key_id: str
) -> None:
    # Given the vault's key named by an alias or a bare id (decrypt would fail on every read)
    for k, v in {**REQUIRED, "KITE_CREDENTIALS_KMS_KEY_ARN": key_id}.items():
        environ.setenv(k, v)
    # When the environment loads, Then it refuses it and says to use the key ARN
    with pytest.raises(SettingsError) as raised:
        FeedEnvironment.from_env()
    assert "must be a KMS key ARN" in raised.value.problems["KITE_CREDENTIALS_KMS_KEY_ARN"]


def test_a_settings_error_does_not_echo_the_value(environ: pytest.MonkeyPatch) -> None:
    # Given a bad value that could be sensitive
    value = secrets.token_hex(12)
    for k, v in {**REQUIRED, "FEED_HEALTH_PORT": value}.items():
        environ.setenv(k, v)
    # When validation fails, Then the error names the variable but not what was given
    with pytest.raises(SettingsError) as caught:
        FeedEnvironment.from_env()
    assert "FEED_HEALTH_PORT" in caught.value.problems
    assert value not in str(caught.value)


def test_prometheus_text_has_types_labels_and_the_lag_histogram() -> None:
    metrics = Metrics()
    metrics.inc("feed_ticks_received_total", 5, account="a1")
    metrics.set("feed_breaker_open", 1)
    metrics.gauge_callback("feed_buffer_bytes", lambda: {(): 42.0})
    metrics.observe_lag(0.02, 10)
    text = metrics.render_prometheus()
    assert "# TYPE feed_ticks_received_total counter" in text
    assert 'feed_ticks_received_total{account="a1"} 5' in text
    assert "feed_buffer_bytes 42" in text
    assert 'feed_e2e_lag_seconds_bucket{le="0.02"} 10' in text
    assert "feed_e2e_lag_seconds_count 10" in text


def test_emf_lines_carry_per_account_deltas_and_stream_figures() -> None:
    # Given counters of one account and of the stream, and two latency samples
    metrics = Metrics()
    metrics.inc("feed_ticks_received_total", 5, account="a1")
    metrics.inc("feed_kinesis_requests_total", outcome="ok")
    metrics.observe_lag(0.2, 99)
    metrics.observe_lag(0.7, 1)
    now_ms = int(time.time() * 1000)
    # When two intervals are written
    first = [json.loads(line) for line in metrics.emf_lines("NS", now_ms)]
    metrics.inc("feed_ticks_received_total", 2, account="a1")
    second = [json.loads(line) for line in metrics.emf_lines("NS", now_ms + 60_000)]
    # Then each account has its own document with its counters as deltas (Powertools EMF)
    account = next(d for d in first if d.get("account") == "a1")
    assert account["TicksReceivedTotal"] == [5.0]
    directive = account["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "NS"
    assert sorted(directive["Dimensions"][0]) == ["account", "service"]
    assert account["_aws"]["Timestamp"] == now_ms
    assert next(d for d in second if d.get("account") == "a1")["TicksReceivedTotal"] == [2.0]
    # And the stream's document has its counters and the interval's exact weighted percentiles
    stream = next(d for d in first if "account" not in d)
    assert stream["KinesisRequestsTotalOk"] == [1.0]
    assert stream["E2eLagP50Seconds"] == [0.2]
    assert stream["E2eLagP99Seconds"] == [0.2]  # 99 of 100 user records at 0.2 s
    assert "E2eLagP99Seconds" not in next(d for d in second if "account" not in d)


def test_exact_weighted_quantiles() -> None:
    samples = [(0.05, 10.0), (0.3, 89.0), (2.0, 1.0)]
    assert weighted_quantile(samples, 0.5) == 0.3
    assert weighted_quantile(samples, 0.99) == 0.3
    assert weighted_quantile(samples, 0.995) == 2.0
    assert math.isnan(weighted_quantile([], 0.5))


def test_every_recorded_metric_is_declared() -> None:
    # Given the metrics registry, When an undeclared name or label is recorded, Then it fails
    metrics = Metrics()
    with pytest.raises(KeyError):
        metrics.inc("feed_no_such_total")
    with pytest.raises(ValueError, match="label"):
        metrics.inc("feed_ticks_received_total", account="a1", colour="red")
    with pytest.raises(ValueError, match="callback"):
        metrics.gauge_callback("feed_ticks_received_total", dict)


def test_logs_are_powertools_json_lines_and_secrets_are_masked() -> None:
    token = secrets.token_hex(16)
    out = io.StringIO()
    logs.configure("INFO", out)
    try:
        log = logging.getLogger("feed_container.test")
        log.warning(
            "connect to ws://k/?api_key=k1&access_token=%s failed", token, extra={"slot": "a#0"}
        )
        log.info("header", extra={"auth": f"token k1:{token}", "env": {"password": token}})
        logging.getLogger("websockets.client").debug("GET /?access_token=%s", token)
        try:
            raise ValueError(f"postgresql://app:{token}@db/ticks")
        except ValueError:
            log.exception("connect failed")
    finally:
        logs.configure("WARNING", io.StringIO())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert token not in out.getvalue()
    assert [line["level"] for line in lines] == ["WARNING", "INFO", "ERROR"]
    assert lines[0]["service"] == logs.SERVICE
    assert lines[0]["slot"] == "a#0"
    assert "access_token=***" in lines[0]["message"]
    assert lines[1]["auth"] == "token k1:***"
    assert lines[1]["env"] == {"password": "***"}
    assert "app:***@db" in lines[2]["exception"]
