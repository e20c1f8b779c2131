"""``python -m sandbox`` (``make run ARGS="..."``): the service's data path on this machine.

Starts PostgreSQL, moto, the Kite simulator, the Lambda functions behind an
event source mapping emulator and the feed container on 127.0.0.1, shows a
live dashboard, and ends with a consistency report (printed, and written as
JSON): ticks sent by the simulator = ticks in Kinesis = rows in PostgreSQL,
Greeks in Kinesis = Greeks rows, with a verdict. Exit status 0 only when the
verdict is complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from sandbox.options import Options
from sandbox.runner import main_run


def parse_args(argv: list[str]) -> Options:
    """The command line, as :class:`sandbox.options.Options`."""
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds to run (0: until Ctrl-C); default 60"
    )
    p.add_argument("--accounts", type=int, default=2, help="simulated Kite accounts; default 2")
    p.add_argument(
        "--rate", type=float, default=1000.0, help="target ticks/s from the simulator; default 1000"
    )
    p.add_argument("--shards", type=int, default=4, help="shards per Kinesis stream; default 4")
    p.add_argument("--chaos", action="store_true", help="inject faults during the run")
    p.add_argument("--keep", action="store_true", help="keep logs and data in the run directory")
    p.add_argument("--seed", type=int, default=1, help="the simulator's market seed; default 1")
    p.add_argument("--run-dir", type=Path, default=None, help="default .run/<UTC timestamp>")
    p.add_argument(
        "--report", type=Path, default=None, help="report JSON path; default <run-dir>/report.json"
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="use this PostgreSQL server (a fresh database on it) instead of an embedded one",
    )
    view = p.add_mutually_exclusive_group()
    view.add_argument("--live", dest="live", action="store_true", default=None, help="live table")
    view.add_argument("--plain", dest="live", action="store_false", help="log lines, no table")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="give up draining after this many seconds without progress; default 120",
    )
    args = p.parse_args(argv)
    if args.accounts < 1 or args.shards < 1 or args.rate <= 0 or args.duration < 0:
        p.error("--accounts and --shards must be >= 1, --rate > 0, --duration >= 0")
    return Options(
        duration_s=args.duration,
        accounts=args.accounts,
        rate=args.rate,
        shards=args.shards,
        chaos=args.chaos,
        keep=args.keep,
        seed=args.seed,
        run_dir=args.run_dir,
        report_path=args.report,
        database_url=args.database_url,
        live=args.live,
        drain_timeout_s=args.drain_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    return main_run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
