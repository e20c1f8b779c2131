"""observability: the feed's metrics and logs through the libraries vs the hand-written code.

The feed's ``/metrics`` now comes from ``prometheus_client``, its EMF lines
from Powertools' ``EphemeralMetrics`` and its log lines from Powertools'
formatter with the shared redacting serializer. The anchor, in the same
rounds, is the hand-written code they replaced
(``benchmarks/observability_handwritten.py``: a dict of counters, its own
Prometheus text and EMF, its own JSON formatter).

Workload: one second of the feed at 100,000 ticks/s, as the pipeline and
the lanes call the metrics: 9 connections x 10 frames/s, each frame counted
and its 3 packet-type batches counted received and accepted per account;
2,000 Kinesis records acknowledged per second (one weighted latency sample
each, about 50 ticks per aggregate) in 100 PutRecords calls (outcome,
acknowledged count, breaker gauge); one Prometheus scrape every 15 s and
one EMF flush every 60 s (so 1/15 and 1/60 of each per second, done whole
every 15th and 60th round); 5 log lines with extra fields. The figure that
decides is the library path's CPU per second of feed as a share of the
container's CPU at that rate (the ``feed_e2e`` benchmark's stand-in run):
under 5% the libraries stay.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from benchmarks import observability_handwritten as handwritten
from feed_container.metrics import Metrics
from ticker_adapters.redaction import redacted_json
from tools.benchmarking import Comparison, Figure, Result, benchmark, interleaved_rates

ACCOUNTS = ("acct0", "acct1", "acct2")
FRAMES_PER_SECOND = 90
BATCHES_PER_FRAME = 3
TICKS_PER_FRAME = 100_000 // FRAMES_PER_SECOND
RECORDS_PER_SECOND = 2_000
REQUESTS_PER_SECOND = 100
LOG_LINES_PER_SECOND = 5
#: The container's CPU at ~110,000 ticks/s when no feed_e2e result is recorded (cores).
FEED_CPU_FALLBACK = 0.79
FEED_E2E_RESULT = Path(__file__).resolve().parent / "results" / "feed_e2e.json"
FEED_CPU_LABELS = (
    "stand-in, the median run by p99: container CPU",
    "stand-in: container CPU",  # results recorded before the stand-in run was repeated
)


def one_second(metrics: Any, scrape: Callable[[], object], emf: Callable[[], object]) -> Any:
    """A function doing one second of the feed's metric calls on ``metrics``."""
    second = [0]

    def run() -> None:
        inc = metrics.inc
        for frame in range(FRAMES_PER_SECOND):
            account = ACCOUNTS[frame % 3]
            inc("feed_frames_total", account=account)
            for _ in range(BATCHES_PER_FRAME):
                inc("feed_ticks_received_total", TICKS_PER_FRAME / 3, account=account)
            inc("feed_ticks_accepted_total", TICKS_PER_FRAME, account=account)
        for record in range(RECORDS_PER_SECOND):
            metrics.observe_lag(0.05 + (record % 100) / 1000, 50)
        for _ in range(REQUESTS_PER_SECOND):
            inc("feed_kinesis_requests_total", outcome="ok")
            inc("feed_kinesis_records_acked_total", 1000)
            metrics.set("feed_breaker_open", 0.0)
        second[0] += 1
        if second[0] % 15 == 0:
            scrape()
        if second[0] % 60 == 0:
            emf()

    return run


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"benchmarks.observability.{name}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def logging_second(logger: logging.Logger, sink: io.StringIO) -> Callable[[], None]:
    """One second of the feed's log lines (rate-limited warnings with extra fields)."""

    def run() -> None:
        for n in range(LOG_LINES_PER_SECOND):
            logger.warning(
                "ticks outside the sanity bounds dropped",
                extra={"account": ACCOUNTS[n % 3], "reason": "invalid_price", "held_back": n},
            )
        sink.seek(0)
        sink.truncate()

    return run


