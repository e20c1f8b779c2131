"""The layering contract (architecture.ini) holds for the tree, covers it, and can fail.

import-linter reads the source (no imports are executed). The contract is
also run by ``make lint``; here it is proven to catch a deliberate violation
in a throwaway tree with the same package names.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "architecture.ini"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def root_packages() -> list[str]:
    config = configparser.ConfigParser()
    config.read(CONTRACT)
    return config["importlinter"]["root_packages"].split()


def lint(
    cwd: Path, extra_path: Path | None = None, contract: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the tree importable from ``cwd`` (and ``extra_path``)."""
    env = {**os.environ, "PYTHONPATH": str(extra_path)} if extra_path else None
    only = ["--contract", contract] if contract else []
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *only, str(CONTRACT)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_top_level_package_is_in_the_contract() -> None:
    # Given the packages at the top of the repository (infra/ once it exists)
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    # Then each is placed in the picture, so none escapes the rules
    assert packages <= set(root_packages()), sorted(packages - set(root_packages()))


def functions() -> list[str]:
    """The lambdas/ children the functions contract places (each function, and common)."""
    config = configparser.ConfigParser()
    config.read(CONTRACT)
    layers = config["importlinter:contract:functions"]["layers"].split()
    return [name for name in layers if name != "|"]


def skeleton(tmp_path: Path) -> Path:
    """Empty packages with the project's names: a tree that keeps every contract."""
    for package in root_packages():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for function in functions():
        (tmp_path / "lambdas" / function).mkdir()
        (tmp_path / "lambdas" / function / "__init__.py").write_text("")
    return tmp_path


def test_an_empty_skeleton_keeps_the_contract(tmp_path: Path) -> None:
    tree = skeleton(tmp_path)
    result = lint(tree, tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("ticker_core/clock.py", "import ticker_adapters", "layers"),
        ("ticker_core/clock.py", "import boto3", "core-is-pure"),
        ("ticker_adapters/log.py", "import aws_lambda_powertools", "adapters-fit-every-deployable"),
        ("feed_container/vault.py", "import lambdas.common", "layers"),
        ("feed_container/vault.py", "import kite_sim", "layers"),
        ("kite_sim/vault.py", "import ticker_adapters", "simulator-speaks-core-only"),
        ("lambdas/greeks/rows.py", "import lambdas.persist", "functions"),
        ("lambdas/common/db.py", "import lambdas.persist", "functions"),
        ("lambdas/api/fanout.py", "import lambdas.ws", "functions"),
        ("lambdas/reports.py", "", "functions"),  # a function the picture does not show yet
        ("lambdas/persist/fake.py", "import testkit", "layers"),
        ("tests/test_x.py", "import benchmarks", "layers"),
        ("benchmarks/bench_x.py", "import tests", "layers"),
    ],
)
def test_a_deliberate_violation_breaks_the_contract(
    tmp_path: Path, module: str, statement: str, contract: str
) -> None:
    # Given a tree that keeps the contract, plus one forbidden import (or an unlisted function)
    tree = skeleton(tmp_path)
    (tree / module).write_text(statement + "\n")
    # When the contract is checked, Then it fails, and the contract named is the one broken
    assert lint(tree, tree).returncode == 1
    result = lint(tree, tree, contract)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout
