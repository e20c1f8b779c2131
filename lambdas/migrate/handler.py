"""Migrate function entry point: apply the bundled migrations to the database in ``DB_*``.

Invoked at deploy time as a CloudFormation custom resource behind CDK's
provider framework (``RequestType`` Create/Update apply what is pending and
answer ``PhysicalResourceId`` + ``Data``; Delete keeps the schema: the
database's own removal policy decides what happens to the data; a raised
exception fails the deployment), or directly (``{}``: answers
``{"applied": [...]}``). Safe to run again and concurrently: the migration
lock serialises runners and applied versions are skipped. Nothing is read
or built at import: :class:`Dependencies` is built on the first invocation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambdas.common.db import secrets_client_for
from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, LoopRunner, entry_point
from lambdas.migrate.dal import migrate_database
from lambdas.migrate.logic import bundled_migrations
from lambdas.migrate.settings import MigrateEnvironment

obs = Observability("migrate")

PHYSICAL_RESOURCE_ID = "ticker-service-schema"
"""One schema per database: a stable id, so an Update never reads as a replacement."""


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment builds once: its settings and its event loop."""

    environment: MigrateEnvironment
    runner: LoopRunner
    secrets: Any = None

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings (Lambda's init)."""
        environment = MigrateEnvironment.from_env()
        return cls(environment, LoopRunner(), secrets_client_for(environment.database))


def apply_pending(deps: Dependencies) -> list[str]:
    """Apply what the database has not applied yet; the names of those applied."""
    applied = deps.runner.run(
        migrate_database(deps.environment.database, bundled_migrations(), deps.secrets)
    )
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    obs.count("MigrationsApplied", len(names))
    obs.logger.info("migrations", extra={"applied": names})
    return names


def handle(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """A custom resource event -> the provider framework's answer; else ``{"applied": [...]}``."""
    request = (event or {}).get("RequestType")
    if request is None:
        return {"applied": apply_pending(deps)}
    if request == "Delete":
        obs.logger.info("schema kept on delete")
        return {"PhysicalResourceId": event.get("PhysicalResourceId", PHYSICAL_RESOURCE_ID)}
    if request not in ("Create", "Update"):
        raise ValueError(f"unexpected RequestType {request!r}")
    applied = apply_pending(deps)
    return {
        "PhysicalResourceId": PHYSICAL_RESOURCE_ID,
        "Data": {"Applied": ",".join(applied) or "none"},
    }


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """The Lambda entry point over ``dependencies`` (called on every invocation; cache it)."""
    return entry_point(obs, handle, dependencies)


#: Built on the first invocation and kept for the execution environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
