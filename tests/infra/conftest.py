"""One synthesis per session: both stages, cdk-nag attached, a stub function asset.

The synth itself is an assertion: cdk-nag's AwsSolutions and Serverless packs
run as validation plugins, so any unacknowledged finding fails the fixture
(and every test here) with the validation report's path.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("dev", "prod")


@dataclass(frozen=True)
class Synthesized:
    """One stage's template and the stage settings it was built from."""

    stage: str
    template: dict[str, Any]
    context: dict[str, Any]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        """Resources of one CloudFormation type, by logical id."""
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == kind}

    def one(self, kind: str, where: str = "") -> tuple[str, dict[str, Any]]:
        """The single resource of ``kind`` whose logical id contains ``where``."""
        found = [(k, r) for k, r in self.resources(kind).items() if where in k]
        assert len(found) == 1, f"{kind} {where!r}: {sorted(k for k, _ in found)}"
        return found[0]


def stub_app(outdir: Path) -> tuple[Any, dict[str, Any]]:
    """A CDK app with cdk.json's context and the stub function asset, and that context."""
    # jsii's end-of-life banner names Node majors; `make` sets this, a bare pytest may not.
    node = subprocess.run(["node", "-p", "process.versions.node"], capture_output=True, text=True)
    os.environ.setdefault(
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", node.stdout.split(".")[0].strip()
    )
    from aws_cdk import App

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    return App(context={**context, "lambda_assets": "stub"}, outdir=str(outdir)), context


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Synthesized]]:
    """Both stages synthesized once for the session (about 30 s)."""
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app, context = stub_app(outdir)
    names = {}
    for stage in STAGES:
        # cdk-nag's packs are app-wide plugins: attached once, they check every stack.
        names[stage] = build_app(app, stage=stage, nag=stage == STAGES[-1]).stack_name
    app.synth()
    return {
        stage: Synthesized(
            stage,
            json.loads((outdir / f"{name}.template.json").read_text()),
            context["stages"][stage],
        )
        for stage, name in names.items()
    }


@pytest.fixture(params=STAGES)
def stage(request: pytest.FixtureRequest, synthesized: dict[str, Synthesized]) -> Synthesized:
    """Each stage in turn."""
    return synthesized[request.param]
