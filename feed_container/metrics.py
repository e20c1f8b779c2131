"""The feed's metrics: ``prometheus_client`` for ``/metrics``, Powertools for CloudWatch EMF.

Every metric is declared once in :data:`METRICS` (kind, help, label names).
The process keeps them in its own ``prometheus_client`` registry (one per
:class:`Metrics`, so tests and processes never share state); ``/metrics``
is that registry in the Prometheus text format. Every ``emf_interval`` the
service prints Embedded Metric Format documents to stdout, built and
serialized by Powertools' ``EphemeralMetrics`` exactly as the Lambdas'
metrics are: one document per account (its per-account series, dimension
``account``) and one for the stream, both with the ``service`` dimension;
counters go to EMF as the change since the previous document. The awslogs
driver ships stdout to CloudWatch Logs, where EMF lines become metrics: no
agent, no API calls.

Two things the client library does not do are done here:

* ``feed_e2e_lag_seconds`` is *weighted*: one observation per Kinesis
  record, standing for its user records (an aggregate of 60 ticks counts
  60 times, at its oldest tick's latency: an upper bound for each). It is
  exposed as a Prometheus histogram by a collector, and its exact weighted
  percentiles over each EMF interval go to EMF (``E2eLagP50Seconds``,
  ``E2eLagP99Seconds``), not bucket bounds;
* gauges computed when read (buffer depth, open connections) come from
  callbacks, through the same collector.

The hot path pays a dictionary lookup and a locked add per call: the
benchmark ``observability`` measures it against the hand-written metrics
this replaced.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

Labels = tuple[tuple[str, str], ...]

#: The Powertools service (the ``service`` dimension of every EMF document).
SERVICE = "ticker-feed"
#: Powertools flushes (prints) by itself at 100 metrics: documents stay below.
_EMF_MAX_METRICS = 99

#: Latency buckets in seconds (frame receipt to PutRecords acknowledgement).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


#: Pauses and per-step times (GC, event-loop lag, frame processing): from 100 us.
PAUSE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One metric: ``kind`` (counter, gauge, histogram), help text, label names, whether its
    value comes from a callback (:meth:`Metrics.gauge_callback`), and histogram buckets."""

    kind: str
    help: str
    labels: tuple[str, ...] = ()
    callback: bool = False
    buckets: tuple[float, ...] = LATENCY_BUCKETS


_ACCOUNT = ("account",)

