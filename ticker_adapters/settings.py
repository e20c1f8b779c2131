"""Settings more than one deployable reads, each under one environment variable name everywhere.

Every deployable composes its environment from these and its own models
(``feed_container/settings.py``, ``lambdas/<fn>/settings.py``), so the feed
and the functions name the vault, the streams, the subscriptions table, the
instruments snapshot and Kite's endpoints the same way, and the CDK app sets
them by those names:

=============================== ==================================================
``KITE_CREDENTIALS_KMS_KEY_ARN`` the vault's KMS key ARN (not an alias), required
``KITE_CREDENTIALS_PREFIX``      the vault's secret name prefix (``ticker/kite``)
``KITE_CREDENTIALS_CACHE_SECONDS`` how long a vault read is reused (60)
``KITE_REST_URL``, ``KITE_WS_URL`` Kite's endpoints (production by default)
``KITE_LOGIN_URL``               Kite's login page (the API redirects a browser there)
``KITE_PLAINTEXT_HOSTS``         hosts a Kite URL may name in clear (a private simulator)
``TICKS_STREAM_NAME``            the Kinesis stream of ``tick/1`` records (name or ARN)
``GREEKS_STREAM_NAME``           the Kinesis stream of ``greeks/1`` records (name or ARN)
``SUBSCRIPTIONS_TABLE_NAME``     the desired-subscriptions DynamoDB table
``INSTRUMENTS_BUCKET``, ``INSTRUMENTS_PREFIX``, ``INSTRUMENTS_RECHECK_SECONDS``
                                 where the day's instruments snapshot is published
=============================== ==================================================

:class:`EnvironmentReader` reads several models and reports every missing or
invalid variable at once, by name (never by value: some are secrets), as a
:class:`SettingsError`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Self, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ticker_adapters.endpoints import require_tls_off_loopback
from ticker_adapters.kms import require_key_arn

#: Where the instruments snapshot lives in its bucket (``INSTRUMENTS_PREFIX``'s default).
DEFAULT_PREFIX = "instruments/"

S = TypeVar("S", bound=BaseSettings)
E = TypeVar("E")


class SettingsError(ValueError):
    """Environment variables that are missing or invalid; ``problems`` maps each to why."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        detail = "; ".join(f"{name}: {why}" for name, why in sorted(self.problems.items()))
        super().__init__(f"invalid configuration: {detail}")


def variable_name(model: type[BaseSettings], field: str) -> str:
    """The environment variable ``model`` reads ``field`` from."""
    return f"{model.model_config.get('env_prefix', '')}{field}".upper()


class EnvironmentReader:
    """Reads settings models from the environment, collecting every problem before failing.

    ``read`` returns the model, or on failure an unvalidated placeholder that
    carries only defaults and records the problems; ``check`` then raises one
    :class:`SettingsError` naming every bad variable. Build nothing from a
    placeholder: call ``check`` first.
    """

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def read(self, model: type[S]) -> S:
        """``model()`` from the environment, or a placeholder with the problems recorded."""
        try:
            return model()
        except ValidationError as exc:
            for error in exc.errors():
                loc = error["loc"]
                name = variable_name(model, str(loc[0])) if loc else variable_name(model, "*")
                self.problems.setdefault(name, error["msg"])
            return model.model_construct()

    def check(self) -> None:
        """Raise :class:`SettingsError` if any read failed."""
        if self.problems:
            raise SettingsError(self.problems)


def read_environment(environment: type[E]) -> E:
    """Build the dataclass ``environment`` by reading each of its fields' settings model.

    Every field must be typed with a ``BaseSettings`` model; every problem in
    every model is reported at once (:class:`SettingsError`).
    """
    hints = typing.get_type_hints(environment)
    reader = EnvironmentReader()
    values: dict[str, Any] = {
        field.name: reader.read(hints[field.name])
        for field in dataclasses.fields(environment)  # type: ignore[arg-type]
    }
    reader.check()
    return environment(**values)


