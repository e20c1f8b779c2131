"""Developer tooling: the secret scan and the benchmark report."""

import secrets
import string
from pathlib import Path

import pytest

from tools import benchmarking, secret_scan


def fake_aws_key_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def test_secret_scan_flags_a_generated_key_without_printing_it(tmp_path: Path) -> None:
    # Given a file holding a freshly generated, fake AWS access key id
    key = fake_aws_key_id()
    leaked = tmp_path / "settings.py"
    leaked.write_text(f'KEY = "{key}"\n')
    clean = tmp_path / "clean.py"
    clean.write_text("x = 1\n")
    # When the tree is scanned
    findings = secret_scan.scan([leaked, clean], root=tmp_path)
    # Then the leak is reported by place and kind, and the key itself is not echoed
    assert any(f.startswith("settings.py:1:") for f in findings)
    assert all(key not in f for f in findings)
    assert not any(f.startswith("clean.py") for f in findings)


def test_report_renders_ratio_and_verdict() -> None:
    # Given a result with one comparison that misses its target
    result = benchmarking.Result(
        name="demo",
        title="Demo",
        method="Method text.",
        comparisons=[benchmarking.Comparison("fast", "anchor", 1.5, target=2.0)],
        figures=[benchmarking.Figure("rate", 1234567.0, "items/s")],
    )
    # When rendered
    text = benchmarking.render([result])
    # Then the ratio, the target and the miss are all visible
    assert "| fast | anchor | 1.50x | >= 2x | **no** |" in text
    assert "1,234,567" in text


def test_interleaved_rates_reports_ratio_to_anchor() -> None:
    # Given a contender that does half the work of the anchor per item
    def slow() -> None:
        sum(range(20000))

    def fast() -> None:
        sum(range(10000))

    # When both are timed in interleaved rounds
    rates, ratios = benchmarking.interleaved_rates(
        {"slow": slow, "fast": fast}, 1, anchor="slow", rounds=3, min_seconds=0.02
    )
    # Then the anchor's ratio is exactly one and the faster one is above it
    assert ratios["slow"] == 1.0
    assert ratios["fast"] > 1.2
    assert rates["fast"] > rates["slow"]


def test_interleaved_rates_requires_the_anchor() -> None:
    with pytest.raises(ValueError, match="anchor"):
        benchmarking.interleaved_rates({"a": lambda: None}, 1, anchor="missing")


def test_secret_scan_exempts_only_sample_payload_fields(tmp_path: Path) -> None:
    # Given base64 blobs as a sample event's "data" field, in another field, and in another file
    def blob() -> str:
        return secrets.token_urlsafe(48).replace("-", "+").replace("_", "/")

    (tmp_path / "events").mkdir()
    sample = tmp_path / "events" / "sample.json"
    sample.write_text(f'{{\n  "data": "{blob()}",\n  "note": "{blob()}"\n}}\n')
    elsewhere = tmp_path / "config.json"
    elsewhere.write_text(f'{{\n  "data": "{blob()}"\n}}\n')
    # When scanned
    findings = secret_scan.scan([sample, elsewhere], root=tmp_path)
    # Then only the sample's payload field is exempt
    assert not any(f.startswith("events/sample.json:2:") for f in findings)
    assert any(f.startswith("events/sample.json:3:") for f in findings)
    assert any(f.startswith("config.json:2:") for f in findings)
