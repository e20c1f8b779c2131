"""``python -m feed_container``: the Fargate entrypoint, and the sandbox's plain process.

Reads its environment (:class:`FeedEnvironment`; exit 2 naming every bad
variable, never its value), logs Powertools JSON to stdout,
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

from feed_container import logs
from feed_container.service import FeedService
from feed_container.settings import FeedEnvironment
from ticker_adapters.settings import SettingsError

log = logging.getLogger("feed_container")


async def serve(environment: FeedEnvironment) -> bool:
    """Run the service until a stop signal; True when everything reached Kinesis."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await FeedService(environment).run(stop)


def main() -> int:
    """Parse settings, run, return the exit status."""
    try:
        environment = FeedEnvironment.from_env()
    except SettingsError as exc:
        print(
            f"invalid feed configuration: {', '.join(sorted(exc.problems))}\n{exc}", file=sys.stderr
        )
        return 2
    logger = logs.configure(environment.feed.log_level)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(environment))
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
