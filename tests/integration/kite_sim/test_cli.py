"""``python -m kite_sim``: the command line, in a subprocess and in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from kite_sim.__main__ import build_config, parse_args, serve, startup_info
from kite_sim.ratelimit import Category
from kite_sim.server import Simulator
from tests.waiting import wait_until_async

pytestmark = pytest.mark.integration


def test_cli_serves_and_prints_urls_and_credentials() -> None:
    # Given the simulator started as a developer would
    proc = subprocess.Popen(
        [sys.executable, "-m", "kite_sim", "--json", "--port", "0", "--seed", "5", "--stocks", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        # Then it listens on loopback and says which credentials it accepts
        assert info["rest_url"].startswith("http://127.0.0.1:")
        assert info["ws_url"].startswith("ws://127.0.0.1:")
        account = info["accounts"][0]
        assert len(account["api_key"]) == 16
        assert len(account["api_secret"]) == 32
        admin = requests.get(f"{info['rest_url']}/_sim/info", timeout=10).json()
        assert admin["accounts"][0]["api_key"] == account["api_key"]
        assert admin["seed"] == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_cli_options_make_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITE_SIM_API_KEY", "k" * 16)
    args = parse_args(
        [
            "--seed",
            "9",
            "--accounts",
            "2",
            "--rate",
            "NIFTY=20",
            "--tick-rate",
            "3",
            "--fault",
            "rest_error:status=503,at=5",
            "--rate-limit-scale",
            "2",
            "--market-start",
            "2024-06-03T09:15:00+05:30",
            "--no-session-loop",
            "--registered-ip",
            "10.0.0.1",
            "--stocks",
            "2",
            "--no-funds-check",
        ]
    )
    cfg = build_config(args)
    assert cfg.seed == 9
    assert len(cfg.accounts) == 2
    assert cfg.accounts[0].api_key == "k" * 16
    assert cfg.accounts[1].api_key is None
    assert cfg.tick_rates == {"NIFTY": 20.0}
    assert cfg.faults == [{"kind": "rest_error", "status": 503, "at": 5}]
    assert cfg.rate_limits is not None
    assert cfg.rate_limits[Category.QUOTE][0].count == 2
    assert cfg.session_loop is False
    assert cfg.universe.stocks == 2
    assert cfg.check_funds is False
    with pytest.raises(SystemExit):
        build_config(parse_args(["--rate", "nope"]))
    with pytest.raises(SystemExit):
        build_config(parse_args(["--fault", "meteor"]))


async def test_serve_prints_and_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = build_config(parse_args(["--stocks", "1", "--seed", "3"]))
    task = asyncio.create_task(serve(cfg, as_json=False))
    printed: list[str] = []

    def started() -> bool:
        printed.append(capsys.readouterr().out)
        return "api_secret=" in "".join(printed)

    await wait_until_async(started, what="the start-up lines")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 20)
    sim = Simulator(cfg)
    assert startup_info(sim)["instruments"] == len(sim.universe)
