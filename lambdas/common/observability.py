"""The one place Lambdas get their logger and metrics from.

Powertools structured JSON logs and CloudWatch EMF metrics, named per
function, in one namespace. Secrets never reach a log line: credentials are
types whose repr masks them (see :mod:`ticker_adapters.credentials`), nothing
here logs events wholesale, and as the last line of defence every line is
serialized by the hook the feed uses too
(:func:`~ticker_adapters.redaction.redacted_json`), which redacts the final
JSON.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ticker_adapters.redaction import redacted_json

NAMESPACE = "TickerService"

__all__ = ["NAMESPACE", "MetricUnit", "Observability"]


class Observability:
    """A function's logger and metrics; create one per handler module at init."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.logger = Logger(
            service=service,
            level=os.environ.get("LOG_LEVEL", "INFO"),
            json_serializer=redacted_json,
        )
        self.metrics = Metrics(
            service=service, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
        )

    def count(self, name: str, value: float = 1) -> None:
        """Add to a count metric for this invocation."""
        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def milliseconds(self, name: str, value: float) -> None:
        """Record a duration metric for this invocation."""
        self.metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)

    def name_service(self, service: str) -> None:
        """Rename the service on logs and metrics (a handler shared by two functions learns
        which one it is from its settings, on the first invocation)."""
        self.service = service
        self.logger.append_keys(service=service)
        self.metrics.set_default_dimensions(service=service)