def _feed_cpu() -> tuple[float, str]:
    """The container's CPU (cores) in the last recorded feed_e2e stand-in (median) run."""
    try:
        figures = json.loads(FEED_E2E_RESULT.read_text())["figures"]
        value = next(f["value"] for f in figures if f["label"] in FEED_CPU_LABELS)
        return float(value), "the feed_e2e result recorded in this tree"
    except (OSError, StopIteration, KeyError, ValueError):
        return FEED_CPU_FALLBACK, "the figure BENCHMARKS.md recorded before this benchmark"


@benchmark("observability")
def run() -> Result:
    """Library vs hand-written metrics and logs, per second of feed at 100k ticks/s."""
    load_start = os.getloadavg()[0]
    library_metrics = Metrics()
    handwritten_metrics = handwritten.Metrics()
    for metrics in (library_metrics, handwritten_metrics):
        metrics.gauge_callback("feed_buffer_bytes", lambda: {(): 1024.0})
    now_ms = int(time.time() * 1000)
    library_sink, handwritten_sink = io.StringIO(), io.StringIO()
    library_handler = logging.StreamHandler(library_sink)
    library_handler.setFormatter(LambdaPowertoolsFormatter(utc=True, json_serializer=redacted_json))
    handwritten_handler = logging.StreamHandler(handwritten_sink)
    handwritten_handler.setFormatter(handwritten.JsonFormatter())
    library_log = logging_second(_logger("library", library_handler), library_sink)
    handwritten_log = logging_second(_logger("handwritten", handwritten_handler), handwritten_sink)
    library_second = one_second(
        library_metrics,
        library_metrics.render_prometheus,
        lambda: library_metrics.emf_lines("TickerService/Feed", now_ms),
    )
    handwritten_second = one_second(
        handwritten_metrics,
        handwritten_metrics.render_prometheus,
        lambda: handwritten_metrics.emf_lines("TickerService/Feed", now_ms),
    )

    def library() -> None:
        library_second()
        library_log()

    def hand_written() -> None:
        handwritten_second()
        handwritten_log()

    rates, ratios = interleaved_rates(
        {"library": library, "hand-written": hand_written},
        items_per_call=1,
        anchor="hand-written",
        rounds=9,
        min_seconds=1.0,
    )
    library_cpu = 1.0 / rates["library"]  # seconds of CPU per second of feed
    handwritten_cpu = 1.0 / rates["hand-written"]
    feed_cpu, feed_cpu_source = _feed_cpu()
    share = library_cpu / feed_cpu
    extra = (library_cpu - handwritten_cpu) / feed_cpu
    return Result(
        name="observability",
        title="Feed metrics and logs: prometheus_client + Powertools vs hand-written",
        method=(__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").strip(),
        figures=[
            Figure("machine load average (1 min) at the start", load_start, "runnable"),
            Figure("machine load average (1 min) at the end", os.getloadavg()[0], "runnable"),
            Figure("library path: CPU per second of feed", library_cpu * 1e3, "ms"),
            Figure("hand-written path: CPU per second of feed", handwritten_cpu * 1e3, "ms"),
            Figure("container CPU at ~100k ticks/s (" + feed_cpu_source + ")", feed_cpu, "cores"),
            Figure("library path: share of the container's CPU", share * 100, "%"),
            Figure(
                "library path: extra over hand-written, share of container CPU", extra * 100, "%"
            ),
        ],
        comparisons=[
            Comparison(
                "library path (prometheus_client, Powertools)",
                "hand-written path",
                ratios["library"],
            )
        ],
        checks=[
            ("library path costs under 5% of the container's CPU at 100k ticks/s", share < 0.05)
        ],
        notes=[
            "Ratio: per-second-of-feed throughput of the library path over the hand-written one "
            "(below 1: the library path costs more CPU); the verdict is the share of the "
            "container's CPU, not the ratio.",
        ],
    )