class Environment:
    """Base of a deployable's environment: a frozen dataclass of settings models.

    ``from_env`` reads every field's model from the process environment (the
    CDK app's contract tests call it with the environment a template gives).
    """

    @classmethod
    def from_env(cls) -> Self:
        """Read and validate every section; a :class:`SettingsError` names each bad variable."""
        return read_environment(cls)

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every environment variable a section reads (what a deployment may set)."""
        hints = typing.get_type_hints(cls)
        names: set[str] = set()
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint = hints[field.name]
            for model in [a for a in typing.get_args(hint) if isinstance(a, type)] or [hint]:
                if isinstance(model, type) and issubclass(model, BaseSettings):
                    names |= {variable_name(model, f) for f in model.model_fields}
        return frozenset(names)


class VaultSettings(BaseSettings):
    """``KITE_CREDENTIALS_*``: the credential vault's KMS key, secret prefix and read cache."""

    model_config = SettingsConfigDict(
        env_prefix="KITE_CREDENTIALS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    kms_key_arn: str = Field(min_length=1)
    prefix: str = "ticker/kite"
    cache_seconds: float = Field(default=60.0, ge=0)

    @field_validator("kms_key_arn")
    @classmethod
    def _key_arn(cls, value: str) -> str:
        return require_key_arn(value)


class KiteSettings(BaseSettings):
    """``KITE_*``: Kite Connect's endpoints and login page (or the simulator's).

    Access tokens travel in the WebSocket URL and in REST headers, so both
    must use TLS, except to a loopback host or to a host named in
    ``KITE_PLAINTEXT_HOSTS`` (comma-separated): the explicit opt-in of a
    staging stack whose kite_sim runs on the private network. The login page
    (where the API sends a browser to log an account in) follows the same
    rule. Each URL's problem is reported under its own variable.
    """

    model_config = SettingsConfigDict(
        env_prefix="KITE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    #: Hosts allowed in clear besides loopback (declared first: the URL checks read it).
    plaintext_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    #: ``https://`` (``http://`` only to loopback or a ``plaintext_hosts`` host).
    rest_url: str = Field(default="https://api.kite.trade", min_length=1)
    #: ``wss://`` (``ws://`` only to loopback or a ``plaintext_hosts`` host).
    ws_url: str = Field(default="wss://ws.kite.trade", min_length=1)
    #: Kite's login page, ``https://`` (the sandbox points it at kite_sim's).
    login_url: str = Field(default="https://kite.zerodha.com/connect/login", min_length=1)

    @field_validator("plaintext_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value

    @field_validator("rest_url", "login_url")
    @classmethod
    def _https_off_loopback(cls, value: str, info: ValidationInfo) -> str:
        hosts = info.data.get("plaintext_hosts", ())
        return require_tls_off_loopback(value, schemes=("https",), plaintext_hosts=hosts)

    @field_validator("ws_url")
    @classmethod
    def _wss_off_loopback(cls, value: str, info: ValidationInfo) -> str:
        hosts = info.data.get("plaintext_hosts", ())
        return require_tls_off_loopback(value, schemes=("wss",), plaintext_hosts=hosts)


class SnapshotSettings(BaseSettings):
    """``INSTRUMENTS_*``: where the instruments snapshot lives and how often to re-check it."""

    model_config = SettingsConfigDict(
        env_prefix="INSTRUMENTS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    bucket: str = Field(min_length=1)
    prefix: str = DEFAULT_PREFIX
    recheck_seconds: float = Field(default=60.0, ge=0)


class ResourceNameSettings(BaseSettings):
    """Base of a setting that names one AWS resource: ``<prefix>NAME``, required.

    A subclass sets only its ``env_prefix`` (``TICKS_STREAM_`` reads
    ``TICKS_STREAM_NAME``) and says in its docstring what the resource is.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    #: The resource's name (or ARN, where the AWS API takes either).
    name: str = Field(min_length=1)


class TicksStreamSettings(ResourceNameSettings):
    """``TICKS_STREAM_NAME``: the Kinesis stream of ``tick/1`` records (name or ARN)."""

    model_config = SettingsConfigDict(env_prefix="TICKS_STREAM_")


class GreeksStreamSettings(ResourceNameSettings):
    """``GREEKS_STREAM_NAME``: the Kinesis stream of ``greeks/1`` records (name or ARN)."""

    model_config = SettingsConfigDict(env_prefix="GREEKS_STREAM_")


class SubscriptionsTableSettings(ResourceNameSettings):
    """``SUBSCRIPTIONS_TABLE_NAME``: the desired-subscriptions DynamoDB table."""

    model_config = SettingsConfigDict(env_prefix="SUBSCRIPTIONS_TABLE_")
