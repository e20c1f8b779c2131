"""Lambda function assets: unzipped size against the 150 MB budget, and cold import time.

Each distinct asset is built exactly as ``make synth`` builds it (pip for
Python 3.12 on arm64 against ``constraints.txt``, the function's packages,
the same pruning) and measured unzipped (what Lambda's 250 MB limit counts)
and zipped (what is uploaded). Arm64 wheels cannot be imported on this
machine, so the cold import is timed on a twin of each asset built the same
way for this machine's platform and Python: a fresh interpreter without
site-packages (``-I -S``), only the asset on its path, importing the
handler module with a stage-like environment, as a Lambda cold start's init
phase does. Anchor in the same rounds: ``import boto3`` from the same kind of
directory, the floor every Python function that calls AWS pays.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from infra.definitions import FunctionDefinition, load_functions
from infra.lambda_assets import BUDGET_BYTES, build, fingerprint, tree_bytes
from tools.benchmarking import Comparison, Figure, Result, benchmark

ROUNDS = 7
MB = 1e6
TWIN_PLATFORMS = {
    "x86_64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "manylinux_2_17_x86_64"),
    "aarch64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64"),
}
# What a stage gives each function (names only matter; nothing is called at import).
STAGE_ENV = {
    "POWERTOOLS_METRICS_NAMESPACE": "TickerService",
    "LOG_LEVEL": "INFO",
    "AWS_REGION": "ap-south-1",
    "AWS_DEFAULT_REGION": "ap-south-1",
    "GREEKS_STREAM_NAME": "ticker-dev-greeks",
    "INSTRUMENTS_BUCKET": "ticker-dev-instruments",
    "KITE_REST_URL": "https://api.kite.trade",
    "KITE_CREDENTIALS_KMS_KEY_ARN": "arn:aws:kms:ap-south-1:123456789012:key/bench",
    "DB_HOST": "proxy.ticker.internal",
    # An ARN, not a secret value.
    "DB_SECRET_ARN": "arn:aws:secretsmanager:ap-south-1:1234:secret:b",  # pragma: allowlist secret
}
IMPORT = (
    "import importlib, sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); "
    "importlib.import_module(sys.argv[2]); print(time.perf_counter() - t)"
)


def zipped_bytes(directory: Path, scratch: Path) -> int:
    """The asset's size as uploaded (deflate, as the CDK zips it)."""
    archive = scratch / f"{directory.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(directory))
    size = archive.stat().st_size
    archive.unlink()
    return size


def stage_env() -> dict[str, str]:
    """A stage-like environment with generated credentials (nothing is called with them)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        **STAGE_ENV,
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def import_seconds(asset: Path, module: str, *, write_bytecode: bool = True) -> float:
    """One cold import of ``module`` from ``asset`` in a fresh interpreter (``-B``: compiling
    every module and keeping none of it, as a read-only directory without bytecode does)."""
    flags = ["-I", "-S"] if write_bytecode else ["-I", "-S", "-B"]
    result = subprocess.run(
        [sys.executable, *flags, "-c", IMPORT, str(asset), module],
        capture_output=True,
        text=True,
        env=stage_env(),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {module} from its asset failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.strip())


def distinct_assets() -> dict[str, list[FunctionDefinition]]:
    """Functions grouped by the asset they share (same packages and wheels)."""
    groups: dict[str, list[FunctionDefinition]] = {}
    for function in load_functions().values():
        groups.setdefault(fingerprint(function), []).append(function)
    return groups


@benchmark("lambda_assets")
def run() -> Result:
    """Build every asset for Lambda and for this machine; size one, time the other's imports."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    twin_platforms = TWIN_PLATFORMS[platform.machine()]
    figures: list[Figure] = []
    checks: list[tuple[str, bool]] = []
    comparisons: list[Comparison] = []
    scratch = Path(tempfile.mkdtemp(prefix="lambda-assets-"))
    try:
        twins: dict[str, Path] = {}
        modules: dict[str, str] = {}
        for functions in distinct_assets().values():
            first = functions[0]
            label = " + ".join(f.name for f in functions)
            lambda_dir = scratch / "lambda" / first.name
            size = build(first, lambda_dir, budget=10 * BUDGET_BYTES)
            figures.append(Figure(f"{label}: unzipped (arm64, py3.12)", size / MB, "MB"))
            figures.append(Figure(f"{label}: zipped", zipped_bytes(lambda_dir, scratch) / MB, "MB"))
            checks.append(
                (f"{label}: {size / MB:.1f} MB <= {BUDGET_BYTES / MB:.0f} MB", size <= BUDGET_BYTES)
            )
            shutil.rmtree(lambda_dir)
            twin = scratch / "twin" / first.name
            build(
                first,
                twin,
                budget=10 * BUDGET_BYTES,
                platforms=twin_platforms,
                python_version=python,
            )
            figures.append(
                Figure(f"{label}: twin unzipped (this machine)", tree_bytes(twin) / MB, "MB")
            )
            for function in functions:
                twins[function.name] = twin
                modules[function.name] = function.handler.rsplit(".", 1)[0]
        anchor_dir = twins["persist"]
        samples: dict[str, list[float]] = {name: [] for name in modules}
        samples["anchor"] = []
        for _ in range(ROUNDS):  # interleaved: a busy moment slows every candidate alike
            samples["anchor"].append(import_seconds(anchor_dir, "boto3"))
            for name, module in modules.items():
                samples[name].append(import_seconds(twins[name], module))
        anchor = statistics.median(samples["anchor"])
        figures.append(Figure("anchor: import boto3 (median cold)", anchor * 1000, "ms"))
        for name in modules:
            median = statistics.median(samples[name])
            figures.append(
                Figure(f"{name}: cold import of its handler (median)", median * 1000, "ms")
            )
            comparisons.append(
                Comparison(f"{name} handler import", "import boto3", anchor / median)
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Result(
        name="lambda_assets",
        title="Lambda assets: size against the 150 MB budget, cold import time",
        method=__doc__ or "",
        figures=figures,
        comparisons=comparisons,
        checks=checks,
        notes=[
            "Import times are from an x86-64 twin on this machine's CPython, not arm64 on "
            "Lambda: a ratio against boto3's import in the same rounds, not a Lambda "
            "init duration.",
            "Ratios are anchor time / handler time: 0.25 means the handler takes 4x boto3's "
            "import.",
        ],
    )
