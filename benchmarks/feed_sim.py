"""``python -m benchmarks.feed_sim``: the simulator CLI with a universe of 27,470 instruments.

Takes every ``python -m kite_sim`` flag plus ``--stock-strikes`` and
``--index-strikes`` (strikes on each side of the money), which the CLI does
not expose; the feed benchmark runs it as a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace

from kite_sim.__main__ import build_config, parse_args, serve


def main(argv: list[str]) -> int:
    """Parse the extra flags, hand the rest to the simulator's CLI."""
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--stock-strikes", type=int, default=None)
    extra.add_argument("--index-strikes", type=int, default=None)
    known, rest = extra.parse_known_args(argv)
    args = parse_args(rest)
    cfg = build_config(args)
    if known.stock_strikes is not None:
        cfg.universe = replace(cfg.universe, stock_strikes=known.stock_strikes)
    if known.index_strikes is not None:
        cfg.universe = replace(cfg.universe, index_strikes=known.index_strikes)
    asyncio.run(serve(cfg, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
