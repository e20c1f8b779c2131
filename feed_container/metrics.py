"""Counters, gauges and a latency histogram, exposed as Prometheus text and CloudWatch EMF.

Small on purpose (no client library): the hot path only adds to dict
entries. ``/metrics`` renders the Prometheus text format; every
``emf_interval`` the service prints one Embedded Metric Format line per
account plus one for the stream to stdout, which the awslogs driver ships to
CloudWatch Logs where it becomes metrics, with no agent and no API calls.
Counters go to EMF as the change since the previous line.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

#: Latency buckets in seconds (frame receipt to PutRecords acknowledgement).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass
class Histogram:
    """Cumulative-bucket histogram with weighted observations."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[float] = field(default_factory=list)
    total: float = 0.0
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0.0] * (len(self.buckets) + 1)

    def observe(self, value: float, weight: float = 1.0) -> None:
        """Add ``weight`` observations of ``value``."""
        self.counts[bisect.bisect_left(self.buckets, value)] += weight
        self.total += weight
        self.sum += value * weight

    def quantile(self, q: float) -> float:
        """The bucket upper bound below which ``q`` of the observations lie (inf past the last)."""
        if self.total == 0:
            return math.nan
        target = q * self.total
        running = 0.0
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            if running >= target:
                return bound
        return math.inf


# name -> (type, help)
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "feed_ticks_received_total": ("counter", "Ticks decoded from Kite frames, per account"),
    "feed_ticks_accepted_total": ("counter", "Ticks that passed validation and were encoded"),
    "feed_ticks_invalid_total": ("counter", "Ticks dropped by the sanity bounds, by reason"),
    "feed_frames_total": ("counter", "Binary frames received (heartbeats included)"),
    "feed_frames_malformed_total": ("counter", "Frames with broken structure (intact part kept)"),
    "feed_packets_lost_total": ("counter", "Packets lost in malformed frames or skipped"),
    "feed_text_messages_total": ("counter", "Text messages from Kite, by type"),
    "feed_connects_total": ("counter", "Successful WebSocket handshakes"),
    "feed_reconnects_total": ("counter", "Reconnects after a connection ended"),
    "feed_watchdog_trips_total": ("counter", "Connections closed for silence"),
    "feed_unclean_closes_total": ("counter", "Stops whose close handshake did not complete"),
    "feed_handshake_refusals_total": ("counter", "Handshakes refused by HTTP status"),
    "feed_token_refreshes_total": ("counter", "Access tokens re-read from the vault"),
    "feed_connections_open": ("gauge", "Live WebSocket connections"),
    "feed_unassigned_instruments": ("gauge", "Desired instruments no connection has room for"),
    "feed_subscribed_instruments": ("gauge", "Instruments assigned to connections"),
    "feed_kinesis_requests_total": ("counter", "PutRecords calls, by outcome"),
    "feed_kinesis_records_acked_total": ("counter", "User records Kinesis acknowledged"),
    "feed_kinesis_throttled_records_total": ("counter", "Records Kinesis refused for throughput"),
    "feed_kinesis_failed_records_total": ("counter", "Records Kinesis failed, by error code"),
    "feed_kinesis_ambiguous_total": ("counter", "User records resent after an unknown outcome"),
    "feed_breaker_open": ("gauge", "1 while the Kinesis circuit breaker is open"),
    "feed_buffer_bytes": ("gauge", "Bytes of records held in memory"),
    "feed_spill_bytes": ("gauge", "Bytes of records spilled to disk"),
    "feed_spilled_records_total": ("counter", "User records written to the disk spill"),
    "feed_replayed_records_total": ("counter", "User records read back from the disk spill"),
    "feed_spill_corrupt_bytes_total": ("counter", "Spill bytes lost to corruption"),
    "feed_dropped_records_total": ("counter", "User records dropped: memory and disk full (ALARM)"),
    "feed_encode_errors_total": (
        "counter",
        "User records the batcher refused (too large, bad key)",
    ),
    "feed_e2e_lag_seconds": ("histogram", "Frame receipt to PutRecords acknowledgement"),
    "feed_accounts_retired_total": ("counter", "Accounts dropped after leaving the vault"),
    "feed_status_write_errors_total": ("counter", "Status records that could not be written"),
}


