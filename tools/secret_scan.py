"""Fail when a tracked file looks like it holds a secret.

Runs detect-secrets' default plugins over every file git tracks (or every file
under the tree when there is no git checkout), plus a few patterns specific to
this service. Findings print as ``path:line: kind``; the secret itself is never
printed, so CI logs cannot leak what they report.
"""

from __future__ import annotations

import re
import subprocess  # nosec B404 # runs git with fixed arguments only
import sys
from pathlib import Path

from detect_secrets.core.secrets_collection import SecretsCollection
from detect_secrets.settings import default_settings

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_SUFFIXES = {".png", ".jpg", ".gz", ".zip", ".whl", ".lock"}
SKIPPED_NAMES = {"constraints.txt"}

# Patterns detect-secrets does not know: Kite credentials assigned to literals.
EXTRA_PATTERNS = {
    "Kite access token literal": re.compile(r"""access_token\s*[:=]\s*["'][A-Za-z0-9]{32}["']"""),
    "Kite API secret literal": re.compile(r"""api_secret\s*[:=]\s*["'][a-z0-9]{32}["']"""),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
}


# Kinesis record payloads in the generated samples under events/ are base64 by
# definition (tools/make_events.py builds them from made-up ticks and a test
# checks they match); only that field, only there, is exempt from entropy checks.
ENCODED_PAYLOAD = re.compile(r'^\s*"data": "[A-Za-z0-9+/=]+",?$')


def _is_sample_payload(root: Path, filename: str, line_number: int) -> bool:
    if not filename.startswith("events/"):
        return False
    lines = (root / filename).read_text(encoding="utf-8").splitlines()
    return 0 < line_number <= len(lines) and bool(ENCODED_PAYLOAD.match(lines[line_number - 1]))


def tracked_files() -> list[Path]:
    """Files git tracks, or every regular file when the tree is not a checkout."""
    try:
        out = subprocess.run(  # nosec B603 B607 # fixed command, no shell
            # Tracked files plus new ones not ignored: a secret is caught before its commit.
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
        return [ROOT / n for n in names]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]


def scan(files: list[Path], root: Path = ROOT) -> list[str]:
    """Return one ``path:line: kind`` string per finding (paths relative to ``root``)."""
    candidates = [
        f
        for f in files
        if f.is_file() and f.suffix not in SKIPPED_SUFFIXES and f.name not in SKIPPED_NAMES
    ]
    findings: list[str] = []
    collection = SecretsCollection(root=str(root))
    with default_settings():
        collection.scan_files(*(str(f.relative_to(root)) for f in candidates))
    for filename, secret in collection:
        if secret.type == "Base64 High Entropy String" and _is_sample_payload(
            root, filename, secret.line_number
        ):
            continue
        findings.append(f"{filename}:{secret.line_number}: {secret.type}")
    for f in candidates:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for lineno, line in enumerate(text.splitlines(), start=1):
            if "pragma: allowlist secret" in line:
                continue
            for kind, pattern in EXTRA_PATTERNS.items():
                if pattern.search(line):
                    findings.append(f"{f.relative_to(root)}:{lineno}: {kind}")
    return sorted(set(findings))


def main() -> int:
    """Scan and report; exit 1 on any finding."""
    findings = scan(tracked_files())
    for finding in findings:
        print(finding, file=sys.stderr)
    if findings:
        print(f"secret scan: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print("secret scan: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
