"""Child processes the sandbox owns: each in its own process group, stopped group-wide.

A child runs in a new session, so the terminal's Ctrl-C reaches only the
sandbox, which then stops its children in order. Stopping sends SIGTERM to
the child's whole process group, waits, then SIGKILLs the group: nothing a
child started outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess  # nosec B404 # starts this repository's own entry points
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO


class ProcessError(RuntimeError):
    """A child failed to start or exited when it should be running."""


class ManagedProcess:
    """One child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    @classmethod
    def python(cls, name: str, module: str, args: Sequence[str], **kwargs: Any) -> ManagedProcess:
        """``python -m module args...`` with this interpreter."""
        return cls(name, [sys.executable, "-m", module, *args], **kwargs)

    def start(self) -> ManagedProcess:
        """Start the child (its own session and process group)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")  # type: ignore[assignment]
        self._process = subprocess.Popen(  # nosec B603 # our own entry points, fixed arguments
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=str(self.cwd) if self.cwd else None,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def check_running(self) -> None:
        """Raise :class:`ProcessError` (with the log's tail) if the child has exited."""
        if not self.running:
            raise ProcessError(
                f"{self.name} exited with {self.returncode}; log tail:\n{self.tail()}"
            )

    def tail(self, chars: int = 3000) -> str:
        """The end of the child's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def wait_for_json_line(self, key: str, timeout: float) -> dict[str, Any]:
        """The first JSON object line in the log that has ``key`` (startup info)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            with contextlib.suppress(OSError):
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if line.startswith("{") and f'"{key}"' in line:
                        with contextlib.suppress(ValueError):
                            document: dict[str, Any] = json.loads(line)
                            return document
            time.sleep(0.1)
        raise ProcessError(f"{self.name} printed no {key!r} within {timeout}s:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's process group."""
        if self.running and self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL it; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        # Whatever the leader did, nothing of its group may survive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode
