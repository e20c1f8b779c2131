"""Key sets of Kite's documented responses, from a checkout of ``zerodha/kiteconnect-mocks``.

Zerodha publishes a sample response for every Kite Connect endpoint in
https://github.com/zerodha/kiteconnect-mocks. kite_sim's response-shape test
compares its answers with those samples' *key sets* only: this tool reads a
local checkout and writes, per sample file, the key paths every record has
(``required``) and the key paths any record has (``allowed``), with the
tree (commit) they came from. No values are kept, so no sample is copied.

Paths are dotted; ``[]`` stands for "each element of a list" and ``*`` for
"each value of an object keyed by data" (quotes are keyed by instrument)::

    python -m tools.kite_mock_keys CHECKOUT --commit SHA \
        > tests/integration/kite_sim/kite_mock_keys.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SOURCE = "https://github.com/zerodha/kiteconnect-mocks"
# The samples of the endpoints kite_sim serves (mutual funds and alerts it does not model).
SAMPLES = (
    "generate_session.json",
    "session_logout.json",
    "profile.json",
    "margins.json",
    "margins_equity.json",
    "margin_commodity.json",
    "order_response.json",
    "order_modify.json",
    "order_cancel.json",
    "orders.json",
    "order_info.json",
    "trades.json",
    "order_trades.json",
    "positions.json",
    "convert_position.json",
    "holdings.json",
    "auctions_list.json",
    "order_margins.json",
    "basket_margins.json",
    "virtual_contract_note.json",
    "gtt_place_order.json",
    "gtt_modify_order.json",
    "gtt_delete_order.json",
    "gtt_get_order.json",
    "gtt_get_orders.json",
    "quote.json",
    "ltp.json",
    "ohlc.json",
    "historical_minute.json",
    "historical_oi.json",
    "postback.json",
)
# Samples whose top-level object is keyed by instrument ("NSE:INFY"), not by field name.
KEYED_BY_DATA = frozenset({"quote.json", "ltp.json", "ohlc.json"})


def key_paths(value: Any, *, keyed_by_data: bool = False) -> tuple[set[str], set[str]]:
    """(required, allowed) key paths of a JSON value.

    ``required``: paths present in every element of every list on the way;
    ``allowed``: paths present anywhere. ``keyed_by_data``: the top level is a
    mapping whose keys are data (instruments), written ``*``.
    """
    required: set[str] = set()
    allowed: set[str] = set()
    if keyed_by_data and isinstance(value, dict):
        required, allowed = _elements(value.values())
        return _prefixed("*", required) | {"*"}, _prefixed("*", allowed) | {"*"}
    if isinstance(value, dict):
        for key, child in value.items():
            child_required, child_allowed = key_paths(child)
            required |= {key} | _prefixed(key, child_required)
            allowed |= {key} | _prefixed(key, child_allowed)
        return required, allowed
    if isinstance(value, list):
        required, allowed = _elements(value)
        return _prefixed("[]", required), _prefixed("[]", allowed)
    return required, allowed


def _elements(values: Iterable[Any]) -> tuple[set[str], set[str]]:
    required: set[str] | None = None
    allowed: set[str] = set()
    for element in values:
        element_required, element_allowed = key_paths(element)
        required = element_required if required is None else required & element_required
        allowed |= element_allowed
    return required or set(), allowed


def _prefixed(prefix: str, paths: set[str]) -> set[str]:
    return {f"{prefix}.{path}" for path in paths}


def sample_keys(checkout: Path, commit: str) -> dict[str, Any]:
    """The key table of the samples in ``checkout`` (a clone at ``commit``)."""
    endpoints: dict[str, Any] = {}
    for name in SAMPLES:
        body = json.loads((checkout / name).read_text())
        data = body["data"] if isinstance(body, dict) and "data" in body else body
        required, allowed = key_paths(data, keyed_by_data=name in KEYED_BY_DATA)
        endpoints[name] = {"required": sorted(required), "allowed": sorted(allowed)}
    return {
        "source": f"{SOURCE}/tree/{commit}",
        "note": (
            "Key paths only (no values) of Kite's published sample responses, written by "
            "tools/kite_mock_keys.py; required = in every record, allowed = in any record."
        ),
        "endpoints": endpoints,
    }


def main(argv: list[str] | None = None) -> int:
    """Write the key table of a checkout to stdout."""
    parser = argparse.ArgumentParser(prog="python -m tools.kite_mock_keys", description=__doc__)
    parser.add_argument("checkout", type=Path, help="a checkout of zerodha/kiteconnect-mocks")
    parser.add_argument("--commit", required=True, help="the checkout's commit (recorded)")
    args = parser.parse_args(argv)
    json.dump(sample_keys(args.checkout, args.commit), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
