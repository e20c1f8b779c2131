"""The live view of a sandbox run: a terminal dashboard on a TTY, periodic log lines otherwise.

Each second the runner takes a :class:`Sample` of every component (the
simulator's counters, the feed's ``/metrics``, the event source mappings, the
functions' invocation counts and embedded metrics) and the dashboard turns
two consecutive samples into rates: ticks/s out of the simulator and into
Kinesis, connections per account, invocations and iterator age per mapping,
Greeks computed, rows persisted, errors.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from sandbox.esm import MappingView
from sandbox.lambda_runtime import FunctionStats

PROM_LINE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Labels = tuple[tuple[str, str], ...]


def parse_prometheus(text: str) -> dict[str, dict[Labels, float]]:
    """Prometheus text exposition -> {metric: {labels: value}} (comments skipped)."""
    metrics: dict[str, dict[Labels, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = PROM_LINE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        labels = tuple(sorted(PROM_LABEL.findall(match.group("labels") or "")))
        metrics.setdefault(match.group("name"), {})[labels] = value
    return metrics


def total(metrics: Mapping[str, Mapping[Labels, float]], name: str) -> float:
    """Sum of a metric over its label sets (0 when absent)."""
    return sum(metrics.get(name, {}).values())


def by_label(
    metrics: Mapping[str, Mapping[Labels, float]], name: str, label: str
) -> dict[str, float]:
    """A metric summed per value of one label."""
    out: dict[str, float] = {}
    for labels, value in metrics.get(name, {}).items():
        key = dict(labels).get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


@dataclass
class Sample:
    """Everything the dashboard shows, at one instant."""

    elapsed_s: float
    sim_sent: int = 0
    sim_connections: dict[str, int] = field(default_factory=dict)  # user id -> live connections
    feed: dict[str, dict[Labels, float]] = field(default_factory=dict)
    mappings: dict[str, MappingView] = field(default_factory=dict)
    functions: dict[str, FunctionStats] = field(default_factory=dict)
    on_failure: int = 0
    phase: str = "running"
    chaos: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _rate(now: float, before: float, seconds: float) -> float:
    return max(0.0, (now - before) / seconds) if seconds > 0 else 0.0


def _metric(sample: Sample, function: str, name: str) -> float:
    stats = sample.functions.get(function)
    return stats.metrics.get(name, 0.0) if stats else 0.0


@dataclass
class View:
    """The numbers of one refresh, derived from two samples."""

    elapsed_s: float
    phase: str
    sim_rate: float
    sim_sent: int
    kinesis_rate: float
    kinesis_acked: float
    connections: dict[str, str]
    mappings: list[dict[str, Any]]
    greeks_rate: float
    greeks_published: float
    ticks_persisted: float
    greeks_persisted: float
    errors: dict[str, float]
    chaos: list[str]
    notes: list[str]


def derive(previous: Sample | None, current: Sample) -> View:
    """Rates and totals between two samples."""
    seconds = current.elapsed_s - previous.elapsed_s if previous else 0.0
    prev = previous or current
    acked = total(current.feed, "feed_ticks_acked_total") or total(
        current.feed, "feed_kinesis_records_acked_total"
    )
    acked_before = total(prev.feed, "feed_ticks_acked_total") or total(
        prev.feed, "feed_kinesis_records_acked_total"
    )
    feed_connections = by_label(current.feed, "feed_connections_open", "account")
    accounts = sorted(set(current.sim_connections) | {a for a in feed_connections if a})
    connections = {
        a: f"{current.sim_connections.get(a, 0)} at Kite"
        + (f", {int(feed_connections[a])} in feed" if a in feed_connections else "")
        for a in accounts
    }
    mappings = []
    for name, view in sorted(current.mappings.items()):
        before = prev.mappings.get(name, view)
        mappings.append(
            {
                "name": name,
                "invocations_per_s": _rate(
                    view.total("invocations"), before.total("invocations"), seconds
                ),
                "invocations": int(view.total("invocations")),
                "errors": int(view.total("function_errors")),
                "iterator_age_ms": view.iterator_age_ms,
                "pending": int(sum(s.pending for s in view.shards)),
            }
        )
    errors = {
        name: float(stats.errors)
        for name, stats in sorted(current.functions.items())
        if stats.errors
    }
    for name in (
        "feed_ticks_invalid_total",
        "feed_dropped_records_total",
        "feed_watchdog_trips_total",
    ):
        value = total(current.feed, name)
        if value:
            errors[name.removeprefix("feed_").removesuffix("_total")] = value
    if current.on_failure:
        errors["on_failure_batches"] = float(current.on_failure)
    return View(
        elapsed_s=current.elapsed_s,
        phase=current.phase,
        sim_rate=_rate(current.sim_sent, prev.sim_sent, seconds),
        sim_sent=current.sim_sent,
        kinesis_rate=_rate(acked, acked_before, seconds),
        kinesis_acked=acked,
        connections=connections,
        mappings=mappings,
        greeks_rate=_rate(
            _metric(current, "greeks", "GreeksPublished"),
            _metric(prev, "greeks", "GreeksPublished"),
            seconds,
        ),
        greeks_published=_metric(current, "greeks", "GreeksPublished"),
        ticks_persisted=_metric(current, "persist", "TicksInserted"),
        greeks_persisted=_metric(current, "persist", "GreeksInserted"),
        errors=errors,
        chaos=current.chaos[-4:],
        notes=current.notes[-3:],
    )


def plain_line(view: View) -> str:
    """One log line (CI, pipes)."""
    esm = " ".join(
        f"{m['name']}={m['invocations']}inv/{m['errors']}err/{m['iterator_age_ms']:.0f}ms"
        for m in view.mappings
    )
    conns = ",".join(f"{a}:{c.split()[0]}" for a, c in view.connections.items())
    errors = ",".join(f"{k}={v:.0f}" for k, v in view.errors.items()) or "none"
    return (
        f"[{view.elapsed_s:6.1f}s {view.phase}] sim {view.sim_rate:,.0f}/s ({view.sim_sent:,}) "
        f"-> kinesis {view.kinesis_rate:,.0f}/s ({view.kinesis_acked:,.0f}) | conns {conns or '-'} "
        f"| {esm or 'no mappings'} | greeks {view.greeks_published:,.0f} "
        f"| rows ticks {view.ticks_persisted:,.0f} greeks {view.greeks_persisted:,.0f} "
        f"| errors {errors}"
    )


def rich_table(view: View) -> Any:
    """The dashboard as a ``rich`` renderable."""
    from rich.table import Table

    table = Table(
        title=f"ticker-service sandbox  {view.elapsed_s:5.0f}s  [{view.phase}]",
        title_justify="left",
        show_header=True,
        expand=False,
    )
    table.add_column("what", style="bold")
    table.add_column("now", justify="right")
    table.add_column("total", justify="right")
    table.add_row("simulator ticks", f"{view.sim_rate:,.0f}/s", f"{view.sim_sent:,}")
    table.add_row("into Kinesis ticks", f"{view.kinesis_rate:,.0f}/s", f"{view.kinesis_acked:,.0f}")
    for account, text in view.connections.items():
        table.add_row(f"connections {account}", text, "")
    for m in view.mappings:
        table.add_row(
            f"Lambda {m['name']}",
            f"{m['invocations_per_s']:,.1f} inv/s, age {m['iterator_age_ms']:,.0f} ms",
            f"{m['invocations']:,} inv, {m['errors']} err, {m['pending']:,} pending",
        )
    table.add_row("Greeks computed", f"{view.greeks_rate:,.0f}/s", f"{view.greeks_published:,.0f}")
    table.add_row("rows persisted", "ticks", f"{view.ticks_persisted:,.0f}")
    table.add_row("", "greeks", f"{view.greeks_persisted:,.0f}")
    errors = ", ".join(f"{k} {v:,.0f}" for k, v in view.errors.items()) or "none"
    table.add_row("errors", errors, "", style="red" if view.errors else None)
    for event in view.chaos:
        table.add_row("chaos", event, "", style="yellow")
    for note in view.notes:
        table.add_row("", note, "", style="dim")
    return table


class Dashboard:
    """Refreshes a live table on a TTY; prints a line every ``log_every_s`` otherwise."""

    def __init__(
        self, out: TextIO | None = None, *, live: bool | None = None, log_every_s: float = 5.0
    ) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.log_every_s = log_every_s
        self._previous: Sample | None = None
        self._last_logged = -1e9
        self._live: Any = None

    def __enter__(self) -> Dashboard:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self.out), refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, sample: Sample, *, force_line: bool = False) -> View:
        """Show ``sample``; returns the derived view."""
        view = derive(self._previous, sample)
        self._previous = sample
        if self._live is not None:
            self._live.update(rich_table(view))
        elif force_line or sample.elapsed_s - self._last_logged >= self.log_every_s:
            self._last_logged = sample.elapsed_s
            print(plain_line(view), file=self.out, flush=True)
        return view

    def message(self, text: str) -> None:
        """A line above the live table (or in the log)."""
        if self._live is not None:
            self._live.console.print(text)
        else:
            print(text, file=self.out, flush=True)
