"""``python -m lambdas.instruments``: publish today's snapshot once (sandbox start, operators).

Reads the same environment as the Lambda (``INSTRUMENTS_*``, ``KITE_REST_URL``,
``KITE_CREDENTIALS_*``, ``DB_*`` and the AWS SDK's); prints the outcome as JSON;
exits 1 if nothing was published, 2 if the environment is incomplete.
"""

from __future__ import annotations

import json
import sys

from lambdas.instruments.handler import FAILURES, Dependencies, publish
from ticker_adapters.settings import SettingsError


def main() -> int:
    """Run one publication; the exit status says whether it succeeded."""
    try:
        deps = Dependencies.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        print(json.dumps(publish({}, deps)))
    except FAILURES as exc:
        print(f"instruments snapshot not published: {exc}", file=sys.stderr)
        return 1
    finally:
        deps.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
