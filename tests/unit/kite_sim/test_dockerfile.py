"""kite_sim's Dockerfile (staging stacks without Kite): checked without a Docker engine.

hadolint checks best practices; the rest checks what the stack relies on:
the module entrypoint (the stack passes the arguments), an unprivileged
user, a health check on ``GET /``, and a build context the stack's
allow-list provides.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from infra.definitions import IMAGE_FOLDERS, PROJECT_FILES, SIM_PORT
from testkit.factories import hadolint_findings

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "kite_sim" / "Dockerfile"
CONTEXT = (*PROJECT_FILES, *IMAGE_FOLDERS["kite_sim"])


def steps() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (keyword.upper(), rest.strip())
        for keyword, _, rest in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]


def test_hadolint_finds_nothing() -> None:
    assert hadolint_findings(DOCKERFILE) == ""


def test_unprivileged_with_a_health_check_on_the_port_the_stack_uses() -> None:
    runtime = steps()[max(i for i, (kw, _) in enumerate(steps()) if kw == "FROM") :]
    (user,) = [args for kw, args in runtime if kw == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    (health,) = [args for kw, args in runtime if kw == "HEALTHCHECK"]
    assert f"127.0.0.1:{SIM_PORT}/" in health
    assert ("EXPOSE", str(SIM_PORT)) in runtime
    (entry,) = [args for kw, args in runtime if kw == "ENTRYPOINT"]
    assert entry == '["python", "-m", "kite_sim"]'


def test_it_copies_only_what_the_stack_puts_in_its_build_context() -> None:
    for keyword, args in steps():
        if keyword == "COPY" and "--from" not in args:
            *sources, _ = shlex.split(args)
            for source in sources:
                assert source in CONTEXT, source
                assert (ROOT / source).exists(), source
