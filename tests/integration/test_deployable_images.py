"""Each deployable's package set, installed alone into a clean virtual environment, starts.

A package set is what one image or asset carries: some first-party folders
and one optional-dependency group, installed with ``constraints.txt``. The
feed's is read from ``feed_container/Dockerfile`` (what it copies and the
extra it installs); each Lambda function's from ``[tool.ticker-service.functions]``
in ``pyproject.toml``, the one declaration the CDK app reads too.

For each set, in its own virtual environment (the distinct sets are installed by
uv in parallel at session start, its cache shared; functions whose sets are the
same, folders and requirements, share one):

* every first-party module the entry point can reach (its import closure,
  found by reading the source, lazy imports included) imports, and every
  third-party module it names (lazy imports included: one may run only on
  some route) is installed, so nothing it needs is missing from the set;
* every dependency the group declares is imported by that closure, so the
  group carries nothing the code does not use (the measure of "only what it
  imports");
* the entry point starts up to its settings check: ``python -m feed_container``
  exits 2 naming the missing variables; a handler imports with an empty
  environment (no import-time side effects) and its first invocation fails
  with a ``SettingsError`` naming them.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.image]

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FUNCTIONS: dict[str, dict[str, object]] = PYPROJECT["tool"]["ticker-service"]["functions"]
FIRST_PARTY = {"ticker_core", "ticker_adapters", "feed_container", "lambdas"}
CONTEXT_FILES = ("pyproject.toml", "setup.py", "constraints.txt", "README.md")
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class PackageSet:
    """First-party folders plus one optional-dependency group."""

    folders: tuple[str, ...]
    extra: str

    @property
    def name(self) -> str:
        return self.extra


def feed_package_set() -> PackageSet:
    """What feed_container/Dockerfile copies into its build stage and the extra it installs."""
    text = (ROOT / "feed_container" / "Dockerfile").read_text().replace("\\\n", " ")
    folders: list[str] = []
    for line in text.splitlines():
        words = line.split(None, 1)
        if words and words[0] == "COPY" and "--from" not in line:
            folders += [s.rstrip("/") for s in shlex.split(words[1])[:-1]]
    (install,) = re.findall(r"-c constraints\.txt \"\.\[([\w,-]+)\]\"", text)
    return PackageSet(tuple(f for f in folders if f not in CONTEXT_FILES), install)


def function_package_sets() -> dict[str, PackageSet]:
    """Each function's declared set, by function name."""
    return {
        name: PackageSet(tuple(str(p) for p in spec["packages"]), str(spec["extra"]))  # type: ignore[attr-defined]
        for name, spec in FUNCTIONS.items()
    }


def all_package_sets() -> list[PackageSet]:
    """Each set once (persist's two entry points share one group), named by its group."""
    sets = sorted({feed_package_set(), *function_package_sets().values()}, key=lambda s: s.name)
    assert len({s.name for s in sets}) == len(sets), "one set per optional-dependency group"
    return sets


def contents(package_set: PackageSet) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What an installed set holds: its folders and its group's requirements (one venv each)."""
    requirements = PYPROJECT["project"]["optional-dependencies"][package_set.extra]
    return tuple(sorted(package_set.folders)), tuple(sorted(requirements))


# -- what the code imports (read from the source, not executed) ---------------------------


def _imports(path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, name or None) of every import statement, except ``if TYPE_CHECKING`` ones."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name


