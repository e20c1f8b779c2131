"""`python -m benchmarks [name ...]`: run benchmarks and rewrite BENCHMARKS.md."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from tools import benchmarking


def discover() -> None:
    """Import every ``benchmarks/bench_*.py`` so its benchmarks register."""
    package_dir = Path(__file__).resolve().parent
    for module in pkgutil.iter_modules([str(package_dir)]):
        if module.name.startswith("bench_"):
            importlib.import_module(f"benchmarks.{module.name}")


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all when none are named)."""
    discover()
    names = [a for a in argv if a.strip()] or sorted(benchmarking.REGISTRY)
    unknown = [n for n in names if n not in benchmarking.REGISTRY]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {sorted(benchmarking.REGISTRY)}")
        return 2
    command = benchmarking.command_line(argv)
    failed = False
    for name in names:
        result = benchmarking.REGISTRY[name]()
        benchmarking.save(result, command)
        benchmarking.print_result(result)
        failed |= any(c.met is False for c in result.comparisons)
        failed |= any(not ok for _, ok in result.checks)
    benchmarking.write_report()
    print(f"\nwrote {benchmarking.REPORT_PATH.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
