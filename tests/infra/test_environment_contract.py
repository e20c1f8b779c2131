"""The environment contract: what the template sets is what each deployable's settings read.

Each function is then built as on its first invocation (its handler's cached
``dependencies``), recording the AWS service models its clients load: the asset
keeps only the models the function declares (``aws_services``), so a client for an
undeclared service would fail on AWS with ``UnknownServiceError``; here it fails first.

For every function, its environment model (``settings`` in pyproject's
``[tool.ticker-service.functions]``, the model its handler builds from) is
read in a child process with exactly the environment the template gives the
function (intrinsics rendered as placeholder strings of the right shape):
a missing, misnamed or invalid variable fails here, not on the first cold
start. Every variable the template sets must also be read by one of the
model's sections (a typo would otherwise be silently ignored). The feed's
task environment is checked against ``FeedEnvironment`` the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import textwrap
import tomllib
from typing import Any

import pytest

from feed_container.settings import VARIABLE_PREFIXES, FeedEnvironment
from infra.definitions import load_functions
from tests.infra.conftest import ROOT, STAGES, Synthesized
from tests.infra.test_stack import functions_by_name

pytestmark = pytest.mark.infra

# Read by Powertools and the observability wiring, not by a settings model.
PLATFORM_VARIABLES = ("POWERTOOLS_", "LOG_LEVEL", "AWS_")
FAKE_AWS = {
    "AWS_REGION": "ap-south-1",
    "AWS_DEFAULT_REGION": "ap-south-1",
    # Generated fakes: nothing here reaches AWS (reading settings makes no call).
    "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
    "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    "AWS_EC2_METADATA_DISABLED": "true",
}
SETTINGS_MODELS: dict[str, str] = {
    name: entry["settings"]
    for name, entry in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "ticker-service"
    ]["functions"].items()
}

CHILD = textwrap.dedent(
    """
    import dataclasses, importlib, json, os, sys, typing
    from pydantic_settings import BaseSettings

    def variables(environment):
        hints = typing.get_type_hints(environment)
        read = set()
        for field in dataclasses.fields(environment):
            kind = hints[field.name]
            models = [a for a in typing.get_args(kind) if isinstance(a, type)] or [kind]
            for model in models:
                if isinstance(model, type) and issubclass(model, BaseSettings):
                    prefix = model.model_config.get("env_prefix", "")
                    read |= {(prefix + name).upper() for name in model.model_fields}
        return read

    # Every AWS service model a client or resource loads goes through the loader.
    from botocore.loaders import Loader
    loaded = set()
    load_service_model = Loader.load_service_model

    def recording(self, service_name, *args, **kwargs):
        loaded.add(service_name)
        return load_service_model(self, service_name, *args, **kwargs)

    Loader.load_service_model = recording

    def resolve(dotted):
        module_name, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module_name), name)

    cases = json.load(sys.stdin)
    base = dict(os.environ)
    results = {}
    for case in cases:
        os.environ.clear()
        os.environ.update(base)
        os.environ.update(case["env"])
        loaded.clear()
        try:  # a model that cannot be imported fails its own cases, not the others'
            environment = resolve(case["settings"])
            environment.from_env()
            # Built as on the first invocation (the cached builder), then released.
            dependencies = resolve(case["handler"]).dependencies
            built = dependencies()
            getattr(dependencies, "cache_clear", lambda: None)()
            getattr(built, "close", lambda: None)()
        except Exception as exc:  # reported to the test, which names the function and stage
            results[case["id"]] = {"error": str(exc), "error_type": type(exc).__name__}
            continue
        results[case["id"]] = {"read": sorted(variables(environment)), "services": sorted(loaded)}
    print(json.dumps(results))
    """
)


PSEUDO_PARAMETERS = {
    "AWS::Region": "ap-south-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}


def render(value: Any, resources: dict[str, Any]) -> str:
    """A CloudFormation value as a string, intrinsics replaced by placeholders of their shape.

    Pseudo parameters render as their ap-south-1 values, a queue's ``Ref`` as
    an SQS queue URL and a key's ``Arn`` as a KMS key ARN (the settings refuse
    anything else); every other intrinsic as a stable lower-case name.
    """
    if isinstance(value, str):
        return value
    if "Ref" in value:
        name = value["Ref"]
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if resources.get(name, {}).get("Type") == "AWS::SQS::Queue":
            return f"https://sqs.ap-south-1.amazonaws.com/123456789012/{name.lower()}"
        return f"ref-{name.lower()}"
    if "Fn::GetAtt" in value:
        resource, attribute = value["Fn::GetAtt"]
        kind = resources.get(resource, {}).get("Type")
        if kind == "AWS::KMS::Key" and attribute == "Arn":
            return "arn:aws:kms:ap-south-1:123456789012:key/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
        return f"{resource.lower()}.{attribute.lower()}"
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(render(p, resources) for p in parts)
    raise AssertionError(f"cannot render {value!r}")


def function_environment(stage: Synthesized, name: str) -> dict[str, str]:
    _, function = functions_by_name(stage)[name]
    variables = function["Properties"]["Environment"]["Variables"]
    return {k: render(v, stage.template["Resources"]) for k, v in variables.items()}


@pytest.fixture(scope="session")
def imported(synthesized: dict[str, Synthesized]) -> dict[str, dict[str, Any]]:
    """Every (stage, function) handler imported with its template environment, in one child."""
    cases = []
    functions = load_functions()
    for stage_name, stage in synthesized.items():
        for name in functions:
            cases.append(
                {
                    "id": f"{stage_name}/{name}",
                    "settings": SETTINGS_MODELS[name],
                    "handler": functions[name].handler,
                    "env": function_environment(stage, name),
                }
            )
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **FAKE_AWS},
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("case", [f"{s}/{n}" for s in STAGES for n in load_functions()])
def test_each_function_starts_with_its_template_environment(
    case: str, imported: dict[str, dict[str, Any]], synthesized: dict[str, Synthesized]
) -> None:
    # Given the function's environment as the template sets it
    stage, name = case.split("/")
    env = function_environment(synthesized[stage], name)
    # When its environment model read exactly that environment
    outcome = imported[case]
    # Then it initialized, and every variable set is one its settings read
    assert "error" not in outcome, f"{outcome.get('error_type')}: {outcome.get('error')}"
    unread = {k for k in env if k not in outcome["read"] and not k.startswith(PLATFORM_VARIABLES)}
    assert not unread, f"{case}: set but read by no settings model: {sorted(unread)}"


@pytest.mark.parametrize("case", [f"{s}/{n}" for s in STAGES for n in load_functions()])
def test_each_function_calls_only_aws_services_its_asset_keeps(
    case: str, imported: dict[str, dict[str, Any]]
) -> None:
    # Given the services the function declares (its asset keeps only their botocore models)
    _, name = case.split("/")
    declared = set(load_functions()[name].aws_services)
    # When it was built from its template environment as on its first invocation
    outcome = imported[case]
    assert "error" not in outcome, f"{outcome.get('error_type')}: {outcome.get('error')}"
    # Then every service model its clients loaded is one its asset keeps
    missing = set(outcome["services"]) - declared
    assert not missing, f"{name} loads {sorted(missing)}: add them to its aws_services"


def test_each_asset_keeps_no_service_model_its_functions_do_not_load(
    imported: dict[str, dict[str, Any]],
) -> None:
    # Given the functions grouped by the asset they share (same folders and wheels)
    functions = load_functions()
    assets: dict[tuple[Any, ...], list[str]] = {}
    for name, function in functions.items():
        assets.setdefault((function.packages, function.requirements), []).append(name)
    for names in assets.values():
        # Then they declare one set of services, and each is loaded by one of them
        declared = {functions[n].aws_services for n in names}
        assert len(declared) == 1, f"{names} share an asset but declare {declared}"
        loaded = {s for n in names for st in STAGES for s in imported[f"{st}/{n}"]["services"]}
        unused = set(next(iter(declared))) - loaded
        assert not unused, f"{names}: {sorted(unused)} declared but no client loads them"


def test_the_feed_task_environment_satisfies_feed_settings(
    stage: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the feed container's environment in the task definition
    _, task = stage.one("AWS::ECS::TaskDefinition", "FeedTask")
    (container,) = task["Properties"]["ContainerDefinitions"]
    resources = stage.template["Resources"]
    env = {e["Name"]: render(e["Value"], resources) for e in container["Environment"]}
    for variable in list(os.environ):
        if variable.startswith(VARIABLE_PREFIXES):
            monkeypatch.delenv(variable)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # When the feed reads its environment, Then it validates
    environment = FeedEnvironment.from_env()
    assert environment.ticks.name
    assert environment.snapshot is not None
    # And every variable set is one a section reads
    read = set()
    for field in dataclasses.fields(environment):
        section = getattr(environment, field.name)
        if section is None:
            continue
        prefix = type(section).model_config.get("env_prefix", "")
        read |= {f"{prefix}{name}".upper() for name in type(section).model_fields}
    assert set(env) <= read, sorted(set(env) - read)
    assert environment.feed.stop_timeout_seconds < container["StopTimeout"]
