"""The API's two functions: the trading one never loads the option math the market one needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lambdas.api.app import TRADING_ROUTERS
from lambdas.api.market_handler import MARKET_ROUTERS
from lambdas.api.openapi import DOCUMENT


def _loaded(module: str) -> set[str]:
    probe = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(  # this interpreter, a fixed probe
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("module", ["lambdas.api.handler"])
def test_the_trading_function_imports_no_scipy(module: str) -> None:
    # Given a fresh interpreter, When the trading function's handler module is imported
    loaded = _loaded(module)
    # Then neither scipy nor the market logic came with it (cold start, package size)
    assert "scipy" not in loaded
    assert "lambdas.api.market" not in loaded


def test_every_documented_operation_belongs_to_exactly_one_function() -> None:
    import json

    from lambdas.api.context import FUNCTION_EXTENSION

    document = json.loads(DOCUMENT.read_text())
    market = {
        path
        for path, operations in document["paths"].items()
        for operation in operations.values()
        if operation.get(FUNCTION_EXTENSION) == "market"
    }
    assert market == {p for p in document["paths"] if p.startswith("/market/")}
    assert not set(TRADING_ROUTERS) & set(MARKET_ROUTERS)