METRICS: dict[str, Spec] = {
    "feed_ticks_received_total": Spec("counter", "Ticks decoded from Kite frames", _ACCOUNT),
    "feed_ticks_accepted_total": Spec(
        "counter", "Ticks that passed validation and were encoded", _ACCOUNT
    ),
    "feed_ticks_invalid_total": Spec(
        "counter", "Ticks dropped by the sanity bounds, by reason", ("account", "reason")
    ),
    "feed_frames_total": Spec("counter", "Binary frames received (heartbeats included)", _ACCOUNT),
    "feed_frames_malformed_total": Spec(
        "counter", "Frames with broken structure (intact part kept)", _ACCOUNT
    ),
    "feed_frames_failed_total": Spec(
        "counter", "Frames whose processing raised (packets lost)", ("account", "error")
    ),
    "feed_packets_lost_total": Spec(
        "counter", "Packets lost in malformed frames or skipped", _ACCOUNT
    ),
    "feed_text_messages_total": Spec(
        "counter", "Text messages from Kite, by type", ("account", "type")
    ),
    "feed_connects_total": Spec("counter", "Successful WebSocket handshakes", _ACCOUNT),
    "feed_reconnects_total": Spec("counter", "Reconnects after a connection ended", _ACCOUNT),
    "feed_watchdog_trips_total": Spec("counter", "Connections closed for silence", _ACCOUNT),
    "feed_unclean_closes_total": Spec(
        "counter", "Stops whose close handshake did not complete", _ACCOUNT
    ),
    "feed_stop_close_timeouts_total": Spec(
        "counter", "Stops whose connections did not all close within the budget"
    ),
    "feed_handshake_refusals_total": Spec(
        "counter", "Handshakes refused by HTTP status", ("account", "status")
    ),
    "feed_token_refreshes_total": Spec("counter", "Access tokens re-read from the vault", _ACCOUNT),
    "feed_connection_errors_total": Spec(
        "counter", "Unexpected errors of a connection, by type", ("account", "error")
    ),
    "feed_account_session_errors_total": Spec(
        "counter", "New accounts whose session could not be read, by error", ("account", "error")
    ),
    "feed_connections_open": Spec("gauge", "Live WebSocket connections", _ACCOUNT, callback=True),
    "feed_accounts_waiting_for_login": Spec(
        "gauge", "Accounts in the vault without a live session yet", _ACCOUNT, callback=True
    ),
    "feed_unassigned_instruments": Spec(
        "gauge", "Desired instruments no connection has room for", callback=True
    ),
    "feed_subscribed_instruments": Spec(
        "gauge", "Instruments assigned to connections", callback=True
    ),
    "feed_kinesis_requests_total": Spec("counter", "PutRecords calls, by outcome", ("outcome",)),
    "feed_kinesis_records_acked_total": Spec("counter", "User records Kinesis acknowledged"),
    "feed_kinesis_throttled_records_total": Spec(
        "counter", "Records Kinesis refused for throughput"
    ),
    "feed_kinesis_failed_records_total": Spec(
        "counter", "Records Kinesis failed, by error code", ("code",)
    ),
    "feed_kinesis_ambiguous_total": Spec("counter", "User records resent after an unknown outcome"),
    "feed_kinesis_reordered_records_total": Spec(
        "counter", "User records acknowledged after a later one of their key"
    ),
    "feed_breaker_open": Spec("gauge", "1 while the Kinesis circuit breaker is open"),
    "feed_buffer_bytes": Spec("gauge", "Bytes of records held in memory", callback=True),
    "feed_spill_bytes": Spec("gauge", "Bytes of records spilled to disk", callback=True),
    "feed_spilled_records_total": Spec("counter", "User records written to the disk spill"),
    "feed_replayed_records_total": Spec("counter", "User records read back from the disk spill"),
    "feed_spill_corrupt_bytes_total": Spec(
        "counter", "Spill bytes lost to corruption", callback=True
    ),
    "feed_spill_write_errors_total": Spec(
        "counter", "Spill writes the disk refused, by errno", ("error",), callback=True
    ),
    "feed_dropped_records_total": Spec(
        "counter", "User records dropped: memory and disk full (ALARM)"
    ),
    "feed_encode_errors_total": Spec(
        "counter", "User records the batcher refused (too large, bad key)", _ACCOUNT
    ),
    "feed_task_failures_total": Spec(
        "counter", "Background tasks that raised and were restarted", ("task",)
    ),
    "feed_accounts_retired_total": Spec(
        "counter", "Accounts dropped after leaving the vault", _ACCOUNT
    ),
    "feed_status_write_errors_total": Spec("counter", "Status records that could not be written"),
    "feed_order_updates_forwarded_total": Spec(
        "counter", "Kite order messages SQS accepted (ORDER_UPDATES_QUEUE_URL)"
    ),
    "feed_order_updates_failed_total": Spec(
        "counter", "Order messages SQS did not accept in a call, by error (retried)", ("error",)
    ),
    "feed_order_updates_dropped_total": Spec(
        "counter", "Order messages lost before SQS, by reason (ALARM)", ("reason",)
    ),
    "feed_order_updates_duplicates_total": Spec(
        "counter", "Order messages already queued from another connection of the account"
    ),
    "feed_order_updates_requests_total": Spec(
        "counter", "SendMessageBatch calls of order messages, by outcome", ("outcome",)
    ),
    "feed_order_updates_pending": Spec(
        "gauge", "Order messages waiting for SQS (queued and in flight)", callback=True
    ),
    "feed_e2e_lag_seconds": Spec(
        "histogram", "Frame receipt to PutRecords acknowledgement, per user record (upper bound)"
    ),
    # Where the latency goes, per PutRecords batch: its oldest record's wait in the batcher
    # (linger, filling), in the lane's queue (behind calls in flight), and its last call.
    "feed_batch_stage_seconds": Spec(
        "histogram", "Seconds a batch spent in each stage before its acknowledgement", ("stage",)
    ),
    "feed_frame_seconds": Spec(
        "histogram",
        "Time to decode, validate, encode and hand over one frame",
        buckets=PAUSE_BUCKETS,
    ),
    "feed_gc_pause_seconds": Spec(
        "histogram",
        "Garbage collector pauses, by generation",
        ("generation",),
        buckets=PAUSE_BUCKETS,
    ),
    "feed_loop_lag_seconds": Spec(
        "histogram",
        "How late the event loop runs a timer (its responsiveness)",
        buckets=PAUSE_BUCKETS,
    ),
}


