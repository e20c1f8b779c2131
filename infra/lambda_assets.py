"""Lambda function assets, built at synth without Docker.

Each function's asset is its first-party folders (``packages`` in the function
table) plus exactly the wheels of its optional-dependency group, resolved for
Lambda's platform (Python 3.12 on arm64) against ``constraints.txt``:

    pip install --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64
        --implementation cp --python-version 3.12 --only-binary=:all: --no-compile
        -c constraints.txt --target DIR <requirements>

Both platform tags are needed: with the newer one alone pip silently settles on
old releases of packages that publish only the older tag (pydantic-core,
numpy). ``--no-compile`` leaves ``.pyc`` writing to the runtime (the package
stays platform-neutral and smaller). The whole dependency set is about 254 MB
unzipped, over Lambda's 250 MB, hence one set per function, each checked
against :data:`BUDGET_BYTES` (an oversized asset fails the synth). Of botocore's
models (28 MB for some 450 services) an asset keeps those of the services its
function declares (``aws_services``, :func:`prune_service_models`).

The asset hash is computed from the inputs (the definition, the constraints,
the first-party sources, these packaging rules), so an unchanged function is
not rebuilt (:class:`BuiltAssets` keeps builds by that hash). No CDK bundling
hook is involved: the build is plain Python at synth. Tests use
:class:`StubAssets`: one tiny directory for every function, no pip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess  # nosec B404 # runs pip with arguments built here, no shell
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from aws_cdk import AssetHashType
from aws_cdk import aws_lambda as lambda_

from infra.definitions import CONSTRAINTS, REPO_ROOT, FunctionDefinition

PYTHON_VERSION = "3.12"
RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
BUILD_WORKERS = 4
"""Asset builds run at once by :meth:`BuiltAssets.prepare` (pip mostly waits on I/O)."""
ASSET_CACHE = REPO_ROOT / "build" / "lambda-assets"
"""Built assets by fingerprint (``build/`` is ignored by git)."""
BUDGET_BYTES = 150 * 1000 * 1000
"""Per function, unzipped; Lambda's own limit is 250 MB (layers included)."""
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
# Wheels' payloads the runtime never loads: test suites, C headers. Not ``numpy.testing``:
# scipy imports it through ``from numpy import *`` (the lambda_assets benchmark imports every
# handler from a pruned twin of its asset, which is how that was found).
PRUNED_DIRS = ("tests", "include")
PRUNED_TOP = ("numpy", "scipy")
KEPT_SUBPACKAGES = {"scipy": frozenset({"_lib", "special"})}
"""Of these distributions, only the subpackages the project imports are kept.

scipy is 74 MB on arm64 and ``ticker_core.options`` uses ``scipy.special`` only;
tests/infra imports every handler and fails if a function loads a subpackage
missing here, so a new import cannot ship a broken asset."""


class LambdaAssetError(RuntimeError):
    """A function's asset could not be built, or is over its budget."""


class AssetSource(Protocol):
    """Where function code comes from (built from the repository, or a stub for tests)."""

    def code(self, function: FunctionDefinition) -> lambda_.Code:
        """The function's code asset."""
        ...


def pip_command(
    function: FunctionDefinition,
    target: Path,
    *,
    platforms: tuple[str, ...] = PLATFORMS,
    python_version: str = PYTHON_VERSION,
) -> list[str]:
    """The pip invocation that vendors ``function``'s wheels for Lambda into ``target``.

    ``platforms`` and ``python_version`` are Lambda's unless a benchmark builds a twin
    of the asset for the machine it runs on (to time its imports).
    """
    platform_args = [arg for tag in platforms for arg in ("--platform", tag)]
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        *platform_args,
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--no-compile",
        "-c",
        str(CONSTRAINTS),
        "--target",
        str(target),
        *function.requirements,
    ]


