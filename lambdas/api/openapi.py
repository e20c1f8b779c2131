"""``python -m lambdas.api.openapi``: write ``openapi.json`` from the code (``--check``: compare).

The document is generated from the routers and models (no dependency is
called) of both functions the API is served by (the trading API and the
market-data function), so it always says what the code does; the committed copy is what
API Gateway, the local gateway and clients read, and a test fails when the
two differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, cast

from lambdas.api.app import TRADING_ROUTERS, build_app, openapi_json
from lambdas.api.context import Dependencies

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi.json"


def generate() -> str:
    """The OpenAPI document of the API, as committed (trailing newline)."""
    inert = cast(Any, None)  # routes are registered, never called
    deps = Dependencies(
        trading=inert, grants=inert, writes=inert, updates=inert, api_secret=lambda _: None
    )
    from lambdas.api.market_handler import MARKET_ROUTERS

    return openapi_json(build_app(deps, routers=(*TRADING_ROUTERS, *MARKET_ROUTERS))) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document, or with ``--check`` exit 1 when the committed one differs."""
    parser = argparse.ArgumentParser(prog="python -m lambdas.api.openapi")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    document = generate()
    if args.check:
        current = DOCUMENT.read_text() if DOCUMENT.exists() else ""
        if current != document:
            print(f"{DOCUMENT} is stale: run python -m lambdas.api.openapi", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(document)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
