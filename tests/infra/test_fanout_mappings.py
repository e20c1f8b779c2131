"""The WebSocket fan-outs' stream mappings: live data, so no on-failure queue, and a tight alarm.

Synthesizes the dev stage with the fan-out mappings README documents added
to the shared definition when it does not hold them yet, so the path that
deploys a mapping without ``on_failure`` is exercised (and passes cdk-nag)
whatever the definition holds today.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import functions
from infra.definitions import MAPPINGS_FILE, load_mappings
from tests.infra.conftest import Synthesized, stub_app
from tests.infra.test_api import alarms_on, function_id
from tests.infra.test_stack import ref_id

pytestmark = pytest.mark.infra

FANOUT_MAPPINGS = {
    f"{stream}-fanout-{stream}": f"""
[mappings.{stream}-fanout-{stream}]
stream = "{stream}"
function = "fanout-{stream}"
consumer = "shared"
batch_size = 1000
maximum_batching_window_seconds = 0
maximum_retry_attempts = 2
maximum_record_age_seconds = 60
bisect_batch_on_function_error = true
report_batch_item_failures = true
parallelization_factor = 1
starting_position = "TRIM_HORIZON"
"""
    for stream in ("ticks", "greeks")
}


@pytest.fixture(scope="module")
def with_fanouts(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """dev, synthesized (cdk-nag on) with a mapping per fan-out."""
    from app import build_app

    directory = tmp_path_factory.mktemp("fanout")
    text = MAPPINGS_FILE.read_text()
    mapped = {m.function for m in load_mappings().values()}
    for name, entry in FANOUT_MAPPINGS.items():
        if name.split("-", 1)[1] not in mapped:
            text += entry
    definition = directory / "mappings.toml"
    definition.write_text(text)
    app, context = stub_app(directory / "cdk.out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(functions, "load_mappings", lambda: load_mappings(definition))
        name = build_app(app, stage="dev", nag=True).stack_name
        app.synth()
    template = json.loads((directory / "cdk.out" / f"{name}.template.json").read_text())
    return Synthesized("dev", template, context["stages"]["dev"])


def _fanout_mappings(stage: Synthesized) -> dict[str, dict[str, Any]]:
    by_function = {function_id(stage, n): n for n in ("fanout-ticks", "fanout-greeks")}
    return {
        by_function[ref_id(m["Properties"]["FunctionName"])]: m["Properties"]
        for m in stage.resources("AWS::Lambda::EventSourceMapping").values()
        if ref_id(m["Properties"]["FunctionName"]) in by_function
    }


def test_a_fanout_mapping_reads_its_stream_with_no_failure_destination(
    with_fanouts: Synthesized,
) -> None:
    # Given the fan-outs' mappings (the synth passed cdk-nag with them)
    mappings = _fanout_mappings(with_fanouts)
    streams = {
        name: next(k for k in with_fanouts.resources("AWS::Kinesis::Stream") if cap in k)
        for name, cap in (("ticks", "Ticks"), ("greeks", "Greeks"))
    }
    # Then each reads its own stream and sets nothing aside
    assert set(mappings) == {"fanout-ticks", "fanout-greeks"}
    for name, mapping in mappings.items():
        assert ref_id(mapping["EventSourceArn"]) == streams[name.split("-")[1]]
        assert "DestinationConfig" not in mapping
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_a_fanout_more_than_five_seconds_behind_pages(with_fanouts: Synthesized) -> None:
    ages = {
        ref_id(a["dimensions"]["FunctionName"]): a["threshold"]
        for a in alarms_on(with_fanouts, "IteratorAge")
    }
    for name in ("fanout-ticks", "fanout-greeks"):
        assert ages[function_id(with_fanouts, name)] == 5000
    assert ages[function_id(with_fanouts, "persist")] == 60_000
