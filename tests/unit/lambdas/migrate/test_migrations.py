"""Migration bookkeeping: order, edits and gaps are caught before any SQL runs."""

import pytest

from lambdas.migrate.logic import Migration, MigrationError, bundled_migrations, ordered, pending


def test_bundled_migrations_are_numbered_from_one_without_gaps() -> None:
    migrations = bundled_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "market"


def test_pending_skips_applied_and_keeps_order() -> None:
    # Given three migrations of which the first is applied
    a, b, c = (Migration(v, f"m{v}", f"select {v};") for v in (1, 2, 3))
    # When pending ones are computed, Then the rest come in version order
    assert pending([a, b, c], {1: a.checksum}) == [b, c]


def test_edited_migration_is_refused() -> None:
    # Given migration 1 was applied, and its file was edited afterwards
    applied = {1: Migration(1, "m1", "select 1;").checksum}
    edited = Migration(1, "m1", "select 2;")
    # When pending is computed, Then it refuses, naming the migration
    with pytest.raises(MigrationError, match="0001_m1 changed"):
        pending([edited], applied)


def test_database_ahead_of_build_is_refused() -> None:
    with pytest.raises(MigrationError, match="lacks"):
        pending([], {7: "abc"})


def test_duplicate_versions_are_refused() -> None:
    with pytest.raises(MigrationError, match="share version 2"):
        ordered([Migration(2, "a", ""), Migration(2, "b", "")])
