"""Which migrations exist and which still need applying (pure)."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

MIGRATION_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migration set or the database's record of it is inconsistent."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: applied once, in version order, inside a transaction."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL, to detect a migration edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in ``lambdas/migrate/sql``, in version order."""
    files = resources.files("lambdas.migrate").joinpath("sql")
    found = []
    for entry in files.iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(
                Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
            )
    return ordered(found)


def ordered(migrations: Iterable[Migration]) -> list[Migration]:
    """Sort by version, refusing duplicate versions."""
    result = sorted(migrations, key=lambda m: m.version)
    for a, b in itertools.pairwise(result):
        if a.version == b.version:
            raise MigrationError(f"two migrations share version {a.version}: {a.name}, {b.name}")
    return result


def pending(available: list[Migration], applied: Mapping[int, str]) -> list[Migration]:
    """Migrations not yet applied, after checking applied ones were not edited or lost.

    ``applied`` maps version -> checksum as recorded in the database.
    """
    known = {m.version: m for m in available}
    for version, checksum in applied.items():
        migration = known.get(version)
        if migration is None:
            raise MigrationError(f"database has migration {version}, which this build lacks")
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name} changed after it was applied; "
                "write a new migration instead"
            )
    return [m for m in available if m.version not in applied]
