"""``python -m feed_container``: the Fargate entrypoint, and the sandbox's plain process.

Reads ``FEED_*`` settings (exit 2 naming the bad ones, never their values),
logs Powertools JSON to stdout,
runs until SIGTERM or SIGINT, then stops within ``FEED_STOP_TIMEOUT_SECONDS``
and exits 0 (1 if the service itself failed).

Once the service has flushed, the process exits without joining worker
threads still blocked in an AWS call (a subscription read, a vault read):
their results are no longer wanted, and waiting for them could overrun the
stop timeout, after which ECS kills the task anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from pydantic import ValidationError

from feed_container import logs
from feed_container.service import FeedService
from feed_container.settings import FeedSettings

log = logging.getLogger("feed_container")


async def serve(settings: FeedSettings) -> bool:
    """Run the service until a stop signal; True when everything reached Kinesis."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await FeedService(settings).run(stop)


def main() -> int:
    """Parse settings, run, return the exit status."""
    try:
        settings = FeedSettings()  # type: ignore[call-arg]  # required fields come from the environment
    except ValidationError as exc:
        fields = ", ".join("FEED_" + str(e["loc"][0]).upper() for e in exc.errors() if e["loc"])
        print(f"invalid feed configuration: {fields}\n{exc}", file=sys.stderr)
        return 2
    logger = logs.configure(settings.log_level)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(settings))
    except Exception:
        logger.exception("feed failed")
        return 1
    finally:
        loop.close()  # shuts the default executor down without waiting for it
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # see the module docstring: no join of abandoned worker threads
