"""Stage settings from cdk.json: the committed stages validate; a bad one is refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import StageConfigError, stage_config
from tests.infra.conftest import ROOT, STAGES

pytestmark = pytest.mark.infra


def context() -> dict[str, Any]:
    return dict(json.loads((ROOT / "cdk.json").read_text())["context"])


@pytest.mark.parametrize("name", STAGES)
def test_the_committed_stages_validate(name: str) -> None:
    config = stage_config(context(), name)
    assert config.name == name
    assert all(z.startswith(config.region) for z in config.availability_zones)


def test_prod_keeps_its_data_and_survives_an_availability_zone() -> None:
    prod = stage_config(context(), "prod")
    assert prod.retain_data
    assert prod.database.multi_az
    assert prod.database.deletion_protection
    assert prod.nat_gateways >= 2
    assert not prod.kite_simulator
    assert prod.cognito.mfa == "REQUIRED"
    assert prod.cognito.threat_protection
    assert not prod.cognito.self_sign_up
    assert not prod.cors_allowed_origins


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"feed": {"desired_count": 2}}, "desired_count"),
        ({"feed": {"cpu": 1024, "memory_mib": 1000}}, "Fargate size"),
        ({"availability_zones": ["us-east-1a", "us-east-1b"]}, "availability_zones"),
        ({"nat_gateways": 3}, "nat_gateways"),
        ({"log_retention_days": 10}, "log_retention_days"),
        ({"streams": {"shards": 0}}, "shards"),
        ({"streams": {"mode": "FAST"}}, "streams.mode"),
        ({"database": {"instance_type": "t3.medium"}}, "Graviton"),
        ({"cors_allowed_origins": ["http://example.com"]}, "https origin"),
        ({"kite_simulator": "yes"}, "kite_simulator"),
        ({"colour": "blue"}, "unknown keys ['colour']"),
        ({"api": {"throttling_burst_limit": 1}}, "api.throttling_burst_limit"),
        ({"api": {"waf_rate_limit": 10}}, "api.waf_rate_limit"),
        ({"api": {"websocket_rate_limit": 0}}, "api.websocket_rate_limit"),
        ({"api": {"event_archive_days": -1}}, "api.event_archive_days"),
        ({"cognito": {"mfa": "OFF"}}, "cognito.mfa"),
        ({"cognito": {"refresh_token_hours": 0}}, "cognito.refresh_token_hours"),
        ({"feed": {"cpus": 1}}, "unknown keys ['cpus']"),
    ],
)
def test_a_bad_stage_is_refused_naming_the_key(change: dict[str, Any], named: str) -> None:
    # Given dev's settings with one bad key
    ctx = context()
    dev = ctx["stages"]["dev"]
    for key, value in change.items():
        dev[key] = {**dev[key], **value} if isinstance(value, dict) and key in dev else value
    # When validated, Then the error names the stage and the key
    with pytest.raises(StageConfigError) as error:
        stage_config(ctx, "dev")
    assert "stages.dev" in str(error.value)
    assert named in str(error.value)


def test_an_unknown_stage_is_refused() -> None:
    with pytest.raises(StageConfigError, match="staging"):
        stage_config(context(), "staging")