class WeightedHistogram:
    """Cumulative buckets of weighted observations (what ``feed_e2e_lag_seconds`` needs)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0.0] * (len(buckets) + 1)
        self.total = 0.0
        self.sum = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        """Add ``weight`` observations of ``value``."""
        self.counts[bisect.bisect_left(self.buckets, value)] += weight
        self.total += weight
        self.sum += value * weight

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs, Prometheus style (``+Inf`` last)."""
        out, running = [], 0.0
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(bound), running))
        return out


def weighted_quantile(samples: list[tuple[float, float]], q: float) -> float:
    """The exact ``q`` quantile of (value, weight) samples: the smallest value with at least
    ``q`` of the total weight at or below it (nan when empty)."""
    total = sum(w for _, w in samples)
    if not total:
        return math.nan
    target = q * total
    running = 0.0
    for value, weight in sorted(samples):
        running += weight
        if running >= target:
            return value
    return max(v for v, _ in samples)


class Metrics:
    """Every metric of the process, declared in :data:`METRICS`."""

    def __init__(self, *, lag_window: bool = True) -> None:
        """``lag_window``: keep each interval's latency samples for exact EMF percentiles
        (off when nothing reads them, so they never pile up)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        for name, spec in METRICS.items():
            if spec.callback or name == "feed_e2e_lag_seconds":
                continue
            if spec.kind == "histogram":
                self._metrics[name] = Histogram(
                    name, spec.help, spec.labels, registry=self.registry, buckets=spec.buckets
                )
                continue
            kind = Counter if spec.kind == "counter" else Gauge
            self._metrics[name] = kind(name, spec.help, spec.labels, registry=self.registry)
        self._children: dict[tuple[str, Labels], Any] = {}
        self._callbacks: dict[str, Callable[[], dict[Labels, float]]] = {}
        self.lag = WeightedHistogram()
        self._lag_window: list[tuple[float, float]] | None = [] if lag_window else None
        self._emf_last: dict[tuple[str, Labels], float] = {}
        self.registry.register(_Collector(self))

    # -- recording (the hot path) -------------------------------------------------------

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        key = (name, tuple(labels.items()))
        child = self._children.get(key)
        if child is None:
            metric = self._metrics[name]
            child = self._children[key] = metric.labels(**labels) if labels else metric
        return child

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter."""
        self._child(name, labels).inc(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        self._child(name, labels).set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """One observation of a histogram."""
        self._child(name, labels).observe(value)

    def gauge_callback(self, name: str, read: Callable[[], dict[Labels, float]]) -> None:
        """A series computed when read (buffer depth, open connections): ``read`` returns
        ``{((label, value), ...): number}`` with the labels :data:`METRICS` declares."""
        if not METRICS[name].callback:
            raise ValueError(f"{name} is not declared as a callback metric")
        self._callbacks[name] = read

    def observe_lag(self, seconds: float, weight: float = 1.0) -> None:
        """One end-to-end latency sample, standing for ``weight`` user records."""
        self.lag.observe(seconds, weight)
        if self._lag_window is not None:
            self._lag_window.append((seconds, weight))

    # -- reading ----------------------------------------------------------------------------

    def series(self) -> dict[str, dict[Labels, float]]:
        """Every counter's and gauge's current values, by name and labels."""
        out: dict[str, dict[Labels, float]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                name = sample.name
                if name.endswith("_created") or family.type == "histogram":
                    continue
                out.setdefault(name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return out

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (0 when never set)."""
        if name in self._callbacks:
            return self._callbacks[name]().get(tuple(sorted(labels.items())), 0.0)
        return self.series().get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """Sum over every label set."""
        if name in self._callbacks:
            return sum(self._callbacks[name]().values())
        return sum(self.series().get(name, {}).values())

    def render_prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        return generate_latest(self.registry).decode("utf-8")

    # -- CloudWatch EMF -------------------------------------------------------------------

    def emf_lines(self, namespace: str, timestamp_ms: int) -> list[str]:
        """EMF documents (Powertools-serialized): one per account, one for the stream."""
        by_account: dict[str, dict[str, float]] = {}
        stream: dict[str, float] = {}
        for name, values in self.series().items():
            kind = METRICS[name].kind if name in METRICS else "gauge"
            for labels, value in values.items():
                reported = value
                if kind == "counter":
                    key = (name, labels)
                    reported = value - self._emf_last.get(key, 0.0)
                    self._emf_last[key] = value
                metric = _emf_name(name, labels)
                account = dict(labels).get("account")
                target = by_account.setdefault(account, {}) if account else stream
                target[metric] = target.get(metric, 0.0) + reported
        if self._lag_window:
            stream["E2eLagP50Seconds"] = weighted_quantile(self._lag_window, 0.5)
            stream["E2eLagP99Seconds"] = weighted_quantile(self._lag_window, 0.99)
            self._lag_window = []
        lines = []
        for account, metrics in sorted(by_account.items()):
            lines += _emf(namespace, timestamp_ms, metrics, {"account": account})
        lines += _emf(namespace, timestamp_ms, stream, {})
        return lines


class _Collector(Collector):
    """The callback series and the weighted latency histogram, for the registry."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        for name, read in self._metrics._callbacks.items():
            spec = METRICS[name]
            family: Any = (
                CounterMetricFamily(name, spec.help, labels=spec.labels)
                if spec.kind == "counter"
                else GaugeMetricFamily(name, spec.help, labels=spec.labels)
            )
            for labels, value in read().items():
                values = dict(labels)
                family.add_metric([values[label] for label in spec.labels], value)
            yield family
        lag = self._metrics.lag
        yield HistogramMetricFamily(
            "feed_e2e_lag_seconds",
            METRICS["feed_e2e_lag_seconds"].help,
            buckets=lag.cumulative(),
            sum_value=lag.sum,
        )


def _emf(
    namespace: str, timestamp_ms: int, metrics: dict[str, float], dims: dict[str, str]
) -> list[str]:
    finite = sorted((k, v) for k, v in metrics.items() if math.isfinite(v))
    lines = []
    for at in range(0, len(finite), _EMF_MAX_METRICS):
        emf = EphemeralMetrics(namespace=namespace, service=SERVICE)
        emf.set_timestamp(timestamp_ms)
        for dimension, label in dims.items():
            emf.add_dimension(name=dimension, value=label)
        for name, value in finite[at : at + _EMF_MAX_METRICS]:
            unit = MetricUnit.Seconds if name.endswith("Seconds") else MetricUnit.Count
            emf.add_metric(name=name, unit=unit, value=value)
        lines.append(json.dumps(emf.serialize_metric_set(), separators=(",", ":")))
    return lines


def _emf_name(name: str, labels: Labels) -> str:
    base = "".join(part.capitalize() for part in name.removeprefix("feed_").split("_"))
    extra = "".join(
        "".join(p.capitalize() for p in v.replace("-", "_").split("_"))
        for k, v in labels
        if k != "account"
    )
    return base + extra