def _source(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(root: Path, entry: str) -> tuple[set[str], set[str]]:
    """First-party modules ``entry`` reaches under ``root``, and the third-party top-levels."""
    modules: set[str] = set()
    external: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # a module imports its packages first
            name = ".".join(parts[:i])
            if name in modules:
                continue
            path = _source(root, name)
            if path is None:
                continue  # reported when the closure is imported
            modules.add(name)
            for imported, attribute in _imports(path):
                top = imported.partition(".")[0]
                if top == "__future__" or top in sys.stdlib_module_names:
                    continue
                if top not in FIRST_PARTY:
                    external.add(top)
                    continue
                todo.append(imported)
                if attribute and _source(root, f"{imported}.{attribute}"):
                    todo.append(f"{imported}.{attribute}")
    return modules, external


# -- the clean environments ----------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    package_set: PackageSet
    context: Path
    python: Path


def _copy_context(package_set: PackageSet, context: Path) -> None:
    context.mkdir(parents=True)
    for name in CONTEXT_FILES:
        shutil.copy2(ROOT / name, context / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in package_set.folders:
        parts = Path(folder).parts
        for i in range(1, len(parts)):  # a folder brings its parents' __init__.py
            parent = Path(*parts[:i])
            (context / parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / parent / "__init__.py", context / parent / "__init__.py")
        shutil.copytree(ROOT / folder, context / folder, ignore=ignore, dirs_exist_ok=True)


def clean_env(**extra: str) -> dict[str, str]:
    """A process environment with nothing of ours: no settings, no AWS region, no PYTHONPATH."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    # The installers' own settings (index, cache, certificates) and proxies reach the installs.
    passed = ("PIP_", "UV_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items() if k in keep or k.upper().startswith(passed)}
    return {
        **env,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **extra,
    }


UV = Path(sys.executable).parent / "uv"


def install(package_set: PackageSet, base: Path) -> Installed:
    """A fresh venv holding exactly ``package_set`` (non-editable, pinned by constraints).

    uv, not pip: the same resolution from the same pins, the same wheels, the project built
    by its own backend in an isolated environment, but in seconds rather than minutes (pip
    took three of the suite's fifteen minutes here). Nothing is compiled to bytecode at
    install, as the Lambda assets are built; the probes compile only what they import.
    """
    context = base / "context"
    _copy_context(package_set, context)
    venv = base / "venv"
    env = clean_env()
    subprocess.run(
        [str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True, timeout=120, env=env, cwd=base,
    )  # fmt: skip
    python = venv / "bin" / "python"
    result = subprocess.run(
        [
            str(UV), "pip", "install", "--quiet", "--python", str(python),
            "-c", str(context / "constraints.txt"),
            f"{context}[{package_set.extra}]",
        ],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env, cwd=base,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return Installed(package_set, context, python)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Installed]:
    """Every package set, by group, in a venv of its own contents: each distinct one built
    once per session, in parallel."""
    sets = all_package_sets()
    base = tmp_path_factory.mktemp("images")
    distinct = {contents(s): s for s in sets}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(install, s, base / s.name) for key, s in distinct.items()}
        venvs = {key: future.result() for key, future in futures.items()}
    return {s.name: replace(venvs[contents(s)], package_set=s) for s in sets}


PROBE = """
import importlib, importlib.metadata as md, importlib.util, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
missing = [t for t in json.loads(sys.argv[2]) if importlib.util.find_spec(t) is None]
dists = md.packages_distributions()
print(json.dumps({"failures": failures, "missing": missing,
                  "distributions": {t: dists.get(t, []) for t in json.loads(sys.argv[2])}}))
"""


def probe(target: Installed, modules: set[str], external: set[str]) -> dict[str, dict[str, object]]:
    arguments = [json.dumps(sorted(modules)), json.dumps(sorted(external))]
    result = subprocess.run(
        [str(target.python), "-c", PROBE, *arguments],
        capture_output=True, text=True, timeout=300, env=clean_env(), cwd=target.context.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extra: str) -> set[str]:
    """The distributions an optional-dependency group names (extras and pins stripped)."""
    requirements = PYPROJECT["project"]["optional-dependencies"][extra]
    return {_normalise(re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0]) for r in requirements}


def check_closure(target: Installed, entry: str) -> None:
    """The closure of ``entry`` imports in the venv, and it uses everything the group declares."""
    modules, external = import_closure(target.context, entry)
    folders = target.package_set.folders
    outside = {m for m in modules if not any(m.replace(".", "/").startswith(f) for f in folders)}
    assert not outside - {"lambdas"}, f"{entry} reaches modules outside its set: {outside}"
    found = probe(target, modules, external)
    assert found["failures"] == {}, f"{entry}: modules that cannot import: {found['failures']}"
    assert found["missing"] == [], f"{entry}: imports what the set lacks: {found['missing']}"
    imported = {_normalise(d) for ds in found["distributions"].values() for d in ds}  # type: ignore[union-attr]
    unused = declared(target.package_set.extra) - imported
    assert not unused, f"{target.package_set.extra} declares what {entry} never imports: {unused}"


# -- the tests -----------------------------------------------------------------------------


def test_every_function_declares_a_handler_its_settings_and_an_existing_package_set() -> None:
    for name, spec in FUNCTIONS.items():
        assert set(spec) == {"handler", "packages", "extra", "settings", "aws_services"}, name
        assert spec["extra"] in PYPROJECT["project"]["optional-dependencies"], name
        for folder in spec["packages"]:  # type: ignore[attr-defined]
            assert (ROOT / folder / "__init__.py").is_file(), (name, folder)
    # And every function folder is some function's
    folders = {p.parent.name for p in (ROOT / "lambdas").glob("*/__init__.py")} - {"common"}
    handlers = {str(spec["handler"]).split(".")[1] for spec in FUNCTIONS.values()}
    assert folders == handlers


def test_the_feed_image_holds_what_it_imports_and_starts_to_its_settings_check(
    installed: dict[str, Installed],
) -> None:
    # Given exactly what the Dockerfile copies and installs, in a clean environment
    feed = installed[feed_package_set().name]
    check_closure(feed, "feed_container.__main__")
    # When the entrypoint runs with no settings
    result = subprocess.run(
        [str(feed.python), "-m", "feed_container"],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=feed.context.parent,
    )  # fmt: skip
    # Then it got as far as reading its settings, and names what is missing
    assert result.returncode == 2, result.stderr[-4000:]
    assert "invalid feed configuration" in result.stderr
    for name in ("KITE_CREDENTIALS_KMS_KEY_ARN", "TICKS_STREAM_NAME", "SUBSCRIPTIONS_TABLE_NAME"):
        assert name in result.stderr


INVOKE = """
import importlib, json, sys
module, _, attribute = sys.argv[1].rpartition(".")
handler = getattr(importlib.import_module(module), attribute)  # no environment: import only
settings_module, _, settings_class = sys.argv[2].rpartition(".")
getattr(importlib.import_module(settings_module), settings_class)
class Context:
    function_name = "probe"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:probe"
    aws_request_id = "probe"
try:
    handler({}, Context())
except Exception as exc:
    variables = sorted(getattr(exc, "problems", {}))
    print(json.dumps({"error": type(exc).__name__, "variables": variables}))
"""


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_function_asset_holds_what_it_imports_and_reaches_its_settings_check(
    installed: dict[str, Installed], function: str
) -> None:
    # Given the function's declared package set, alone in a clean environment
    spec = FUNCTIONS[function]
    target = installed[function_package_sets()[function].name]
    handler = str(spec["handler"])
    check_closure(target, handler.rpartition(".")[0])
    # When the handler module is imported with an empty environment and invoked once
    result = subprocess.run(
        [str(target.python), "-c", INVOKE, handler, str(spec["settings"])],
        capture_output=True, text=True, timeout=120, env=clean_env(), cwd=target.context.parent,
    )  # fmt: skip
    # Then the import did nothing, and the first invocation stopped at the settings check
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "SettingsError", outcome
    assert outcome["variables"], outcome
