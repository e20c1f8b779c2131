"""What infra reads as data: the function table, the mapping definition, migrations, packaging."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra import lambda_assets
from infra.definitions import (
    MIGRATIONS_DIR,
    DefinitionError,
    FunctionDefinition,
    load_functions,
    load_mappings,
    load_queue_mappings,
    migrations_fingerprint,
)
from infra.lambda_assets import (
    KEPT_SUBPACKAGES,
    PLATFORMS,
    copy_packages,
    fingerprint,
    pip_command,
    prune,
    prune_service_models,
)
from tests.infra.conftest import ROOT

pytestmark = pytest.mark.infra


def test_every_function_is_declared_with_a_handler_packages_and_wheels() -> None:
    functions = load_functions()
    assert set(functions) >= {"greeks", "persist", "persist-maintenance", "instruments", "migrate"}
    for function in functions.values():
        module = function.handler.rsplit(".", 1)[0].replace(".", "/")
        assert any(module.startswith(p) for p in function.packages), function.name
        assert function.requirements, function.name


def test_every_mapping_names_a_declared_function() -> None:
    functions = load_functions()
    for mapping in load_mappings().values():
        assert mapping.function in functions
        assert mapping.on_failure is None or mapping.on_failure in functions


def test_a_mapping_without_an_on_failure_destination_drops_what_it_discards(
    tmp_path: Path,
) -> None:
    # Given the definition with the persist mappings' destination left out
    text = (ROOT / "lambdas" / "event_source_mappings.toml").read_text()
    path = tmp_path / "m.toml"
    path.write_text(text.replace('on_failure = "persist"\n', ""))
    # When loaded, Then those mappings have none, and the others keep theirs
    mappings = load_mappings(path)
    assert mappings["ticks-persist"].on_failure is None
    assert mappings["greeks-persist"].on_failure is None
    assert mappings["ticks-greeks"].on_failure == "greeks"
    # And the fan-outs, live data, are defined without one
    assert load_mappings()["ticks-fanout"].on_failure is None
    assert load_mappings()["greeks-fanout"].on_failure is None


def test_a_mapping_outside_lambdas_bounds_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "lambdas" / "event_source_mappings.toml").read_text()
    bad = tmp_path / "m.toml"
    bad.write_text(text.replace("batch_size = 500", "batch_size = 20000"))
    with pytest.raises(DefinitionError, match="batch_size"):
        load_mappings(bad)


def test_the_migrations_fingerprint_follows_the_sql_files(tmp_path: Path) -> None:
    # Given a copy of the migrations
    copy = tmp_path / "sql"
    copy.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        (copy / path.name).write_bytes(path.read_bytes())
    before = migrations_fingerprint(copy)
    assert before == migrations_fingerprint(MIGRATIONS_DIR)
    # When a migration is added, Then the custom resource's property changes (it runs again)
    (copy / "9999_next.sql").write_text("select 1;\n")
    assert migrations_fingerprint(copy) != before


def test_pip_resolves_for_lambdas_platform_with_both_tags_and_the_pins() -> None:
    command = pip_command(load_functions()["greeks"], Path("/out"))
    for tag in PLATFORMS:
        assert command[command.index(tag) - 1] == "--platform"
    assert {"--only-binary=:all:", "--no-compile"} <= set(command)
    assert command[command.index("-c") + 1].endswith("constraints.txt")
    assert command[command.index("--python-version") + 1] == "3.12"


def test_an_asset_carries_its_packages_with_their_parents(tmp_path: Path) -> None:
    copy_packages(load_functions()["persist"], tmp_path)
    assert (tmp_path / "lambdas" / "__init__.py").exists()
    assert (tmp_path / "lambdas" / "persist" / "handler.py").exists()
    assert not (tmp_path / "lambdas" / "greeks").exists()
    assert not list(tmp_path.rglob("__pycache__"))


def test_pruning_keeps_only_the_kept_subpackages(tmp_path: Path) -> None:
    for sub in ("special", "_lib", "stats", "optimize"):
        (tmp_path / "scipy" / sub / "tests").mkdir(parents=True)
        (tmp_path / "scipy" / sub / "__init__.py").write_text("")
    (tmp_path / "scipy" / "__init__.py").write_text("")
    prune(tmp_path)
    kept = {p.name for p in (tmp_path / "scipy").iterdir() if p.is_dir()}
    assert kept == set(KEPT_SUBPACKAGES["scipy"])
    assert not (tmp_path / "scipy" / "special" / "tests").exists()


def test_pruning_keeps_the_declared_service_models_and_what_every_client_reads(
    tmp_path: Path,
) -> None:
    # Given botocore's data with three services and the files beside them
    data = tmp_path / "botocore" / "data"
    for service in ("dynamodb", "kms", "ec2"):
        (data / service / "2012-08-10").mkdir(parents=True)
        (data / service / "2012-08-10" / "service-2.json.gz").write_bytes(b"x")
    for shared in ("endpoints.json", "partitions.json", "_retry.json"):
        (data / shared).write_text("{}")
    # When pruned for a function that calls DynamoDB and KMS
    prune_service_models(tmp_path, ("dynamodb", "kms"))
    # Then their models and the shared files stay, and nothing else
    assert sorted(p.name for p in data.iterdir()) == sorted(
        ["dynamodb", "kms", "endpoints.json", "partitions.json", "_retry.json"]
    )
    assert (data / "kms" / "2012-08-10" / "service-2.json.gz").exists()


PRUNED_CLIENTS = """
import json, sys
import botocore.session
from botocore.loaders import Loader
created = {}
for name, services in json.loads(sys.argv[2]).items():
    session = botocore.session.get_session()
    # Only the pruned copy: botocore's own data and ~/.aws/models are off the path.
    session.register_component(
        "data_loader", Loader(extra_search_paths=[sys.argv[1]], include_default_search_paths=False)
    )
    for service in services:
        session.create_client(service, region_name="ap-south-1", endpoint_url="http://127.0.0.1:9")
    created[name] = services
