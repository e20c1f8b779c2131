"""Settings from the environment, metrics as Prometheus and EMF, JSON logs without secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets

import pytest

from feed_container import logs
from feed_container.metrics import Metrics
from feed_container.settings import FeedEnvironment
from ticker_adapters.settings import SettingsError

REQUIRED = {
    "KITE_CREDENTIALS_KMS_KEY_ARN": "alias/ticker",
    "SUBSCRIPTIONS_TABLE_NAME": "subs",
    "TICKS_STREAM_NAME": "ticks",
}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment with none of the variables the feed reads."""
    for name in list(os.environ):
        if name.startswith(
            ("FEED_", "KITE_", "TICKS_", "GREEKS_", "SUBSCRIPTIONS_", "INSTRUMENTS_")
        ):
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
    assert environment.vault.kms_key_arn == "alias/ticker"
    assert environment.vault.prefix == "ticker/kite"
    assert environment.ticks.name == "ticks"
    assert environment.subscriptions.name == "subs"
    assert environment.kite.ws_url == "wss://ws.kite.trade"
    assert environment.snapshot is None


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
    metrics = Metrics()
    metrics.inc("feed_ticks_received_total", 5, account="a1")
    metrics.inc("feed_kinesis_requests_total", outcome="ok")
    metrics.observe_lag(0.2)
    first = [json.loads(line) for line in metrics.emf_lines("NS", 1000)]
    metrics.inc("feed_ticks_received_total", 2, account="a1")
    second = [json.loads(line) for line in metrics.emf_lines("NS", 2000)]
    account = next(d for d in first if d.get("account") == "a1")
    assert account["TicksReceivedTotal"] == 5
    assert account["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["account"]]
    stream = next(d for d in first if "account" not in d)
    assert stream["KinesisRequestsTotalOk"] == 1
    assert stream["E2eLagP99Seconds"] == 0.2
    assert next(d for d in second if d.get("account") == "a1")["TicksReceivedTotal"] == 2


def test_logs_are_json_lines_and_tokens_are_masked() -> None:
    token = secrets.token_hex(16)
    out = io.StringIO()
    logs.configure("INFO", out)
    try:
        log = logging.getLogger("feed_container.test")
        log.warning(
            "connect to ws://k/?api_key=k1&access_token=%s failed", token, extra={"slot": "a#0"}
        )
        log.info("header", extra={"auth": f"token k1:{token}"})
        logging.getLogger("websockets.client").debug("GET /?access_token=%s", token)
    finally:
        logs.configure("WARNING", io.StringIO())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert token not in out.getvalue()
    assert lines[0]["level"] == "WARNING"
    assert lines[0]["slot"] == "a#0"
    assert "access_token=***" in lines[0]["msg"]
    assert lines[1]["auth"] == "token k1:***"
    assert len(lines) == 2
