"""``python -m lambdas.instruments``: publish today's snapshot once (sandbox start, operators).

Reads the same environment as the Lambda (``INSTRUMENTS_*``, ``KITE_CREDENTIALS_*``,
``DB_*`` and the AWS SDK's); prints the outcome as JSON; exits 1 if nothing was published.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Run one publication; the exit status says whether it succeeded."""
    from lambdas.instruments.handler import FAILURES, pool, publish, runner

    try:
        print(json.dumps(publish({})))
    except FAILURES as exc:
        print(f"instruments snapshot not published: {exc}", file=sys.stderr)
        return 1
    finally:
        opened = pool.reset()
        if opened is not None:
            runner.run(opened.close())
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
