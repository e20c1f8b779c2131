"""Stage settings (dev, prod, ...) from ``cdk.json`` context, validated into a typed model.

``cdk.json`` holds one object per stage under ``stages``; ``-c stage=NAME``
picks one (default ``dev``). Every key is checked: an unknown key, a wrong
type or a value out of range stops the synth with the stage, the key and the
rule, before any construct is built. Stdlib only (dataclasses), as infra
imports nothing but CDK.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

DEFAULT_STAGE = "dev"
ACCOUNT_PATTERN = re.compile(r"^\d{12}$")
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ORIGIN_PATTERN = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653)
# Fargate's valid (cpu, memory MiB) pairs for the sizes the feed can use.
FARGATE_SIZES = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}


class StageConfigError(ValueError):
    """The stage's context is invalid; the message names the stage, the key and the rule."""


@dataclass(frozen=True)
class StreamsConfig:
    """Both Kinesis streams (``ticks`` and ``greeks``)."""

    mode: Literal["PROVISIONED", "ON_DEMAND"] = "PROVISIONED"
    shards: int = 2
    """Per stream, in PROVISIONED mode (1 MB/s and 1,000 records/s in, per shard)."""
    retention_hours: int = 24

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.shards <= 500:
            problems.append("shards must be in 1..500")
        if not 24 <= self.retention_hours <= 8760:
            problems.append("retention_hours must be in 24..8760")
        return problems


@dataclass(frozen=True)
class DatabaseConfig:
    """RDS PostgreSQL behind RDS Proxy."""

    instance_type: str = "t4g.medium"
    """An RDS class without the ``db.`` prefix; Graviton (``*g``) classes."""
    allocated_storage_gib: int = 50
    max_allocated_storage_gib: int = 200
    multi_az: bool = False
    deletion_protection: bool = False
    backup_retention_days: int = 7

    def validate(self) -> list[str]:
        problems = []
        if not re.match(r"^[a-z0-9]+g[a-z0-9-]*\.[a-z0-9]+$", self.instance_type):
            problems.append("instance_type must be a Graviton class like t4g.medium")
        if not 20 <= self.allocated_storage_gib <= self.max_allocated_storage_gib <= 65536:
            problems.append("need 20 <= allocated_storage_gib <= max_allocated_storage_gib")
        if not 1 <= self.backup_retention_days <= 35:
            problems.append("backup_retention_days must be in 1..35")
        return problems


@dataclass(frozen=True)
class FeedConfig:
    """The Fargate feed service."""

    cpu: int = 1024
    memory_mib: int = 2048
    desired_count: int = 1
    """0 pauses the feed; never more than 1: two tasks would share the accounts' API keys."""
    ephemeral_storage_gib: int = 30
    """Room for the spill (FEED_SPILL_MAX_BYTES is set below it) besides the image."""

    def validate(self) -> list[str]:
        problems = []
        if self.memory_mib not in FARGATE_SIZES.get(self.cpu, ()):
            problems.append(f"cpu {self.cpu} / memory_mib {self.memory_mib} is not a Fargate size")
        if self.desired_count not in (0, 1):
            problems.append("desired_count must be 0 or 1 (one task holds every API key)")
        if not 21 <= self.ephemeral_storage_gib <= 200:
            problems.append("ephemeral_storage_gib must be in 21..200")
        return problems


@dataclass(frozen=True)
class ApiConfig:
    """The REST and WebSocket APIs: throttling, the WAF's per-address limit, the event archive."""

    throttling_rate_limit: int = 50
    """Requests per second across the REST API's stage (steady state)."""
    throttling_burst_limit: int = 100
    waf_rate_limit: int = 1000
    """Requests one address may make in 5 minutes before the WAF blocks it (100..2e9)."""
    websocket_rate_limit: int = 100
    """Client messages per second across the WebSocket stage (each connection is also
    limited by the ws function, WS_MESSAGES_PER_SECOND)."""
    websocket_burst_limit: int = 200
    event_archive_days: int = 0
    """Days the event bus's archive keeps order updates and login events (0: no archive)."""

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.throttling_rate_limit <= 10_000:
            problems.append("throttling_rate_limit must be in 1..10000")
        if not self.throttling_rate_limit <= self.throttling_burst_limit <= 5_000:
            problems.append("throttling_burst_limit must be in throttling_rate_limit..5000")
        if not 100 <= self.waf_rate_limit <= 2_000_000_000:
            problems.append("waf_rate_limit must be in 100..2000000000")
        if not 1 <= self.websocket_rate_limit <= 10_000:
            problems.append("websocket_rate_limit must be in 1..10000")
        if not self.websocket_rate_limit <= self.websocket_burst_limit <= 5_000:
            problems.append("websocket_burst_limit must be in websocket_rate_limit..5000")
        if not 0 <= self.event_archive_days <= 3650:
            problems.append("event_archive_days must be in 0..3650")
        return problems


