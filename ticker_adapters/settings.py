"""Environment models more than one Lambda reads (database settings are in ``db.py``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticker_adapters.envelope import require_key_arn
from ticker_adapters.instrument_snapshots import DEFAULT_PREFIX


class SnapshotSettings(BaseSettings):
    """``INSTRUMENTS_*``: where the instruments snapshot lives and how often to re-check it."""

    model_config = SettingsConfigDict(
        env_prefix="INSTRUMENTS_", extra="ignore", hide_input_in_errors=True
    )

    bucket: str
    prefix: str = DEFAULT_PREFIX
    recheck_seconds: float = Field(default=60.0, ge=0)


class VaultSettings(BaseSettings):
    """``KITE_CREDENTIALS_*``: the credential vault's secret prefix and KMS key."""

    model_config = SettingsConfigDict(
        env_prefix="KITE_CREDENTIALS_", extra="ignore", hide_input_in_errors=True
    )

    kms_key_arn: str
    prefix: str = "ticker/kite"
    cache_seconds: float = Field(default=60.0, ge=0)

    @field_validator("kms_key_arn")
    @classmethod
    def _key_arn(cls, value: str) -> str:
        return require_key_arn(value)
