"""``python -m kite_sim``: serve Kite's REST API and WebSocket on 127.0.0.1.

Prints the URLs and, for each simulated account, the API key and secret it
accepts (generated unless given), then runs until interrupted. Credentials
can also come from the environment: ``KITE_SIM_API_KEY``,
``KITE_SIM_API_SECRET``, ``KITE_SIM_ADMIN_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import datetime

from kite_sim.config import AccountConfig, SimConfig
from kite_sim.faults import FaultSpecError, parse_cli_fault
from kite_sim.ratelimit import scaled_limits
from kite_sim.server import Simulator


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m kite_sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: an ephemeral one)")
    p.add_argument("--seed", type=int, default=1, help="market and universe seed")
    p.add_argument("--accounts", type=int, default=1, help="simulated apps (API keys)")
    p.add_argument("--redirect-url", default=None, help="the apps' login redirect URL")
    p.add_argument("--postback-url", default=None, help="the apps' postback URL")
    p.add_argument("--registered-ip", action="append", default=None, help="orders allowed from")
    p.add_argument("--no-ip-check", action="store_true", help="accept orders from any address")
    p.add_argument(
        "--market-start", default=None, help="ISO market start, e.g. 2024-06-03T09:15+05:30"
    )
    p.add_argument("--market-speed", type=float, default=1.0, help="market seconds per second")
    p.add_argument("--no-session-loop", action="store_true", help="close at 15:30 like NSE")
    p.add_argument("--tick-interval", type=float, default=0.1, help="seconds between frames")
    p.add_argument("--tick-rate", type=float, default=2.0, help="ticks/s per instrument")
    p.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="KEY=TICKS_PER_S",
        help="tick rate for a token, tradingsymbol, underlying name or segment",
    )
    p.add_argument("--max-ticks-per-second", type=float, default=None, help="total cap")
    p.add_argument("--send-queue", type=int, default=64, help="frames queued per connection")
    p.add_argument("--rate-limit-scale", type=float, default=1.0, help="multiply Kite's limits")
    p.add_argument("--no-rate-limits", action="store_true", help="disable REST rate limits")
    p.add_argument("--no-funds-check", action="store_true", help="never reject for funds")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="kind[:key=value,...] or JSON; add at=S or every=S to schedule",
    )
    p.add_argument("--stocks", type=int, default=None, help="stocks in the universe (<= 50)")
    p.add_argument("--json", action="store_true", help="print the startup info as one JSON line")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> SimConfig:
    """A :class:`SimConfig` from parsed arguments and the environment."""
    accounts = []
    for n in range(max(1, args.accounts)):
        accounts.append(
            AccountConfig(
                api_key=os.environ.get("KITE_SIM_API_KEY") if n == 0 else None,
                api_secret=os.environ.get("KITE_SIM_API_SECRET") if n == 0 else None,
                redirect_url=args.redirect_url,
                postback_url=args.postback_url,
                registered_ips=args.registered_ip,
                enforce_ip=not args.no_ip_check,
            )
        )
    rates: dict[str, float] = {}
    for item in args.rate:
        key, sep, value = item.rpartition("=")
        if not sep:
            raise SystemExit(f"--rate expects KEY=TICKS_PER_S, got {item!r}")
        rates[key] = float(value)
    faults = []
    for text in args.fault:
        try:
            faults.append(parse_cli_fault(text))
        except FaultSpecError as exc:
            raise SystemExit(f"--fault {text!r}: {exc}") from exc
    cfg = SimConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        accounts=accounts,
        market_start=datetime.fromisoformat(args.market_start) if args.market_start else None,
        market_speed=args.market_speed,
        session_loop=not args.no_session_loop,
        tick_interval=args.tick_interval,
        default_tick_rate=args.tick_rate,
        tick_rates=rates,
        max_ticks_per_second=args.max_ticks_per_second,
        send_queue_frames=args.send_queue,
        rate_limits=None if args.rate_limit_scale == 1.0 else scaled_limits(args.rate_limit_scale),
        rate_limits_enabled=not args.no_rate_limits,
        check_funds=not args.no_funds_check,
        admin_token=os.environ.get("KITE_SIM_ADMIN_TOKEN"),
        faults=faults,
    )
    if args.stocks is not None:
        from dataclasses import replace

        cfg.universe = replace(cfg.universe, stocks=args.stocks)
    return cfg


def startup_info(sim: Simulator) -> dict[str, object]:
    """What the CLI prints: URLs and credentials."""
    return {
        "rest_url": sim.rest_url,
        "ws_url": sim.ws_url,
        "admin_url": f"{sim.rest_url}/_sim",
        "market_time": sim.clock.now().isoformat(),
        "instruments": len(sim.universe),
        "accounts": [
            {"user_id": a.user_id, "api_key": a.api_key, "api_secret": a.api_secret}
            for a in sim.accounts
        ],
    }


async def serve(cfg: SimConfig, as_json: bool) -> None:
    """Run until SIGINT/SIGTERM."""
    sim = Simulator(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    info = startup_info(sim)
    if as_json:
        print(json.dumps(info), flush=True)
    else:
        print(f"kite_sim REST   {info['rest_url']}", flush=True)
        print(f"kite_sim WS     {info['ws_url']}", flush=True)
        print(f"kite_sim admin  {info['admin_url']}", flush=True)
        print(f"market time     {info['market_time']}", flush=True)
        for a in sim.accounts:
            print(f"account {a.user_id} api_key={a.api_key} api_secret={a.api_secret}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(build_config(args), args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
