"""The CDK app: ``cdk synth`` / ``cdk deploy`` with ``-c stage=NAME`` (default dev).

Stage settings live in ``cdk.json`` (``stages``) and are validated before any
construct is built. cdk-nag's AwsSolutions and Serverless packs run as policy
validation plugins: an unacknowledged finding stops the synth. ``-c
lambda_assets=stub`` synthesizes with a stub function asset (tests).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from infra.config import DEFAULT_STAGE, stage_config
from infra.definitions import load_functions
from infra.lambda_assets import AssetSource, BuiltAssets, StubAssets
from infra.stack import TickerServiceStack


def build_app(app: App, *, stage: str | None = None, nag: bool = True) -> TickerServiceStack:
    """The stack for ``stage`` (default: the context's ``stage``), with cdk-nag attached."""
    stage = stage or app.node.try_get_context("stage") or DEFAULT_STAGE
    context = {"stages": app.node.try_get_context("stages")}
    config = stage_config(context, stage)
    assets: AssetSource
    if app.node.try_get_context("lambda_assets") == "stub":
        assets = StubAssets(Path(tempfile.mkdtemp(prefix="ticker-stub-asset-")))
    else:
        assets = BuiltAssets()
        assets.prepare(load_functions().values())
    stack = TickerServiceStack(app, f"TickerService-{config.name}", config=config, assets=assets)
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    return stack


if __name__ == "__main__":
    cdk_app = App()
    build_app(cdk_app)
    cdk_app.synth()
