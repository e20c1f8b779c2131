"""Migrate function entry point: the schema as a CloudFormation custom resource.

Deployed behind CDK's custom resource provider, which calls this ``onEvent``
handler and reports the outcome to CloudFormation: a returned dict is
success, a raised exception fails the deployment (and CloudFormation rolls
back). Create and Update apply the pending migrations bundled in
``lambdas/migrate/sql`` (the stack changes a property whenever those files
change, so each deploy that brings a migration runs it); Delete keeps the
schema: the database's own removal policy decides what happens to the data.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import boto3

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.common.observability import Observability
from lambdas.common.runtime import LoopRunner
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations

PHYSICAL_RESOURCE_ID = "ticker-service-schema"
"""One schema per database: a stable id, so an Update never reads as a replacement."""

# Execution-environment state, built once at init and reused by every invocation.
database = DatabaseSettings()
obs = Observability("migrate")
runner = LoopRunner()


async def apply_pending(settings: DatabaseSettings, secrets_client: Any) -> list[str]:
    """Apply what the database has not applied yet; the names of those applied."""
    conn = await asyncpg.connect(**connection_parameters(settings, secrets_client))
    try:
        applied = await migrate(conn, bundled_migrations())
    finally:
        await conn.close()
    return [f"{m.version:04d}_{m.name}" for m in applied]


@obs.logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """CloudFormation custom resource event -> the provider framework's response."""
    request = event.get("RequestType")
    if request == "Delete":
        obs.logger.info("schema kept on delete")
        return {"PhysicalResourceId": event.get("PhysicalResourceId", PHYSICAL_RESOURCE_ID)}
    if request not in ("Create", "Update"):
        raise ValueError(f"unexpected RequestType {request!r}")
    secrets = boto3.client("secretsmanager") if database.secret_arn else None
    applied = runner.run(apply_pending(database, secrets))
    obs.logger.info("migrations applied", extra={"applied": applied})
    return {
        "PhysicalResourceId": PHYSICAL_RESOURCE_ID,
        "Data": {"Applied": ",".join(applied) or "none"},
    }