print(json.dumps(created))
"""


def test_a_pruned_asset_still_creates_its_functions_clients(tmp_path: Path) -> None:
    # Given this machine's botocore data pruned to the services the functions declare
    import botocore

    functions = load_functions()
    # One function per distinct set: each set is checked once.
    declared = {n: list(s) for s, n in {f.aws_services: n for n, f in functions.items()}.items()}
    every = {s for services in declared.values() for s in services}
    source = Path(botocore.__file__).parent / "data"
    target = tmp_path / "botocore" / "data"

    def unused_services(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(folder) == source and n not in every and "." not in n]

    shutil.copytree(source, target, ignore=unused_services)
    prune_service_models(tmp_path, tuple(every))
    # When each function's clients are created from that copy alone (no call is made)
    result = subprocess.run(
        [sys.executable, "-c", PRUNED_CLIENTS, str(target), json.dumps(declared)],
        capture_output=True,
        text=True,
        check=False,
    )
    # Then every one is created: a service's folder and the shared files are all it needs
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == declared
    assert sorted(p.name for p in target.iterdir() if p.is_dir()) == sorted(every)


def test_the_declared_services_are_part_of_the_assets_fingerprint() -> None:
    # Given a function, and the same function declaring one more service
    function = load_functions()["persist"]
    more = dataclasses.replace(function, aws_services=(*function.aws_services, "sqs"))
    # Then the two assets differ (a new client is never shipped without its model)
    assert fingerprint(more) != fingerprint(function)


def test_a_function_without_its_aws_services_is_refused(tmp_path: Path) -> None:
    # Given the function table with one entry's aws_services left out
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.ticker-service.functions.migrate]")
    line = text.index("aws_services", start)
    end = text.index("\n", line) + 1
    (tmp_path / "pyproject.toml").write_text(text[:line] + text[end:])
    for folder in {p for f in load_functions().values() for p in f.packages}:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    # When it is loaded, Then the error names the function and the key
    with pytest.raises(DefinitionError, match="migrate: aws_services"):
        load_functions(tmp_path / "pyproject.toml")


CHILD = """
import importlib, json, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
loaded = {}
for name, module in list(sys.modules.items()):
    top, _, rest = name.partition(".")
    # Pruning removes subpackages (directories); plain modules of the top package stay.
    if rest and "." not in rest and top in %r and hasattr(module, "__path__"):
        loaded.setdefault(top, set()).add(rest)
