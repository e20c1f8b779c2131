"""``python -m sandbox.lambda_worker``: one Lambda execution environment.

Started by :class:`sandbox.lambda_runtime.LambdaFunction` with the function's
environment variables (``_HANDLER`` names ``module.function``). Like Lambda's
Python runtime it imports the handler module once (the init phase), then
serves invocations one at a time for as long as it lives, so module-level
state (an event loop, a connection pool) survives between invocations.

Protocol: one JSON line per invocation on stdin
(``{"requestId", "deadlineMs", "event"}``), one JSON line per result on the
original stdout (``{"requestId", "payload"}`` or ``{"requestId",
"errorType", "errorMessage", "stackTrace"}``, plus ``"metrics"``). Before the
first request it writes ``{"ready": true}`` or ``{"initError": ...}``.
Everything the function prints (Powertools' JSON logs) goes to stderr, the
function's log, as in CloudWatch Logs; CloudWatch embedded-metric-format lines
are also summed per invocation and returned, the way CloudWatch would extract
them, so the sandbox's dashboard can show the functions' own metrics.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO


class LambdaContext:
    """The context object Lambda passes to a Python handler."""

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ.get("SANDBOX_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until Lambda would time the invocation out."""
        return max(0, self._deadline_ms - int(time.time() * 1000))


class MetricsCapture(io.TextIOBase):
    """A stdout that forwards text to the log and sums EMF metrics per invocation."""

    def __init__(self, log: TextIO) -> None:
        self._log = log
        self._partial = ""
        self.metrics: dict[str, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._collect(line)
        return len(text)

    def flush(self) -> None:
        self._log.flush()

    def _collect(self, line: str) -> None:
        if '"_aws"' not in line:
            return
        try:
            document = json.loads(line)
            directives = document["_aws"]["CloudWatchMetrics"]
        except (ValueError, KeyError, TypeError):
            return
        for directive in directives:
            for metric in directive.get("Metrics", []):
                name = metric.get("Name")
                value = document.get(name)
                values = value if isinstance(value, list) else [value]
                total = sum(v for v in values if isinstance(v, int | float) and math.isfinite(v))
                self.metrics[name] = self.metrics.get(name, 0.0) + total

    def take(self) -> dict[str, float]:
        """The metrics since the last call."""
        taken, self.metrics = self.metrics, {}
        return taken


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc)[-20:],
    }


def _load_handler(spec: str) -> Callable[[Any, Any], Any]:
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"_HANDLER must be module.function, got {spec!r}")
    module = importlib.import_module(module_name)
    handler: Callable[[Any, Any], Any] = getattr(module, function_name)
    if not callable(handler):
        raise TypeError(f"{spec} is not callable")
    return handler


def main() -> int:
    """Init, then serve invocations until stdin closes."""
    # The protocol keeps the real stdout; the function's stdout is its log (stderr).
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    capture = MetricsCapture(sys.stderr)
    sys.stdout = capture

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message, separators=(",", ":"), default=str) + "\n")
        protocol.flush()

    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except Exception as exc:  # Lambda reports init failures on the invocation
        send({"initError": _error(exc)})
        return 1
    send({"ready": True, "metrics": capture.take()})
    for line in sys.stdin:
        request = json.loads(line)
        request_id = request["requestId"]
        context = LambdaContext(request_id, int(request["deadlineMs"]))
        try:
            payload = handler(request["event"], context)
            json.dumps(payload)  # Lambda must serialise the response; fail here if it cannot
        except Exception as exc:
            send({"requestId": request_id, **_error(exc), "metrics": capture.take()})
            continue
        send({"requestId": request_id, "payload": payload, "metrics": capture.take()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
