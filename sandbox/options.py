"""What one sandbox run was asked to do, and where it writes."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandbox.lambda_runtime import REPO_ROOT


@dataclass
class Options:
    """``python -m sandbox`` options (see ``__main__``)."""

    duration_s: float = 60.0
    accounts: int = 2
    rate: float = 1000.0
    shards: int = 4
    chaos: bool = False
    keep: bool = False
    seed: int = 1
    run_dir: Path | None = None
    report_path: Path | None = None
    database_url: str | None = None
    live: bool | None = None
    drain_timeout_s: float = 120.0
    ticks_per_instrument: float = 4.0


@dataclass(frozen=True)
class RunPaths:
    """The run directory: logs and temporary data inside it, the report beside them."""

    run_dir: Path
    report_path: Path

    @classmethod
    def for_options(cls, options: Options, now: datetime | None = None) -> RunPaths:
        """``--run-dir`` (default ``.run/<UTC timestamp>``) and ``--report``, made absolute."""
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        run_dir = (options.run_dir or REPO_ROOT / ".run" / stamp).resolve()
        report_path = (options.report_path or run_dir / "report.json").resolve()
        return cls(run_dir, report_path)

    @property
    def logs(self) -> Path:
        """Every child's log."""
        return self.run_dir / "logs"

    @property
    def feed_spill(self) -> Path:
        """The feed container's spill directory."""
        return self.run_dir / "feed-spill"

    @property
    def postgres(self) -> Path:
        """The embedded PostgreSQL's data, when it is kept (``--keep``)."""
        return self.run_dir / "postgres"

    @property
    def endpoints(self) -> Path:
        """``endpoints.json``: how scripts reach the running sandbox (stale once it stops)."""
        return self.run_dir / "endpoints.json"

    def create(self) -> None:
        """Make the run and log directories."""
        self.logs.mkdir(parents=True, exist_ok=True)

    def remove_temporary(self, *, keep_logs: bool) -> None:
        """Remove temporary data (and the logs unless ``keep_logs``); the report always stays.

        ``endpoints.json`` goes too: its ports and tokens died with the run.
        """
        self.endpoints.unlink(missing_ok=True)
        if keep_logs:
            shutil.rmtree(self.feed_spill, ignore_errors=True)
            return
        for path in (self.logs, self.feed_spill, self.postgres):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            if not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()
