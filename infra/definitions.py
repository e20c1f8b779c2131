"""What the stack reads from the repository as data: functions, mappings, migrations, schemas,
the REST API's operations.

Stdlib only (``tomllib``, ``hashlib``): infra never imports runtime code, so a
function's handler, packages and wheels, and each event source mapping, are
read from the files the runtime side declares them in.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = REPO_ROOT / "pyproject.toml"
MAPPINGS_FILE = REPO_ROOT / "lambdas" / "event_source_mappings.toml"
MIGRATIONS_DIR = REPO_ROOT / "lambdas" / "migrate" / "sql"
SCHEMAS_DIR = REPO_ROOT / "ticker_core" / "schemas"
OPENAPI = REPO_ROOT / "openapi.json"
CONSTRAINTS = REPO_ROOT / "constraints.txt"

# Each image's build context: the project files and the folders its Dockerfile copies
# (the feed's also setup.py, which compiles its C record formatter).
PROJECT_FILES = ("pyproject.toml", "constraints.txt", "README.md")
IMAGE_FOLDERS = {
    "feed_container": ("setup.py", "ticker_core", "ticker_adapters", "feed_container"),
    "kite_sim": ("ticker_core", "kite_sim"),
}
SIM_PORT = 8000
"""The port kite_sim serves REST and WebSocket on in a stage (its Dockerfile exposes it)."""

STREAMS = ("ticks", "greeks")
CONSUMERS = ("shared", "enhanced-fan-out")
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST")

FUNCTION_EXTENSION = "x-ticker-function"
"""The operation's function in ``openapi.json`` (``lambdas.api.context.FUNCTION_EXTENSION``)."""
DEFAULT_OPERATION_FUNCTION = "api"
OPERATION_FUNCTIONS = {"market": "api-market"}
"""``x-ticker-function`` values -> the function (a key of the pyproject function table)."""
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


class DefinitionError(ValueError):
    """A data file the stack reads is malformed; the message names the file and entry."""


@dataclass(frozen=True)
class FunctionDefinition:
    """One ``[tool.ticker-service.functions.<name>]`` entry of ``pyproject.toml``."""

    name: str
    handler: str
    packages: tuple[str, ...]
    extra: str
    requirements: tuple[str, ...]
    """The requirement strings of the ``extra`` optional-dependency group."""
    aws_services: tuple[str, ...] = ()
    """The AWS services its clients call (botocore's model names): its asset keeps their
    models only."""


@dataclass(frozen=True)
class MappingDefinition:
    """One ``[mappings.<name>]`` entry of ``lambdas/event_source_mappings.toml``."""

    name: str
    stream: str
    function: str
    consumer: str
    batch_size: int
    maximum_batching_window_seconds: int
    maximum_retry_attempts: int
    maximum_record_age_seconds: int
    bisect_batch_on_function_error: bool
    report_batch_item_failures: bool
    parallelization_factor: int
    starting_position: str
    on_failure: str | None = None
    """The function whose on-failure queue gets a discarded batch's metadata; None: dropped."""

    def __post_init__(self) -> None:
        checks = [
            (self.stream in STREAMS, f"stream must be one of {STREAMS}"),
            (self.consumer in CONSUMERS, f"consumer must be one of {CONSUMERS}"),
            (1 <= self.batch_size <= 10_000, "batch_size must be in 1..10000"),
            (
                0 <= self.maximum_batching_window_seconds <= 300,
                "maximum_batching_window_seconds must be in 0..300",
            ),
            (
                -1 <= self.maximum_retry_attempts <= 10_000,
                "maximum_retry_attempts must be -1 or in 0..10000",
            ),
            (
                self.maximum_record_age_seconds == -1
                or 60 <= self.maximum_record_age_seconds <= 604_800,
                "maximum_record_age_seconds must be -1 or in 60..604800",
            ),
            (1 <= self.parallelization_factor <= 10, "parallelization_factor must be in 1..10"),
            (self.starting_position in STARTING_POSITIONS, "starting_position"),
        ]
        for ok, message in checks:
            if not ok:
                raise DefinitionError(f"{MAPPINGS_FILE.name} [{self.name}]: {message}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DefinitionError(f"cannot read {path}: {exc}") from exc


def load_functions(pyproject: Path = PYPROJECT) -> dict[str, FunctionDefinition]:
    """Every Lambda function the project declares, by name."""
    document = _read_toml(pyproject)
    table = document.get("tool", {}).get("ticker-service", {}).get("functions", {})
    extras = document.get("project", {}).get("optional-dependencies", {})
    functions = {}
    for name, entry in table.items():
        try:
            handler, packages, extra = entry["handler"], entry["packages"], entry["extra"]
        except KeyError as exc:
            raise DefinitionError(f"function {name}: missing {exc.args[0]}") from exc
        if extra not in extras:
            raise DefinitionError(f"function {name}: no optional-dependency group {extra!r}")
        for folder in packages:
            if not (pyproject.parent / folder).is_dir():
                raise DefinitionError(f"function {name}: package folder {folder!r} is missing")
        services = entry.get("aws_services")
        if not isinstance(services, list) or not all(
            isinstance(s, str) and re.fullmatch(r"[a-z0-9-]+", s) for s in services
        ):
            raise DefinitionError(
                f"function {name}: aws_services must list botocore service names"
                " (an empty list when it calls none)"
            )
        functions[name] = FunctionDefinition(
            name, handler, tuple(packages), extra, tuple(extras[extra]), tuple(sorted(services))
        )
    if not functions:
        raise DefinitionError(f"{pyproject}: no [tool.ticker-service.functions] entries")
    return functions


def load_mappings(path: Path = MAPPINGS_FILE) -> dict[str, MappingDefinition]:
    """Every event source mapping, by name, validated against Lambda's bounds."""
    mappings = {}
    for name, entry in _read_toml(path).get("mappings", {}).items():
        try:
            mappings[name] = MappingDefinition(name=name, **entry)
        except TypeError as exc:
            raise DefinitionError(f"{path.name} [{name}]: {exc}") from exc
    return mappings


@dataclass(frozen=True)
class QueueMappingDefinition:
    """One ``[queue_mappings.<name>]`` entry of ``lambdas/event_source_mappings.toml``."""

    name: str
    queue: str
    function: str
    batch_size: int
    maximum_batching_window_seconds: int
    report_batch_item_failures: bool
    maximum_concurrency: int

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.batch_size <= 10, "batch_size must be in 1..10 (one receive)"),
            (
                0 <= self.maximum_batching_window_seconds <= 300,
                "maximum_batching_window_seconds must be in 0..300",
            ),
            (2 <= self.maximum_concurrency <= 1000, "maximum_concurrency must be in 2..1000"),
        ]
        for ok, message in checks:
            if not ok:
                raise DefinitionError(f"{MAPPINGS_FILE.name} [{self.name}]: {message}")


