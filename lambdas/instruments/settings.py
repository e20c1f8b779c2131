"""The instruments function's environment: ``INSTRUMENTS_*``, Kite, the vault and the database.

Importing this module reads nothing; :meth:`InstrumentsEnvironment.from_env` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.common.db import DatabaseSettings
from ticker_adapters.settings import Environment, KiteSettings, SnapshotSettings, VaultSettings


class InstrumentsSettings(BaseSettings):
    """``INSTRUMENTS_*`` knobs of this function (where the snapshot goes: SnapshotSettings)."""

    model_config = SettingsConfigDict(
        env_prefix="INSTRUMENTS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    account_id: str | None = None
    """The account whose session downloads the dump (default: the first with a live one)."""
    http_timeout_seconds: float = Field(default=60.0, gt=0)
    http_attempts: int = Field(default=3, ge=1)
    http_retry_base_seconds: float = Field(default=1.0, ge=0)
    """First retry waits up to this long (full jitter, doubling, capped at 8x)."""
    max_drop: float = Field(default=0.2, gt=0, lt=1)
    """Largest tolerated shrink of a segment against the last good dump."""
    keep_days: int = Field(default=7, ge=0)
    """Days of registry kept in PostgreSQL (S3 retention is a bucket lifecycle rule)."""


@dataclass(frozen=True)
class InstrumentsEnvironment(Environment):
    """Everything the instruments function (and ``python -m lambdas.instruments``) reads."""

    instruments: InstrumentsSettings
    #: ``INSTRUMENTS_BUCKET``/``_PREFIX``: where the snapshot is published.
    snapshot: SnapshotSettings
    #: ``KITE_REST_URL``: where the dump is downloaded from.
    kite: KiteSettings
    #: ``KITE_CREDENTIALS_*``: the sessions to download with.
    vault: VaultSettings
    database: DatabaseSettings