def copy_packages(function: FunctionDefinition, target: Path, root: Path = REPO_ROOT) -> None:
    """The function's first-party folders, with their parents' ``__init__.py``."""
    for folder in function.packages:
        shutil.copytree(root / folder, target / folder, ignore=IGNORED, dirs_exist_ok=True)
        parent = Path(folder).parent
        while parent != Path("."):
            init = root / parent / "__init__.py"
            if init.exists():
                (target / parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(init, target / parent / "__init__.py")
            parent = parent.parent


def prune(target: Path) -> None:
    """Remove what the runtime never imports from the heaviest wheels (test suites, headers)."""
    for top in PRUNED_TOP:
        base = target / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*"), reverse=True):
            if path.is_dir() and path.name in PRUNED_DIRS:
                shutil.rmtree(path, ignore_errors=True)
    for top, kept in KEPT_SUBPACKAGES.items():
        base = target / top
        if base.is_dir():
            for child in base.iterdir():
                if child.is_dir() and child.name not in kept and child.name != "__pycache__":
                    shutil.rmtree(child)
    shutil.rmtree(target / "bin", ignore_errors=True)


BOTOCORE_MODELS = Path("botocore") / "data"


def prune_service_models(target: Path, services: tuple[str, ...]) -> None:
    """Keep botocore's models of ``services`` only (its 450 services are 28 MB of the asset).

    A service's folder goes whole (every API version, endpoint rules, paginators,
    waiters); the files beside the folders (endpoints, partitions, retry and default
    configuration) are what every client reads, so they stay.
    """
    models = target / BOTOCORE_MODELS
    if not models.is_dir():
        return
    for child in models.iterdir():
        if child.is_dir() and child.name not in services:
            shutil.rmtree(child)


def tree_bytes(root: Path) -> int:
    """Unzipped size of everything under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def build(
    function: FunctionDefinition,
    target: Path,
    *,
    budget: int = BUDGET_BYTES,
    platforms: tuple[str, ...] = PLATFORMS,
    python_version: str = PYTHON_VERSION,
) -> int:
    """Build ``function``'s asset into ``target``; its unzipped size in bytes."""
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    command = pip_command(function, target, platforms=platforms, python_version=python_version)
    result = subprocess.run(  # nosec B603 # argv built above, no shell
        command, capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise LambdaAssetError(f"pip failed for {function.name}:\n{result.stderr[-4000:]}")
    copy_packages(function, target)
    prune(target)
    prune_service_models(target, function.aws_services)
    size = tree_bytes(target)
    if size > budget:
        raise LambdaAssetError(
            f"{function.name}: {size / 1e6:.1f} MB unzipped, over its {budget / 1e6:.0f} MB budget"
        )
    return size


def fingerprint(function: FunctionDefinition, root: Path = REPO_ROOT) -> str:
    """A digest of every input of the asset: unchanged inputs, unchanged asset, no rebuild."""
    digest = hashlib.sha256()
    # Not the handler: functions with the same packages and wheels share one asset.
    for part in (
        *function.packages,
        *function.requirements,
        *(f"aws:{service}" for service in function.aws_services),
        PYTHON_VERSION,
        *PLATFORMS,
    ):
        digest.update(part.encode() + b"\0")
    digest.update(CONSTRAINTS.read_bytes())
    digest.update(Path(__file__).read_bytes())  # the packaging rules themselves (pruning)
    for folder in function.packages:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class BuiltAssets:
    """Assets built from the repository at synth (``make synth``, ``cdk deploy``).

    Each distinct asset is built once into ``build/lambda-assets/<fingerprint>/`` (kept
    between synths: an unchanged function is not rebuilt) and handed to CDK under that
    fingerprint, so CDK stages it into ``cdk.out`` only when it is new there. A build
    goes to a temporary sibling first and is renamed into place, so an interrupted synth
    never leaves a half-built asset that a later synth would take as complete.
    """

    def __init__(self, cache: Path = ASSET_CACHE) -> None:
        self._cache = cache

    def prepare(
        self, functions: Iterable[FunctionDefinition], workers: int = BUILD_WORKERS
    ) -> None:
        """Build every missing asset of ``functions`` at once, ``workers`` at a time.

        A build is mostly pip waiting on downloads and unpacking wheels, so
        builds overlap well: a synth after a dependency or packaging change
        rebuilds all of them in about the time of the slowest few, not their sum.
        The first failure is raised once the others have finished (each failed
        build leaves nothing behind, see :meth:`path`).
        """
        missing: dict[str, FunctionDefinition] = {}
        for function in functions:
            key = fingerprint(function)
            if key not in missing and not (self._cache / key).is_dir():
                missing[key] = function
        if not missing:
            return
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(self.path, function) for function in missing.values()]
        for future in futures:
            if (error := future.exception()) is not None:
                raise error

    def path(self, function: FunctionDefinition) -> Path:
        """The built asset's directory, building it if this fingerprint has none yet."""
        target = self._cache / fingerprint(function)
        if not target.is_dir():
            self._cache.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f".{function.name}-", dir=self._cache))
            try:
                size = build(function, partial, budget=BUDGET_BYTES)
                partial.rename(target)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            print(f"lambda asset {function.name}: {size / 1e6:.1f} MB", file=sys.stderr)
        return target

    def code(self, function: FunctionDefinition) -> lambda_.Code:
        return lambda_.Code.from_asset(
            str(self.path(function)),
            asset_hash=fingerprint(function),
            asset_hash_type=AssetHashType.CUSTOM,
        )


class StubAssets:
    """One tiny asset for every function (tests: fast, no pip, no network)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "stub.py").write_text("# stub asset for synthesis tests\n")
        self._directory = directory

    def code(self, function: FunctionDefinition) -> lambda_.Code:
        return lambda_.Code.from_asset(str(self._directory))
