"""The emulator reads the mapping definition infra deploys and refuses what it cannot emulate."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.esm import MappingConfigError, load_mapping_definitions

ENTRY = """
[mappings.ticks-persist]
stream = "ticks"
function = "persist"
consumer = "shared"
batch_size = 1000
maximum_batching_window_seconds = 1
maximum_retry_attempts = 10
maximum_record_age_seconds = -1
bisect_batch_on_function_error = true
report_batch_item_failures = true
parallelization_factor = 1
starting_position = "TRIM_HORIZON"
on_failure = "persist"
"""


def test_the_committed_definition_loads_into_emulator_configs() -> None:
    # Given the committed lambdas/event_source_mappings.toml
    # When the emulator loads it
    definitions = {d.name: d for d in load_mapping_definitions()}
    # Then every stream -> function pair of the data path is there, with Lambda's settings
    pairs = {(d.stream, d.function) for d in definitions.values()}
    assert pairs == {("ticks", "greeks"), ("ticks", "persist"), ("greeks", "persist")}
    for definition in definitions.values():
        assert definition.config.report_batch_item_failures
        assert definition.config.bisect_batch_on_function_error


def test_a_definition_is_copied_field_by_field(tmp_path: Path) -> None:
    # Given one entry
    path = tmp_path / "mappings.toml"
    path.write_text(ENTRY)
    # When loaded
    (definition,) = load_mapping_definitions(path)
    # Then each setting lands on the emulator's own name for it
    assert definition.on_failure == "persist"
    assert definition.config.batch_size == 1000
    assert definition.config.maximum_batching_window_s == 1
    assert definition.config.maximum_retry_attempts == 10
    assert definition.config.maximum_record_age_s == -1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("parallelization_factor = 1", "parallelization_factor = 2"),
        ('starting_position = "TRIM_HORIZON"', 'starting_position = "LATEST"'),
        ('consumer = "shared"', 'consumer = "kcl"'),
        ("batch_size = 1000", "batch_size = 1000\nbatch_bytes = 5"),
    ],
)
def test_what_the_emulator_cannot_run_is_refused(tmp_path: Path, old: str, new: str) -> None:
    # Given an entry asking for something the emulator would silently run differently
    path = tmp_path / "mappings.toml"
    path.write_text(ENTRY.replace(old, new))
    # When loaded, Then it is refused
    with pytest.raises(MappingConfigError):
        load_mapping_definitions(path)
