"""The migrate function as the stack deploys it: a CloudFormation custom resource handler."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace

import asyncpg
import pytest

from lambdas.common.db import connection_parameters
from lambdas.migrate.handler import PHYSICAL_RESOURCE_ID, Dependencies, make_handler
from lambdas.migrate.logic import bundled_migrations
from sandbox.postgres import ConnectionInfo
from tests.conftest import db_env, settings_for

pytestmark = pytest.mark.integration


class Context:
    function_name = "migrate"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:migrate"
    aws_request_id = "req-1"


@pytest.fixture
def handler_module(
    fresh_database: ConnectionInfo, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimpleNamespace]:
    """The handler as Lambda builds it: from the function's environment, on first call."""
    for key, value in db_env(fresh_database).items():
        monkeypatch.setenv(key, value)
    deps = Dependencies.from_env()
    yield SimpleNamespace(
        handler=make_handler(lambda: deps), PHYSICAL_RESOURCE_ID=PHYSICAL_RESOURCE_ID
    )
    deps.runner.close()


def applied_versions(info: ConnectionInfo) -> list[int]:
    async def read() -> list[int]:
        conn = await asyncpg.connect(**connection_parameters(settings_for(info)))
        try:
            rows = await conn.fetch("select version from public.schema_migrations order by 1")
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()
        return [r["version"] for r in rows]

    return asyncio.run(read())


def test_create_applies_every_migration_and_update_applies_none_twice(
    handler_module: SimpleNamespace, fresh_database: ConnectionInfo
) -> None:
    # Given an empty database, When CloudFormation creates the schema resource
    created = handler_module.handler(
        {"RequestType": "Create", "ResourceProperties": {"Migrations": "a"}}, Context()
    )
    # Then every bundled migration is applied and named in the response
    versions = [m.version for m in bundled_migrations()]
    assert applied_versions(fresh_database) == versions
    assert created["PhysicalResourceId"] == handler_module.PHYSICAL_RESOURCE_ID
    assert created["Data"]["Applied"].count(",") == len(versions) - 1
    # When a later deploy updates it with nothing new, Then nothing is applied again
    updated = handler_module.handler(
        {
            "RequestType": "Update",
            "PhysicalResourceId": created["PhysicalResourceId"],
            "ResourceProperties": {"Migrations": "b"},
        },
        Context(),
    )
    assert updated == {
        "PhysicalResourceId": created["PhysicalResourceId"],
        "Data": {"Applied": "none"},
    }
    assert applied_versions(fresh_database) == versions


def test_delete_keeps_the_schema(
    handler_module: SimpleNamespace, fresh_database: ConnectionInfo
) -> None:
    # Given nothing applied, When CloudFormation deletes the resource
    response = handler_module.handler(
        {"RequestType": "Delete", "PhysicalResourceId": "ticker-service-schema"}, Context()
    )
    # Then it answers with the same id and touches nothing
    assert response == {"PhysicalResourceId": "ticker-service-schema"}
    assert applied_versions(fresh_database) == []


def test_an_unknown_request_type_fails_the_deployment(handler_module: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="RequestType"):
        handler_module.handler({"RequestType": "Replace"}, Context())
