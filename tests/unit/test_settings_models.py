"""Every settings model of the project hides input values in its validation errors.

A ``DB_PASSWORD`` or a token put in the wrong variable would otherwise be
echoed into the error, and from there into a log. Checked on the source, so
handlers need not be imported (and configured) to be checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ticker_core", "ticker_adapters", "feed_container", "lambdas", "kite_sim", "sandbox")


def settings_models() -> list[tuple[Path, ast.ClassDef]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(base, ast.Name) and base.id == "BaseSettings" for base in node.bases
                ):
                    found.append((path, node))
    return found


def hides_input(model: ast.ClassDef) -> bool:
    for statement in model.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "model_config" for t in targets):
            call = statement.value  # type: ignore[union-attr]
            return isinstance(call, ast.Call) and any(
                k.arg == "hide_input_in_errors"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in call.keywords
            )
    return False


def test_every_settings_model_hides_input_in_errors() -> None:
    models = settings_models()
    assert len(models) >= 5  # the walk found the models (feed, vault, snapshot, db, handlers)
    leaky = [f"{path.relative_to(ROOT)}:{m.name}" for path, m in models if not hides_input(m)]
    assert not leaky, f"settings without hide_input_in_errors=True: {leaky}"
