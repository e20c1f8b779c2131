"""``python -m infra.lint TEMPLATE...``: cfn-lint on synthesized templates, with the reasons.

Every check left out is listed here with why; everything else cfn-lint reports
(errors and warnings alike) fails ``make synth`` and ``tests/infra``.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 # runs cfn-lint with arguments built here, no shell
import sys
from pathlib import Path

IGNORED = {
    "W3010": "the availability zones are pinned in cdk.json on purpose (no synth-time look-up)",
    "W3005": "CDK writes a DependsOn beside a GetAtt it also writes (harmless, not ours to edit)",
}


def command(templates: list[Path]) -> list[str]:
    """The cfn-lint invocation for ``templates`` (the cfn-lint beside this interpreter)."""
    binary = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    return [binary, "--ignore-checks", *IGNORED, "--", *map(str, templates)]


def lint(templates: list[Path]) -> subprocess.CompletedProcess[str]:
    """Run cfn-lint; a zero return code means nothing to report."""
    return subprocess.run(  # nosec B603 # argv built above, no shell
        command(templates), capture_output=True, text=True, check=False
    )


def main(argv: list[str]) -> int:
    """Lint the templates named in ``argv``; print what cfn-lint found."""
    result = lint([Path(a) for a in argv])
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode == 0:
        print(f"cfn-lint: clean ({', '.join(IGNORED)} left out: see infra/lint.py)")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
