"""``python -m sandbox`` end to end: the real pipeline, a complete verdict, nothing left running.

These run the same command ``make run`` runs, as a child process, and watch
its process tree while it runs so that afterwards every process it ever
started can be checked for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.waiting import ConditionTimeoutError, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 420
# A dashboard line of a running sandbox with tick and Greeks rows in PostgreSQL.
FLOWING = r"running\].*\| rows ticks [1-9][0-9,]* greeks [1-9][0-9,]* \|"


class SandboxRun:
    """``python -m sandbox`` as a child; remembers every descendant it sees."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.run_dir = tmp_path / "run"
        self.log = tmp_path / "sandbox.out"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--plain", "--run-dir", str(self.run_dir), *args],
            cwd=REPO,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: set[int] = set()

    def watch(self) -> None:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self.seen.update(c.pid for c in children)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _alive_output(self) -> str:
        """The output so far, while the sandbox still runs (watching its children meanwhile)."""
        self.watch()
        assert self.process.poll() is None, self.output()
        return self.output()

    def wait_for_output(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the output, once the running sandbox prints it."""
        found = wait_until(
            lambda: re.search(pattern, self._alive_output()),
            within=timeout,
            every=0.2,
            what=f"{pattern!r} in the sandbox's output",
        )
        assert found is not None
        return found

    def _exited(self) -> bool:
        self.watch()
        return self.process.poll() is not None

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            wait_until(
                self._exited,
                within=timeout,
                every=0.2,
                what="the sandbox to exit",
            )
        except ConditionTimeoutError:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"sandbox did not finish in {timeout}s:\n{self.output()[-5000:]}")
        return int(self.process.returncode)

    def report(self) -> dict:
        return json.loads((self.run_dir / "report.json").read_text())

    def leftovers(self) -> list[str]:
        """Processes the run started that still exist (zombies of other parents count)."""
        pids = set(self.seen)
        for group in self.report()["run"]["processes"].values():
            pids.update(group)
        alive = []
        for pid in sorted(pids):
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
        return alive


def assert_complete(run: SandboxRun, code: int) -> dict:
    output = run.output()
    assert code == 0, output[-6000:]
    report = run.report()
    assert report["verdict"] == "complete", report["problems"]
    totals = report["totals"]
    assert totals["ticks_sent_by_simulator"] > 0
    assert (
        totals["ticks_sent_by_simulator"]
        == totals["distinct_ticks_in_kinesis"]
        == totals["ticks_in_kinesis"]
        == totals["tick_rows_in_postgres"]
    )
    assert totals["greeks_rows_in_postgres"] == totals["distinct_greeks_in_kinesis"] > 0
    assert "verdict: COMPLETE" in output
    assert run.leftovers() == []
    # Temporary data is gone; the report stays
    assert sorted(p.name for p in run.run_dir.iterdir()) == ["report.json"]
    return report


def test_ctrl_c_ends_the_run_cleanly_with_a_report(tmp_path: Path) -> None:
    # Given a sandbox with no fixed end, once ticks and Greeks reach PostgreSQL
    run = SandboxRun(tmp_path, "--duration", "0", "--rate", "400", "--accounts", "1")
    run.wait_for_output("running for", timeout=180)
    run.wait_for_output(FLOWING, timeout=120)
    # When the user presses Ctrl-C (SIGINT to the sandbox, as the terminal sends it)
    os.kill(run.process.pid, signal.SIGINT)
    code = run.finish()
    # Then the run drains and reports complete, and nothing is left running
    assert "interrupted: stopping the run" in run.output()
    assert_complete(run, code)


def test_a_chaotic_fixed_duration_run_ends_complete_with_every_part_working(
    tmp_path: Path,
) -> None:
    # When the sandbox runs for a fixed duration with every fault injected (drops, silence,
    # token expiry and rotation, Kinesis throttling, a Lambda crash mid-batch, a PostgreSQL
    # restart); one run, as each costs most of a minute to start and drain
    run = SandboxRun(tmp_path, "--duration", "40", "--rate", "600", "--accounts", "2", "--chaos")
    code = run.finish()
    # Then it exits 0 with a complete verdict, and every process it started is gone
    report = assert_complete(run, code)
    assert set(report["run"]["processes"]) >= {"postgres", "moto", "kite_sim", "feed_container"}
    # And every event source mapping ran its function
    mappings = report["run"]["mappings"]
    assert set(mappings) == {
        "ticks->greeks", "ticks->persist", "greeks->persist",
        "ticks->fanout-ticks", "greeks->fanout-greeks",
    }  # fmt: skip
    assert all(m["invocations"] > 0 for m in mappings.values())
    # And the WebSocket API's client received the chain's ticks and Greeks
    witness = report["run"]["websocket"]["witness"]
    assert witness["tick_records"] > 0
    assert witness["greeks_records"] > 0
    # And every fault was injected, and still nothing was lost or duplicated
    chaos = {event["name"]: event for event in report["run"]["chaos"]}
    assert set(chaos) == {
        "connection drop", "silent connection", "token expiry + rotation",
        "Kinesis throttling", "Lambda crash mid-batch", "PostgreSQL restart",
    }  # fmt: skip
    assert all(event["ok"] for event in chaos.values()), chaos
    assert "killed mid-invocation" in chaos["Lambda crash mid-batch"]["outcome"]
    assert report["run"]["kinesis_proxy"]["calls_refused"] > 0
    assert report["run"]["functions"]["persist"]["crashes"] >= 1
    assert report["run"]["simulator"]["faults_fired"]["drop"] >= 2
