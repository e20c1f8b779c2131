"""The day's instruments for a request-serving function: the registry, or a typed refusal."""

from __future__ import annotations

from collections.abc import Callable

from lambdas.common.observability import Observability
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader, SnapshotError
from ticker_core.instruments import InstrumentRegistry


def current_registry(
    reader: InstrumentSnapshotReader, obs: Observability, unavailable: Callable[[], Exception]
) -> Callable[[], InstrumentRegistry]:
    """A getter of the current snapshot's registry (cached by ``reader``).

    When there is no snapshot to read (none published yet, S3 unreachable, a
    corrupt object), the failure is logged by type and ``unavailable()`` is
    raised: each function answers it in its own protocol's terms.
    """

    def registry() -> InstrumentRegistry:
        try:
            return reader.current().registry
        except SnapshotError as exc:
            obs.logger.error(
                "instruments snapshot unavailable", extra={"error": type(exc).__name__}
            )
            raise unavailable() from exc

    return registry
