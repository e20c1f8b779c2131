"""The migrate function's environment: the database's ``DB_*``.

Importing this module reads nothing; :meth:`MigrateEnvironment.from_env` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from lambdas.common.db import DatabaseSettings
from ticker_adapters.settings import Environment


@dataclass(frozen=True)
class MigrateEnvironment(Environment):
    """Everything ``python -m lambdas.migrate`` and the migrate function read."""

    database: DatabaseSettings