def load_queue_mappings(path: Path = MAPPINGS_FILE) -> dict[str, QueueMappingDefinition]:
    """Every SQS event source mapping, by name, validated against Lambda's bounds."""
    mappings = {}
    for name, entry in _read_toml(path).get("queue_mappings", {}).items():
        try:
            mappings[name] = QueueMappingDefinition(name=name, **entry)
        except TypeError as exc:
            raise DefinitionError(f"{path.name} [{name}]: {exc}") from exc
    return mappings


@dataclass(frozen=True)
class Operation:
    """One operation of ``openapi.json``: what the REST API routes, authorizes and integrates."""

    path: str
    method: str
    """Upper case (``GET``, ``POST``...)."""
    operation_id: str
    function: str
    """The function it is integrated with (a key of the pyproject function table)."""
    authenticated: bool
    """It declares ``security``: the Cognito authorizer guards it."""
    statuses: tuple[str, ...]
    """The response statuses it documents."""

    @property
    def path_parameters(self) -> tuple[str, ...]:
        """The ``{name}`` segments of its path, in order."""
        return tuple(re.findall(r"{(\w+)}", self.path))


def load_openapi(path: Path = OPENAPI) -> dict[str, Any]:
    """The committed OpenAPI document (generated from the API's code)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DefinitionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict) or not document.get("paths"):
        raise DefinitionError(f"{path}: no paths")
    return document


def api_operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of the document, each with the function that serves it."""
    operations = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue  # path-level keys (parameters, summary, ...)
            marker = operation.get(FUNCTION_EXTENSION)
            if marker is None:
                function = DEFAULT_OPERATION_FUNCTION
            elif marker in OPERATION_FUNCTIONS:
                function = OPERATION_FUNCTIONS[marker]
            else:
                raise DefinitionError(
                    f"openapi.json {method.upper()} {path}: {FUNCTION_EXTENSION} {marker!r} "
                    f"is not one of {sorted(OPERATION_FUNCTIONS)}"
                )
            operations.append(
                Operation(
                    path=path,
                    method=method.upper(),
                    operation_id=str(operation.get("operationId") or f"{method}{path}"),
                    function=function,
                    authenticated=bool(operation.get("security")),
                    statuses=tuple(str(s) for s in operation.get("responses", {})),
                )
            )
    return operations


def migrations_fingerprint(directory: Path = MIGRATIONS_DIR) -> str:
    """A digest of every migration file: changes exactly when a deploy has migrations to run."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def record_schemas(directory: Path = SCHEMAS_DIR) -> dict[str, Path]:
    """The committed JSON Schemas of the stream records, by file stem (``tick.v1``, ...)."""
    return {path.stem: path for path in sorted(directory.glob("*.json"))}
