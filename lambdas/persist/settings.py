"""The persist function's environment: ``PERSIST_*`` and the database's ``DB_*``.

Importing this module reads nothing; :meth:`PersistEnvironment.from_env` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.common.db import DatabaseSettings
from ticker_adapters.settings import Environment


class PersistSettings(BaseSettings):
    """``PERSIST_*``: partition maintenance."""

    model_config = SettingsConfigDict(
        env_prefix="PERSIST_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    partitions_ahead_days: int = 3
    retention_days: int = 30


@dataclass(frozen=True)
class PersistEnvironment(Environment):
    """Everything the persist functions (stream consumer and maintenance) read."""

    persist: PersistSettings
    database: DatabaseSettings