print(json.dumps({k: sorted(v) for k, v in loaded.items()}))
"""


def test_no_function_imports_a_pruned_subpackage() -> None:
    # Given every module the functions' packages hold (not the handlers: they need AWS settings)
    modules = sorted(
        str(p.relative_to(ROOT).with_suffix("")).replace("/", ".")
        for function in load_functions().values()
        for package in function.packages
        for p in (ROOT / package).rglob("*.py")
        if p.name not in ("handler.py", "__main__.py")
    )
    # When they are all imported, Then only kept subpackages of pruned distributions load
    result = subprocess.run(
        [sys.executable, "-c", CHILD % (tuple(KEPT_SUBPACKAGES),), *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert loaded, "nothing of the pruned distributions loaded: the check checks nothing"
    for top, subpackages in loaded.items():
        extra = set(subpackages) - KEPT_SUBPACKAGES[top]
        assert not extra, f"{top}: {sorted(extra)} imported but pruned from the assets"


def test_built_assets_are_reused_and_a_failed_build_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a builder that counts its builds and fails on demand
    builds: list[Path] = []
    failing = {"on": False}

    def fake_build(function: object, target: Path, **_: object) -> int:
        builds.append(target)
        (target / "handler.py").write_text("")
        if failing["on"]:
            raise lambda_assets.LambdaAssetError("over budget")
        return 1

    monkeypatch.setattr(lambda_assets, "build", fake_build)
    assets = lambda_assets.BuiltAssets(tmp_path)
    function = load_functions()["migrate"]
    # When the same function's asset is asked for twice, Then it is built once
    first = assets.path(function)
    assert assets.path(function) == first
    assert len(builds) == 1
    assert (first / "handler.py").exists()
    # When a build fails, Then no directory is left that a later synth would take as built
    other = load_functions()["greeks"]
    failing["on"] = True
    with pytest.raises(lambda_assets.LambdaAssetError):
        assets.path(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_prepare_builds_each_missing_asset_once_and_raises_the_first_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a builder that records what it builds and fails for the greeks asset
    built: list[str] = []

    def fake_build(function: FunctionDefinition, target: Path, **_: object) -> int:
        built.append(function.name)
        (target / "handler.py").write_text("")
        if function.name == "greeks":
            raise lambda_assets.LambdaAssetError("over budget")
        return 1

    monkeypatch.setattr(lambda_assets, "build", fake_build)
    assets = lambda_assets.BuiltAssets(tmp_path)
    functions = load_functions()
    # When every function's asset is prepared at once
    with pytest.raises(lambda_assets.LambdaAssetError):
        assets.prepare(functions.values())
    # Then each distinct asset was built once (functions sharing one, once between them)
    distinct = {fingerprint(f) for f in functions.values()}
    assert len(built) == len(distinct) < len(functions)
    # And every asset but the failed one is in place, with nothing half-built left
    assert {p.name for p in tmp_path.iterdir()} == distinct - {fingerprint(functions["greeks"])}
    # And a second prepare builds only what is still missing
    built.clear()
    with pytest.raises(lambda_assets.LambdaAssetError):
        assets.prepare(functions.values())
    assert built == ["greeks"]


def test_a_queue_mapping_outside_lambdas_bounds_is_refused(tmp_path: Path) -> None:
    # Given the definition with the order-updates batch above one receive
    text = (ROOT / "lambdas" / "event_source_mappings.toml").read_text()
    path = tmp_path / "m.toml"
    path.write_text(
        text.replace(
            "batch_size = 10\nmaximum_batching_window_seconds = 0\n"
            "report_batch_item_failures = true\nmaximum_concurrency",
            "batch_size = 11\nmaximum_batching_window_seconds = 0\n"
            "report_batch_item_failures = true\nmaximum_concurrency",
        )
    )
    # When loaded, Then it is refused by name
    with pytest.raises(DefinitionError, match=r"\[order-updates\]"):
        load_queue_mappings(path)
    # And the committed one loads
    assert load_queue_mappings()["order-updates"].batch_size == 10