@dataclass(frozen=True)
class CognitoConfig:
    """The user pool the APIs authenticate against."""

    mfa: Literal["OPTIONAL", "REQUIRED"] = "REQUIRED"
    """TOTP (authenticator apps); OPTIONAL lets a user sign in before setting it up."""
    threat_protection: bool = False
    """Cognito's threat protection (the Plus feature plan): compromised-credential and
    adaptive sign-in checks, enforced."""
    self_sign_up: bool = False
    """Anyone may create a user (they still see nothing without a grant); off: operators
    create users."""
    refresh_token_hours: int = 24
    """How long a front end may renew its tokens without the user signing in again."""

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.refresh_token_hours <= 24 * 3650:
            problems.append("refresh_token_hours must be in 1..87600")
        return problems


@dataclass(frozen=True)
class StageConfig:
    """One deployment stage."""

    name: str
    region: str
    availability_zones: tuple[str, ...]
    """Pinned, so synth needs no AWS look-up; 2 or 3 of the region's zones."""
    account: str | None = None
    """12 digits, or None: the account of the credentials ``cdk deploy`` runs with."""
    nat_gateways: int = 1
    """Each has an Elastic IP: the egress addresses to register with Kite."""
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    kite_simulator: bool = False
    """Staging without Kite: deploy kite_sim as an ECS service and point everything at it."""
    retain_data: bool = False
    """Keep streams' archive, database snapshots, tables and buckets when the stack is deleted."""
    log_retention_days: int = 30
    alarm_email: str | None = None
    cors_allowed_origins: tuple[str, ...] = ()
    """The API's CORS allow-list (https origins): API_CORS_ORIGINS of the API functions."""
    api: ApiConfig = field(default_factory=ApiConfig)
    cognito: CognitoConfig = field(default_factory=CognitoConfig)

    def validate(self) -> list[str]:
        problems = []
        if self.account is not None and not ACCOUNT_PATTERN.match(self.account):
            problems.append("account must be 12 digits")
        if not REGION_PATTERN.match(self.region):
            problems.append(f"region {self.region!r} is not a region name")
        zones = self.availability_zones
        if not 2 <= len(zones) <= 3 or len(set(zones)) != len(zones):
            problems.append("availability_zones must be 2 or 3 distinct zones")
        if any(not (z.startswith(self.region) and len(z) == len(self.region) + 1) for z in zones):
            problems.append(f"availability_zones must be zones of {self.region}")
        if not 1 <= self.nat_gateways <= len(zones):
            problems.append("nat_gateways must be in 1..len(availability_zones)")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            problems.append(f"log_retention_days must be one of {LOG_RETENTION_DAYS}")
        if self.alarm_email is not None and not EMAIL_PATTERN.match(self.alarm_email):
            problems.append("alarm_email is not an email address")
        for origin in self.cors_allowed_origins:
            if not ORIGIN_PATTERN.match(origin):
                problems.append(f"cors_allowed_origins: {origin!r} is not an https origin")
        problems += [f"streams.{p}" for p in self.streams.validate()]
        problems += [f"database.{p}" for p in self.database.validate()]
        problems += [f"feed.{p}" for p in self.feed.validate()]
        problems += [f"api.{p}" for p in self.api.validate()]
        problems += [f"cognito.{p}" for p in self.cognito.validate()]
        return problems


T = TypeVar("T")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as ``annotation`` (dataclasses, tuples, literals, optionals, scalars)."""
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise StageConfigError(f"{where} must be an object")
        return _build(annotation, value, where)
    if origin in (types.UnionType, typing.Union):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, where)
    if origin is Literal:
        if value not in get_args(annotation):
            raise StageConfigError(f"{where} must be one of {get_args(annotation)}")
        return value
    if origin is tuple:
        (inner, _) = get_args(annotation)
        if not isinstance(value, list):
            raise StageConfigError(f"{where} must be a list")
        return tuple(_coerce(v, inner, f"{where}[{n}]") for n, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise StageConfigError(f"{where} must be true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StageConfigError(f"{where} must be an integer")
        return value
    if annotation is str:
        if not isinstance(value, str) or not value:
            raise StageConfigError(f"{where} must be a non-empty string")
        return value
    raise StageConfigError(f"{where}: unsupported type {annotation!r}")  # pragma: no cover


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise StageConfigError(f"{where}: unknown keys {unknown}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise StageConfigError(f"{where}: {exc}") from exc


def stage_config(context: dict[str, Any], stage: str) -> StageConfig:
    """The named stage from the ``stages`` context object, validated."""
    stages = context.get("stages")
    if not isinstance(stages, dict) or stage not in stages:
        known = sorted(stages) if isinstance(stages, dict) else []
        raise StageConfigError(f"stage {stage!r} is not in cdk.json's stages {known}")
    config = _build(StageConfig, {"name": stage, **stages[stage]}, f"stages.{stage}")
    problems = config.validate()
    if problems:
        raise StageConfigError(f"stages.{stage}: " + "; ".join(problems))
    return config
