"""Benchmark harness: measure candidates against a named anchor in the same run.

These machines are noisy, so absolute figures are recorded but the verdict is
always a ratio: every round times the anchor and each candidate back to back,
and the reported ratio is the median of the per-round ratios. Each benchmark
writes ``benchmarks/results/<name>.json``; ``BENCHMARKS.md`` is rendered from
all result files, so running one benchmark keeps the others' last figures.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
REPORT_PATH = ROOT / "BENCHMARKS.md"


@dataclass
class Figure:
    """One absolute measurement (context for the ratios, not a verdict)."""

    label: str
    value: float
    unit: str


@dataclass
class Comparison:
    """A candidate's speed relative to the anchor measured in the same rounds."""

    candidate: str
    anchor: str
    ratio: float
    target: float | None = None

    @property
    def met(self) -> bool | None:
        """Whether the ratio reaches the target (None when there is no target)."""
        return None if self.target is None else self.ratio >= self.target


@dataclass
class Result:
    """What one benchmark found, as recorded in BENCHMARKS.md."""

    name: str
    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str = ""
    recorded_at: str = ""
    machine: str = ""


Benchmark = Callable[[], Result]
REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    """Register a benchmark under ``name`` (what ``make bench ONLY=name`` selects)."""

    def register(fn: Benchmark) -> Benchmark:
        REGISTRY[name] = fn
        return fn

    return register


def time_call(fn: Callable[[], object], min_seconds: float) -> float:
    """Seconds per call of ``fn``, averaged over enough calls to last ``min_seconds``."""
    calls = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < min_seconds or calls == 0:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
    return elapsed / calls


def interleaved_rates(
    contenders: dict[str, Callable[[], object]],
    items_per_call: int,
    anchor: str,
    *,
    rounds: int = 7,
    min_seconds: float = 0.25,
) -> tuple[dict[str, float], dict[str, float]]:
    """Time every contender once per round, in turn, for ``rounds`` rounds.

    Returns (median items/s per contender, median per-round ratio to ``anchor``).
    Timing the anchor in the same round as each candidate cancels most drift
    in machine speed between rounds.
    """
    if anchor not in contenders:
        raise ValueError(f"anchor {anchor!r} is not among the contenders")
    for fn in contenders.values():  # warm caches, JIT-free but allocator-warm
        fn()
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    ratios: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        this_round = {
            name: items_per_call / time_call(fn, min_seconds) for name, fn in contenders.items()
        }
        for name, rate in this_round.items():
            per_round[name].append(rate)
            ratios[name].append(rate / this_round[anchor])
    rates = {name: statistics.median(v) for name, v in per_round.items()}
    return rates, {name: statistics.median(v) for name, v in ratios.items()}


def machine_description() -> str:
    """CPU model, core count and Python version, for the report."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def save(result: Result, command: str) -> Path:
    """Stamp ``result`` with command, time and machine; write its JSON file."""
    result.command = command
    result.recorded_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    result.machine = machine_description()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{result.name}.json"
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return path


def load_all() -> list[Result]:
    """Every recorded result, in name order."""
    results = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        raw = json.loads(path.read_text())
        raw["figures"] = [Figure(**f) for f in raw["figures"]]
        raw["comparisons"] = [Comparison(**c) for c in raw["comparisons"]]
        raw["checks"] = [tuple(c) for c in raw["checks"]]
        results.append(Result(**raw))
    return results


def _format_value(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def render(results: list[Result]) -> str:
    """BENCHMARKS.md from recorded results."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`); do not edit by hand.",
        "Verdicts are ratios against an anchor measured in the same run; absolute",
        "figures are context and vary with the machine.",
        "",
    ]
    for r in results:
        lines += [f"## {r.title}", "", f"- command: `{r.command}`", f"- recorded: {r.recorded_at}"]
        lines += [f"- machine: {r.machine}", "", r.method, ""]
        if r.comparisons:
            lines += ["| candidate | anchor | ratio | target | met |", "|---|---|---:|---:|---|"]
            for c in r.comparisons:
                target = "-" if c.target is None else f">= {c.target:g}x"
                met = "-" if c.met is None else ("yes" if c.met else "**no**")
                lines.append(f"| {c.candidate} | {c.anchor} | {c.ratio:.2f}x | {target} | {met} |")
            lines.append("")
        if r.figures:
            lines += ["| figure | value | unit |", "|---|---:|---|"]
            lines += [f"| {f.label} | {_format_value(f.value)} | {f.unit} |" for f in r.figures]
            lines.append("")
        if r.checks:
            lines += ["| check | passed |", "|---|---|"]
            lines += [f"| {label} | {'yes' if ok else '**no**'} |" for label, ok in r.checks]
            lines.append("")
        lines += [f"- {n}" for n in r.notes]
        if r.notes:
            lines.append("")
    return "\n".join(lines)


def write_report() -> None:
    """Rewrite BENCHMARKS.md from every result file."""
    REPORT_PATH.write_text(render(load_all()))


def command_line(names: list[str]) -> str:
    """The `make` command that reproduces a run of ``names``."""
    return "make bench" + (f" ONLY={' '.join(names)}" if names else "")


def print_result(result: Result) -> None:
    """A short console summary of one result."""
    out = sys.stdout
    print(f"\n== {result.title}", file=out)
    for c in result.comparisons:
        verdict = "" if c.met is None else ("  (target met)" if c.met else "  (TARGET MISSED)")
        print(f"  {c.candidate} vs {c.anchor}: {c.ratio:.2f}x{verdict}", file=out)
    for f in result.figures:
        print(f"  {f.label}: {_format_value(f.value)} {f.unit}", file=out)
    for label, ok in result.checks:
        print(f"  {label}: {'ok' if ok else 'FAILED'}", file=out)
