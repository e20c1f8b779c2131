"""The greeks function's environment: ``GREEKS_*``, the stream it writes, the snapshot it reads.

Importing this module reads nothing; :meth:`GreeksEnvironment.from_env` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticker_adapters.settings import Environment, GreeksStreamSettings, SnapshotSettings
from ticker_core.records.limits import DEFAULT_AGGREGATE_BYTES, MAX_RECORD_BYTES


class GreeksSettings(BaseSettings):
    """``GREEKS_*``: how Greeks are computed and written."""

    model_config = SettingsConfigDict(
        env_prefix="GREEKS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    risk_free_rate: float = Field(default=0.065, ge=-0.1, le=1.0)
    """Continuously compounded rate for discounting (about the 91-day T-bill yield)."""
    parity_pairs: int = Field(default=2, ge=1)
    carry_max_age_seconds: float = Field(default=900.0, ge=0)
    put_attempts: int = Field(default=5, ge=1)
    aggregate_bytes: int = Field(default=DEFAULT_AGGREGATE_BYTES, gt=0, le=MAX_RECORD_BYTES)


@dataclass(frozen=True)
class GreeksEnvironment(Environment):
    """Everything the greeks function reads from its environment."""

    greeks: GreeksSettings
    #: ``GREEKS_STREAM_NAME``: where the Greeks go.
    output: GreeksStreamSettings
    #: ``INSTRUMENTS_*``: the instruments snapshot (expiries, strikes, underlyings).
    snapshot: SnapshotSettings