class Metrics:
    """Every metric of the process, by name and labels."""

    def __init__(self) -> None:
        self._values: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, Callable[[], dict[Labels, float]]] = {}
        self.lag = Histogram()
        self._emf_last: dict[tuple[str, Labels], float] = {}
        self._lag_window = Histogram()

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter."""
        series = self._values.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        self._values.setdefault(name, {})[tuple(sorted(labels.items()))] = value

    def gauge_callback(self, name: str, read: Callable[[], dict[Labels, float]]) -> None:
        """A gauge computed when read (buffer depth, open connections)."""
        self._gauges[name] = read

    def observe_lag(self, seconds: float, weight: float = 1.0) -> None:
        """One end-to-end latency sample, standing for ``weight`` user records."""
        self.lag.observe(seconds, weight)
        self._lag_window.observe(seconds, weight)

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (0 when never set)."""
        if name in self._gauges:
            return self._gauges[name]().get(tuple(sorted(labels.items())), 0.0)
        return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """Sum over every label set."""
        if name in self._gauges:
            return sum(self._gauges[name]().values())
        return sum(self._values.get(name, {}).values())

    def _series(self) -> dict[str, dict[Labels, float]]:
        out = {name: dict(series) for name, series in self._values.items()}
        for name, read in self._gauges.items():
            out[name] = read()
        return out

    # -- Prometheus ---------------------------------------------------------------

    def render_prometheus(self) -> str:
        """The text exposition format (version 0.0.4)."""
        lines: list[str] = []
        series = self._series()
        for name in sorted(set(series) | set(DESCRIPTIONS)):
            kind, help_text = DESCRIPTIONS.get(name, ("untyped", name))
            if kind == "histogram":
                continue
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted(series.get(name, {}).items()):
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
        name = "feed_e2e_lag_seconds"
        lines += [f"# HELP {name} {DESCRIPTIONS[name][1]}", f"# TYPE {name} histogram"]
        running = 0.0
        for bound, count in zip((*self.lag.buckets, math.inf), self.lag.counts, strict=True):
            running += count
            le = "+Inf" if bound == math.inf else repr(bound)
            lines.append(f'{name}_bucket{{le="{le}"}} {_number(running)}')
        lines += [f"{name}_sum {_number(self.lag.sum)}", f"{name}_count {_number(self.lag.total)}"]
        return "\n".join(lines) + "\n"

    # -- CloudWatch EMF -------------------------------------------------------------

    def emf_lines(self, namespace: str, timestamp_ms: int) -> list[str]:
        """EMF documents: one per account (per-account counters), one for the stream."""
        series = self._series()
        by_account: dict[str, dict[str, float]] = {}
        stream: dict[str, float] = {}
        for name, values in series.items():
            kind = DESCRIPTIONS.get(name, ("gauge", ""))[0]
            for labels, value in values.items():
                key = (name, labels)
                reported = value
                if kind == "counter":
                    reported = value - self._emf_last.get(key, 0.0)
                    self._emf_last[key] = value
                metric = _emf_name(name, labels)
                account = dict(labels).get("account")
                target = by_account.setdefault(account, {}) if account else stream
                target[metric] = target.get(metric, 0.0) + reported
        if self._lag_window.total:
            stream["E2eLagP50Seconds"] = self._lag_window.quantile(0.5)
            stream["E2eLagP99Seconds"] = self._lag_window.quantile(0.99)
            self._lag_window = Histogram()
        lines = []
        for account, metrics in sorted(by_account.items()):
            lines.append(_emf(namespace, timestamp_ms, metrics, {"account": account}))
        lines.append(_emf(namespace, timestamp_ms, stream, {}))
        return lines


def _emf(namespace: str, timestamp_ms: int, metrics: dict[str, float], dims: dict[str, str]) -> str:
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    doc: dict[str, object] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [sorted(dims)],
                    "Metrics": [
                        {"Name": k, "Unit": "Seconds" if k.endswith("Seconds") else "Count"}
                        for k in sorted(finite)
                    ],
                }
            ],
        },
        **dims,
        **finite,
    }
    return json.dumps(doc, separators=(",", ":"))


def _emf_name(name: str, labels: Labels) -> str:
    base = "".join(part.capitalize() for part in name.removeprefix("feed_").split("_"))
    extra = "".join(
        "".join(p.capitalize() for p in v.replace("-", "_").split("_"))
        for k, v in labels
        if k != "account"
    )
    return base + extra


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"'.replace("\\", "\\\\").replace("\n", "\\n") for k, v in labels)
    return "{" + inner + "}"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if value != int(value) else str(int(value))
