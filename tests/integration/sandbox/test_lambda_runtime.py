"""Execution environments behave like Lambda's: warm reuse, errors, crashes, timeouts, metrics."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandbox.lambda_runtime import LambdaFunction

pytestmark = pytest.mark.integration

HANDLER = textwrap.dedent(
    """
    import json, os, sys, time

    INIT_PID = os.getpid()
    calls = 0

    def handler(event, context):
        global calls
        calls += 1
        action = event.get("action")
        if action == "raise":
            raise ValueError("bad input")
        if action == "exit":
            os._exit(3)
        if action == "sleep":
            time.sleep(event["seconds"])
        if action == "emf":
            print(json.dumps({
                "_aws": {"Timestamp": 0, "CloudWatchMetrics": [{
                    "Namespace": "T", "Dimensions": [["service"]],
                    "Metrics": [{"Name": "Rows", "Unit": "Count"}]}]},
                "service": "t", "Rows": [2, 3]}))
            print("a plain log line")
        if action == "unserialisable":
            return {"x": object()}
        return {
            "pid": os.getpid(),
            "init_pid": INIT_PID,
            "calls": calls,
            "name": context.function_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "request_id": context.aws_request_id,
            "setting": os.environ.get("SETTING"),
            "leak": os.environ.get("SANDBOX_TEST_PARENT_ONLY"),
            "tz": os.environ.get("TZ"),
        }
    """
)


@pytest.fixture
def code_root(tmp_path: Path) -> Path:
    root = tmp_path / "code"
    root.mkdir()
    (root / "fn_under_test.py").write_text(HANDLER)
    (root / "fn_broken.py").write_text("raise ImportError('missing dependency')\n")
    return root


@pytest.fixture
def function(code_root: Path, tmp_path: Path) -> Iterator[LambdaFunction]:
    fn = LambdaFunction(
        "probe",
        "fn_under_test.handler",
        env={"SETTING": "on"},
        log_dir=tmp_path / "logs",
        timeout_s=5.0,
        max_concurrency=2,
        code_root=code_root,
    )
    yield fn
    fn.kill_all()


def test_a_warm_environment_is_reused_with_its_module_state(
    function: LambdaFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_TEST_PARENT_ONLY", "secret-ish")
    # When the function is invoked three times in a row
    results = [function.invoke({}) for _ in range(3)]
    # Then one environment served them all and kept its module state
    payloads = [r.payload for r in results]
    assert [p["calls"] for p in payloads] == [1, 2, 3]
    assert len({p["pid"] for p in payloads}) == 1
    assert payloads[0]["init_pid"] == payloads[0]["pid"]
    assert function.stats().cold_starts == 1
    # And it saw its own settings and Lambda's, not the caller's other variables
    assert payloads[0]["setting"] == "on"
    assert payloads[0]["name"] == "probe"
    assert payloads[0]["tz"] == ":UTC"
    assert payloads[0]["leak"] is None
    assert 0 < payloads[0]["remaining_ms"] <= 5000
    assert len({p["request_id"] for p in payloads}) == 3


def test_a_handler_exception_is_a_function_error_and_the_environment_stays(
    function: LambdaFunction,
) -> None:
    first = function.invoke({})
    failed = function.invoke({"action": "raise"})
    assert failed.failed
    assert (failed.error_type, failed.error_message) == ("ValueError", "bad input")
    after = function.invoke({})
    assert after.payload["pid"] == first.payload["pid"]
    assert function.stats().errors == 1


def test_an_unserialisable_response_is_a_function_error(function: LambdaFunction) -> None:
    result = function.invoke({"action": "unserialisable"})
    assert result.error_type == "TypeError"


def test_a_crash_is_a_function_error_and_the_next_invocation_cold_starts(
    function: LambdaFunction,
) -> None:
    first = function.invoke({})
    crashed = function.invoke({"action": "exit"})
    assert crashed.error_type == "Runtime.ExitError"
    assert "exit status 3" in (crashed.error_message or "")
    assert not psutil.pid_exists(first.payload["pid"]) or (
        psutil.Process(first.payload["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    fresh = function.invoke({})
    assert fresh.payload["pid"] != first.payload["pid"]
    assert fresh.payload["calls"] == 1
    stats = function.stats()
    assert (stats.crashes, stats.cold_starts) == (1, 2)


def test_a_timeout_kills_the_environment(function: LambdaFunction) -> None:
    function.timeout_s = 0.5
    result = function.invoke({"action": "sleep", "seconds": 30})
    assert result.error_type == "Sandbox.Timedout"
    assert function.stats().timeouts == 1
    assert function.pids() == []


def test_an_init_failure_fails_the_invocation(code_root: Path, tmp_path: Path) -> None:
    fn = LambdaFunction(
        "broken", "fn_broken.handler", env={}, log_dir=tmp_path / "logs", code_root=code_root
    )
    try:
        result = fn.invoke({})
        assert result.error_type == "Runtime.ImportModuleError"
        assert "missing dependency" in (result.error_message or "")
        assert fn.stats().init_errors == 1
    finally:
        fn.kill_all()


def test_embedded_metrics_are_summed_and_logs_go_to_the_function_log(
    function: LambdaFunction,
) -> None:
    function.invoke({"action": "emf"})
    function.invoke({"action": "emf"})
    assert function.stats().metrics == {"Rows": 10.0}
    log = function.log_path.read_text()
    assert "a plain log line" in log
    assert json.loads(next(line for line in log.splitlines() if "_aws" in line))["Rows"] == [2, 3]


def test_concurrency_is_capped_and_each_invocation_gets_its_own_environment(
    function: LambdaFunction,
) -> None:
    # When four invocations of a slow function start at once with a limit of two
    pids: list[int] = []
    peak = 0

    def run() -> None:
        pids.append(function.invoke({"action": "sleep", "seconds": 0.4}).payload["pid"])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, function.stats().busy)
    for t in threads:
        t.join()
    # Then never more than two ran at once, in two environments
    assert peak <= 2
    assert len(set(pids)) == 2
    assert function.stats().environments == 2


def test_kill_busy_crashes_an_invocation_in_flight(function: LambdaFunction) -> None:
    results = []
    worker = threading.Thread(
        target=lambda: results.append(function.invoke({"action": "sleep", "seconds": 10}))
    )
    worker.start()
    pid = function.kill_busy(wait_s=10, min_busy_s=0.2)
    worker.join(timeout=10)
    assert pid is not None
    assert results[0].error_type == "Runtime.ExitError"
    assert "SIGKILL" in (results[0].error_message or "")


def test_close_leaves_no_process(function: LambdaFunction) -> None:
    function.invoke({})
    pids = function.pids()
    function.close()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert function.invoke({}).error_type == "Sandbox.Closed"
