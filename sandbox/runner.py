"""The sandbox run: start everything on 127.0.0.1, run, drain, report, stop everything.

The pieces, each its own module:

- :mod:`sandbox.stack` starts the components in dependency order and stops
  them in reverse (:mod:`sandbox.environments` says what each child's
  environment holds);
- :mod:`sandbox.observe` samples the pipeline for the dashboard;
- :mod:`sandbox.chaos_driver` injects the ``--chaos`` faults, on
  :mod:`sandbox.chaos`'s schedule;
- :mod:`sandbox.drain` lets everything in flight arrive, or says what did not;
- :mod:`sandbox.run_report` reads the witnesses and writes the report.

This module composes them. The run ends at ``--duration`` or on Ctrl-C; then
the drain and the report. A second Ctrl-C skips the drain. Everything is
stopped whatever happened, and temporary data is removed unless ``--keep``
(or the run failed, when the logs are worth reading).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, TextIO

from sandbox.chaos import ChaosSchedule
from sandbox.chaos_driver import ChaosDriver
from sandbox.dashboard import Dashboard
from sandbox.drain import Drain
from sandbox.observe import Observer
from sandbox.options import Options, RunPaths
from sandbox.processes import ProcessError
from sandbox.report import Report, render
from sandbox.run_report import make_report
from sandbox.stack import RunNotes, Stack
from sandbox.trading import OrderDriver
from sandbox.websocket_api import Witness

DRIVER_SYMBOLS = ["INFY", "RELIANCE", "TCS", "SBIN", "HDFCBANK"]

DRAIN_LOG_EVERY_S = 5.0


class Sandbox:
    """One ``make run``."""

    def __init__(self, options: Options, out: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        self.paths = RunPaths.for_options(options)
        self.interrupts = 0
        self._stop = threading.Event()
        self.notes = RunNotes()
        self.stack = Stack(options, self.paths, self.say, self.notes)
        self.observer = Observer(self.stack, self.notes)
        self.chaos: ChaosSchedule | None = None
        self.driver: OrderDriver | None = None
        self.witness: Witness | None = None

    def say(self, text: str) -> None:
        """A line of the run's own narration."""
        print(text, file=self.out, flush=True)

    def interrupt(self, signum: int = signal.SIGINT, frame: Any = None) -> None:
        """Ctrl-C: the first ends the run (drain and report), the second skips the drain."""
        self.interrupts += 1
        self._stop.set()
        if self.interrupts == 1:
            self.say(
                "\ninterrupted: stopping the run, draining and reporting (Ctrl-C again to skip)"
            )
        else:
            self.say("\ninterrupted again: skipping the drain")

    def run(self) -> int:
        """Start, run, drain, report, stop. Returns the exit code (0 only if complete)."""
        self.paths.create()
        report: Report | None = None
        error: BaseException | None = None
        try:
            self.start()
            self.serve()
            if self.interrupts < 2:
                self.drain()
                report = self.report()
        except (Exception, KeyboardInterrupt) as exc:
            error = exc
            self.say(f"sandbox failed: {exc!r}")
        finally:
            self.stop_all()
        complete = report is not None and report.complete and error is None
        self.cleanup_files(keep_logs=not complete)
        if report is not None:
            self.say(render(report, str(self.paths.report_path)))
        if self.interrupts >= 2 and report is None:
            return 130
        return 0 if complete else 1

    def start(self) -> None:
        """Every component, then the line that says the run is on."""
        o = self.options
        self.say(f"ticker-service sandbox: run directory {self.paths.run_dir}")
        self.stack.start()
        self.say(
            f"running for {o.duration_s:g}s: {o.accounts} accounts, target {o.rate:,.0f} ticks/s, "
            f"{o.shards} shards per stream{', chaos on' if o.chaos else ''} (Ctrl-C ends the run)"
        )

    def serve(self) -> None:
        """The run: the dashboard until the duration ends or Ctrl-C (with the faults, if asked)."""
        o = self.options
        if o.chaos:
            events = ChaosDriver(self.stack, self._stop).events()
            self.chaos = self.observer.chaos = ChaosSchedule(events, o.duration_s or 60.0)
            self.chaos.start()
        if self.stack.api is not None:
            self.driver = OrderDriver(self.stack.api, DRIVER_SYMBOLS)
            self.driver.start()
        gateway, api, chain = self.stack.ws_gateway, self.stack.api, self.stack.ws_chain
        if gateway is not None and api is not None and chain:
            self.witness = Witness(gateway.url, api.trader.id_token, chain)
            self.witness.start()
        started = time.monotonic()
        with Dashboard(self.out, live=o.live) as dashboard:
            while not self._stop.is_set():
                if o.duration_s and time.monotonic() - started >= o.duration_s:
                    break
                self.stack.check_children()
                dashboard.update(self.observer.sample("running"))
                self._stop.wait(1.0)
            dashboard.update(self.observer.sample("run over"), force_line=True)
        if self.chaos is not None:
            self.chaos.stop()
        if self.driver is not None:
            self.driver.stop()

    def drain(self) -> None:
        """Stop new ticks, let everything in flight reach PostgreSQL (see :mod:`sandbox.drain`)."""
        drain = Drain(
            self.stack,
            self.observer,
            self.notes,
            timeout_s=self.options.drain_timeout_s,
            skipped=lambda: self.interrupts >= 2,
        )
        with Dashboard(self.out, live=self.options.live, log_every_s=DRAIN_LOG_EVERY_S) as board:
            drain.run(board)

    def report(self) -> Report:
        """Read the witnesses and write the report (see :mod:`sandbox.run_report`)."""
        if self.witness is not None:  # after the drain: it has received all there was
            self.witness.stop()
        return make_report(
            self.stack,
            self.notes,
            chaos=self.chaos.records if self.chaos else [],
            elapsed_s=self.observer.elapsed(),
            report_path=self.paths.report_path,
            driver=self.driver,
            witness=self.witness,
        )

    def stop_all(self) -> None:
        """Stop the faults and the orders, then every component, last started first."""
        if self.chaos is not None:
            self.chaos.stop()
        if self.driver is not None:
            self.driver.stop()
        if self.witness is not None:
            self.witness.stop()
        self.stack.stop()

    def cleanup_files(self, *, keep_logs: bool) -> None:
        """Remove temporary data unless asked to keep it; the report always stays."""
        if self.options.keep:
            self.say(f"kept: {self.paths.run_dir}")
            return
        if keep_logs:
            self.say(f"logs kept for inspection: {self.paths.logs}")
        self.paths.remove_temporary(keep_logs=keep_logs)


def main_run(options: Options, out: TextIO | None = None) -> int:
    """Run with SIGINT/SIGTERM handled (the first ends the run, the second skips the drain)."""
    sandbox = Sandbox(options, out)
    previous = {
        sig: signal.signal(sig, sandbox.interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return sandbox.run()
    except ProcessError as exc:
        print(f"sandbox failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
