"""Lambda functions on loopback: execution environments as long-lived worker processes.

A :class:`LambdaFunction` is one function: its handler, environment variables,
timeout and a concurrency limit. Each concurrent invocation runs in an
execution environment, a :mod:`sandbox.lambda_worker` process that imported the
handler once (a cold start) and is reused while it stays healthy, as Lambda
reuses a warm environment. A function error is returned, not raised; a crash
(the process died) or a timeout (the process is killed) is a function error
too, and the environment is discarded, so the next invocation cold-starts a
fresh one, exactly as Lambda replaces a broken environment.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import signal
import subprocess  # nosec B404 # runs our own worker module with fixed arguments
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from infra.definitions import load_functions
from sandbox.esm import InvokeResult

REPO_ROOT = Path(__file__).resolve().parent.parent
INIT_TIMEOUT_S = 60.0
# What Lambda's Python runtime puts in every environment besides the function's own.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
# A test run measuring coverage in child processes passes its settings on.
PASSTHROUGH_PREFIXES = ("COVERAGE_",)


@functools.cache
def declared_handlers() -> dict[str, str]:
    """Each function's handler, by name, from ``[tool.ticker-service.functions]``."""
    return {name: d.handler for name, d in load_functions().items()}


class WorkerError(Exception):
    """The execution environment failed outside the handler (crash, timeout, bad reply)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass
class FunctionStats:
    """What CloudWatch would show for one function."""

    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    cold_starts: int = 0
    init_errors: int = 0
    duration_ms_total: float = 0.0
    duration_ms_max: float = 0.0
    environments: int = 0
    busy: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    last_error: str | None = None


class _Environment:
    """One worker process serving invocations one at a time."""

    def __init__(self, function: LambdaFunction) -> None:
        self.function = function
        self.busy_since: float | None = None
        self._buffer = b""
        self._log: TextIO = function.log_path.open("a", encoding="utf-8")
        self.process = subprocess.Popen(  # nosec B603 # our worker module, fixed arguments
            [sys.executable, "-m", "sandbox.lambda_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=function.environment(),
            cwd=str(function.code_root),
            start_new_session=True,
        )
        self._selector = selectors.DefaultSelector()
        if self.process.stdout is None or self.process.stdin is None:
            raise WorkerError("Runtime.Unknown", "worker pipes missing")
        self._selector.register(self.process.stdout, selectors.EVENT_READ)
        ready = self._read(time.monotonic() + INIT_TIMEOUT_S)
        if "initError" in ready:
            self.kill()
            error = ready["initError"]
            raise WorkerError(
                "Runtime.ImportModuleError", f"{error['errorType']}: {error['errorMessage']}"
            )
        function.add_metrics(ready.get("metrics") or {})

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def invoke(self, event: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        deadline = time.time() + timeout_s
        line = json.dumps(
            {"requestId": request_id, "deadlineMs": int(deadline * 1000), "event": event},
            separators=(",", ":"),
        )
        stdin = self.process.stdin
        if stdin is None:
            raise WorkerError("Runtime.Unknown", "worker stdin missing")
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise self._crash() from exc
        reply = self._read(time.monotonic() + timeout_s)
        if reply.get("requestId") != request_id:
            raise WorkerError("Runtime.InvalidResponse", "reply for another request")
        return reply

    def _read(self, deadline: float) -> dict[str, Any]:
        stdout = self.process.stdout
        if stdout is None:
            raise WorkerError("Runtime.Unknown", "worker stdout missing")
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise WorkerError(
                    "Sandbox.Timedout",
                    f"Task timed out after {self.function.timeout_s:.2f} seconds",
                )
            if not self._selector.select(timeout=min(remaining, 1.0)):
                continue
            chunk = os.read(stdout.fileno(), 1 << 20)
            if not chunk:
                raise self._crash()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def _crash(self) -> WorkerError:
        code = self.process.wait(timeout=10)
        reason = f"signal: {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return WorkerError("Runtime.ExitError", f"Runtime exited with error: {reason}")

    def kill(self) -> None:
        """Kill the worker and everything it started."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.close_pipes()

    def close_pipes(self) -> None:
        with contextlib.suppress(Exception):
            self._selector.close()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(Exception):
                    pipe.close()
        with contextlib.suppress(Exception):
            self._log.close()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close stdin (the worker exits), then kill it if it lingers."""
        if self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        self.kill()


class LambdaFunction:
    """A function: invoke it synchronously; environments come and go as Lambda's do."""

    def __init__(
        self,
        name: str,
        handler: str,
        *,
        env: Mapping[str, str],
        log_dir: Path,
        timeout_s: float = 60.0,
        memory_mb: int = 512,
        max_concurrency: int = 4,
        region: str = "ap-south-1",
        account_id: str = "123456789012",
        code_root: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.handler = handler
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_concurrency = max_concurrency
        self.region = region
        self.arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
        self.code_root = code_root
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._env = dict(env)
        self._idle: list[_Environment] = []
        self._busy: set[_Environment] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._stats = FunctionStats()
        self._closed = False
        self.started_pids: list[int] = []  # every environment's process, for leftover checks

    @classmethod
    def declared(cls, name: str, **settings: Any) -> LambdaFunction:
        """The function ``name`` with the handler ``pyproject.toml`` declares for it (the one
        the CDK stack deploys); ``settings`` as for the constructor."""
        return cls(name, declared_handlers()[name], **settings)

    def environment(self) -> dict[str, str]:
        """The variables an environment of this function sees."""
        base = {
            k: v
            for k, v in os.environ.items()
            if k in PASSTHROUGH_ENV or k.startswith(PASSTHROUGH_PREFIXES)
        }
        base["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.code_root), base.get("PYTHONPATH", "")) if p
        )
        return {
            **base,
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "LAMBDA_TASK_ROOT": str(self.code_root),
            "SANDBOX_FUNCTION_ARN": self.arn,
            "_HANDLER": self.handler,
            **self._env,
        }

    def add_metrics(self, metrics: Mapping[str, float]) -> None:
        with self._lock:
            for name, value in metrics.items():
                self._stats.metrics[name] = self._stats.metrics.get(name, 0.0) + value

    def stats(self) -> FunctionStats:
        """A copy of the counters."""
        with self._lock:
            copy = FunctionStats(**{**vars(self._stats), "metrics": dict(self._stats.metrics)})
            copy.environments = len(self._idle) + len(self._busy)
            copy.busy = len(self._busy)
            return copy

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        return self.invoke(event)

    def invoke(self, event: Mapping[str, Any]) -> InvokeResult:
        """Run the handler on ``event`` in a free environment (waiting for one if all are busy)."""
        with self._slots:
            started = time.monotonic()
            try:
                environment = self._acquire()
            except WorkerError as exc:
                return self._record(started, None, InvokeResult.error(exc.error_type, str(exc)))
            try:
                reply = environment.invoke(event, self.timeout_s)
            except WorkerError as exc:
                environment.kill()
                with self._lock:
                    self._busy.discard(environment)
                    if exc.error_type == "Sandbox.Timedout":
                        self._stats.timeouts += 1
                    else:
                        self._stats.crashes += 1
                return self._record(started, None, InvokeResult.error(exc.error_type, str(exc)))
            with self._lock:
                self._busy.discard(environment)
                environment.busy_since = None
                if self._closed:
                    environment.shutdown()
                else:
                    self._idle.append(environment)
            if "errorType" in reply:
                result = InvokeResult.error(reply["errorType"], reply.get("errorMessage", ""))
            else:
                result = InvokeResult(reply.get("payload"))
            return self._record(started, reply.get("metrics"), result)

    def _acquire(self) -> _Environment:
        with self._lock:
            if self._closed:
                raise WorkerError("Sandbox.Closed", f"function {self.name} is shut down")
            environment = self._idle.pop() if self._idle else None
        if environment is None:
            try:
                environment = _Environment(self)
            except WorkerError:
                with self._lock:
                    self._stats.init_errors += 1
                raise
            with self._lock:
                self._stats.cold_starts += 1
                self.started_pids.append(environment.pid)
        with self._lock:
            environment.busy_since = time.monotonic()
            self._busy.add(environment)
        return environment

    def _record(
        self, started: float, metrics: Mapping[str, float] | None, result: InvokeResult
    ) -> InvokeResult:
        elapsed = (time.monotonic() - started) * 1000
        with self._lock:
            self._stats.invocations += 1
            self._stats.duration_ms_total += elapsed
            self._stats.duration_ms_max = max(self._stats.duration_ms_max, elapsed)
            if result.failed:
                self._stats.errors += 1
                self._stats.last_error = f"{result.error_type}: {result.error_message}"[:300]
        if metrics:
            self.add_metrics(metrics)
        return result

    def kill_busy(self, wait_s: float = 10.0, min_busy_s: float = 0.0) -> int | None:
        """Kill an environment in the middle of an invocation (chaos); returns its pid.

        Waits up to ``wait_s`` for one that has been busy at least ``min_busy_s``.
        """
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with self._lock:
                now = time.monotonic()
                victims = [
                    e
                    for e in self._busy
                    if e.busy_since is not None and now - e.busy_since >= min_busy_s
                ]
                if victims:
                    victim = victims[0]
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(victim.pid, signal.SIGKILL)
                    return victim.pid
            time.sleep(0.005)
        return None

    def pids(self) -> list[int]:
        """Process ids of the live environments."""
        with self._lock:
            return [e.pid for e in (*self._idle, *self._busy)]

    def close(self) -> None:
        """Shut every environment down (busy ones when their invocation ends)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for environment in idle:
            environment.shutdown()

    def kill_all(self) -> None:
        """Kill every environment now, busy or not."""
        with self._lock:
            self._closed = True
            everything = [*self._idle, *self._busy]
            self._idle = []
        for environment in everything:
            environment.kill()
