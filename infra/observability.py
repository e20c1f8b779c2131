"""Alarms to an SNS topic, and a dashboard of the data path and the APIs.

Each alarm says what it means for traders in its description. Feed metrics
are the container's CloudWatch EMF lines (namespace ``TickerService/Feed``):
per-account counters carry an ``account`` dimension and are summed with a
Metrics Insights query, stream-wide ones have no dimension. The functions'
own metrics are Powertools EMF in ``TickerService`` with a ``service``
dimension (the name each handler module gives its ``Observability``);
:data:`CODE_METRIC_ALARMS` lists the ones alarmed, and tests/infra checks each
is a metric the code emits under that service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import StageConfig
from infra.data import Streams

FEED_NAMESPACE = "TickerService/Feed"
FUNCTIONS_NAMESPACE = "TickerService"
"""POWERTOOLS_METRICS_NAMESPACE of every function (infra.functions.METRICS_NAMESPACE)."""
FIVE_MINUTES = Duration.minutes(5)
ONE_MINUTE = Duration.minutes(1)


@dataclass(frozen=True)
class Thresholds:
    """Where each alarm fires (the defaults are sized for one trading day's load)."""

    iterator_age_ms: int = 60_000
    live_iterator_age_ms: int = 5_000
    """Consumers whose output is live (the WebSocket fan-outs): seconds late is stale."""
    api_5xx_rate: float = 0.05
    api_latency_p99_ms: int = 5_000
    waf_blocked_per_5_min: int = 100
    feed_lag_p99_s: float = 5.0
    reconnects_per_minute: int = 5
    db_cpu_percent: int = 80
    db_connections: int = 200
    lambda_errors_per_5_min: int = 1


@dataclass(frozen=True)
class CodeMetricAlarm:
    """An alarm on a metric a function emits (Powertools EMF, dimension ``service``).

    ``service`` None: the metric of whichever function emits it, read with a Metrics
    Insights query over the series whose only dimension is ``service`` (per-account
    series of the same metric, which also carry ``account``, are left out).
    """

    service: str | None
    metric: str
    threshold: float
    description: str
    statistic: str = "Sum"
    periods: int = 1

    @property
    def construct_id(self) -> str:
        """A construct id from the service and metric names."""
        words = f"{self.service or 'any'}-{self.metric}".replace("_", "-").split("-")
        return "".join(w[:1].upper() + w[1:] for w in words)


INSIGHTS_FUNCTIONS = {"Sum": "SUM", "Maximum": "MAX", "Minimum": "MIN", "Average": "AVG"}
"""Metrics Insights' name of each CloudWatch statistic."""
FANOUTS = ("fanout-ticks", "fanout-greeks")
CODE_METRIC_ALARMS: tuple[CodeMetricAlarm, ...] = (
    CodeMetricAlarm(
        None,  # the login check's, in all (not per account)
        "KiteLoginRequired",
        0,
        "Accounts without a live Kite session at token expiry or before the open: log them "
        "in (GET /admin/accounts says which); their feed connections and orders wait",
        statistic="Maximum",
    ),
    CodeMetricAlarm(
        "api", "UnexpectedErrors", 0, "api: requests failed unexpectedly (answered 500)"
    ),
    CodeMetricAlarm(
        "api-market",
        "UnexpectedErrors",
        0,
        "api-market: requests failed unexpectedly (answered 500)",
    ),
    CodeMetricAlarm(
        "ws", "UnexpectedErrors", 0, "ws: client messages failed unexpectedly (internal_error)"
    ),
    CodeMetricAlarm(
        "ws-authorizer",
        "Denied_keys_unavailable",
        0,
        "The WebSocket authorizer cannot fetch the user pool's signing keys: every connect "
        "is refused",
    ),
    *(
        alarm
        for fanout in FANOUTS
        for alarm in (
            CodeMetricAlarm(
                fanout,
                "FanoutBatchFailed",
                0,
                f"{fanout}: batches failed (subscriber lookup); clients miss updates while "
                "the mapping retries",
            ),
            CodeMetricAlarm(
                fanout,
                "RemoveFailures",
                0,
                f"{fanout}: gone connections could not be removed; posts to them continue",
            ),
            CodeMetricAlarm(
                fanout,
                "CarryDropped",
                0,
                f"{fanout}: updates for clients that fell behind were dropped (carry full)",
            ),
            CodeMetricAlarm(
                fanout, "Posts_failed", 0, f"{fanout}: posts to clients failed after retries"
            ),
            CodeMetricAlarm(
                fanout,
                "Posts_throttled",
                0,
                f"{fanout}: API Gateway throttles posts to clients (management API limits)",
                periods=3,
            ),
        )
    ),
)


class Observability(Construct):
    """The alarm topic, every alarm of the data path, and the dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        thresholds: Thresholds = Thresholds(),
    ) -> None:
        super().__init__(scope, construct_id)
        self._thresholds = thresholds
        self.topic = sns.Topic(
            self, "Alarms", display_name="ticker-service alarms", master_key=key, enforce_ssl=True
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self.alarms: list[cloudwatch.Alarm] = []
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=f"ticker-service-{config.name}"
        )

    def alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        *,
        periods: int = 1,
        comparison: cloudwatch.ComparisonOperator = (
            cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        ),
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """An alarm that notifies the topic when it fires and when it recovers."""
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=periods,
            comparison_operator=comparison,
            treat_missing_data=missing,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        return alarm

    def watch_functions(
        self,
        functions: dict[str, lambda_.Function],
        stream_consumers: set[str],
        live_consumers: frozenset[str] = frozenset(),
    ) -> None:
        """Errors and throttles of every function; iterator age of the stream consumers
        (``live_consumers``: the tighter live threshold)."""
        t = self._thresholds
        for name, fn in functions.items():
            cid = name.title().replace("-", "")
            self.alarm(
                f"{cid}Errors",
                fn.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                t.lambda_errors_per_5_min - 1,
                f"{name}: invocations failing (stream batches are retried, then set aside)",
            )
            self.alarm(
                f"{cid}Throttles",
                fn.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
                0,
                f"{name}: throttled (account concurrency exhausted?)",
            )
            if name in stream_consumers:
                live = name in live_consumers
                limit_ms = t.live_iterator_age_ms if live else t.iterator_age_ms
                self.alarm(
                    f"{cid}IteratorAge",
                    fn.metric("IteratorAge", period=ONE_MINUTE, statistic="Maximum"),
                    limit_ms,
                    f"{name} is behind its stream by over {limit_ms // 1000} s: "
                    + (
                        "WebSocket clients see stale prices"
                        if live
                        else "live data is late and history is filling in late"
                    ),
                    periods=2 if live else 3,
                )

    def watch_queues(self, queues: dict[str, sqs.Queue]) -> None:
        """Any message in a failure queue is data a function gave up on."""
        for name, queue in queues.items():
            cid = name.title().replace("-", "")
            self.alarm(
                f"{cid}QueueDepth",
                queue.metric_approximate_number_of_messages_visible(
                    period=ONE_MINUTE, statistic="Maximum"
                ),
                0,
                f"{name}: batches were given up on; their sequence numbers are in the queue "
                "for a replay from the stream",
            )

    def watch_feed(self, service: ecs.FargateService, desired: int) -> None:
        """The feed: running, keeping up, connected, not dropping, accounts logged in."""
        t = self._thresholds

        def feed_query(function: str, name: str, label: str) -> cloudwatch.MathExpression:
            # Metrics Insights over the whole namespace: a metric the feed emits per account
            # (with an ``account`` dimension) and one it emits stream-wide are read alike.
            return cloudwatch.MathExpression(
                expression=f'SELECT {function}({name}) FROM "{FEED_NAMESPACE}"',  # noqa: S608  # nosec B608
                label=label,
                period=ONE_MINUTE,
                using_metrics={},
            )

        if desired:
            self.alarm(
                "FeedNotRunning",
                cloudwatch.Metric(
                    namespace="ECS/ContainerInsights",
                    metric_name="RunningTaskCount",
                    dimensions_map={
                        "ClusterName": service.cluster.cluster_name,
                        "ServiceName": service.service_name,
                    },
                    statistic="Minimum",
                    period=ONE_MINUTE,
                ),
                desired,
                "The feed is not running: no ticks are being received",
                periods=3,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                missing=cloudwatch.TreatMissingData.BREACHING,
            )
        self.alarm(
            "FeedLag",
            feed_query("MAX", "E2eLagP99Seconds", "Kite to Kinesis p99 (s)"),
            t.feed_lag_p99_s,
            "Ticks take over 5 s from Kite to Kinesis (p99): Kinesis throttling or a slow task",
            periods=3,
        )
        self.alarm(
            "FeedDroppedTicks",
            feed_query("SUM", "DroppedRecordsTotal", "ticks dropped"),
            0,
            "The feed dropped ticks: memory and disk spill both full (data lost)",
        )
        self.alarm(
            "FeedLoginRequired",
            feed_query("MAX", "AccountsWaitingForLogin", "accounts waiting for a login"),
            0,
            "Accounts without a live Kite session: log them in before the open",
            periods=5,
        )
        self.alarm(
            "FeedReconnectStorm",
            feed_query("SUM", "ReconnectsTotal", "reconnects, all accounts"),
            t.reconnects_per_minute,
            "Connections to Kite keep dropping (network, Kite outage, or an expired token)",
            periods=5,
        )

    def watch_code_metrics(self, alarms: Sequence[CodeMetricAlarm]) -> None:
        """Each metric a function emits that means trouble (see :data:`CODE_METRIC_ALARMS`)."""
        for spec in alarms:
            metric: cloudwatch.IMetric
            if spec.service is None:
                function = INSIGHTS_FUNCTIONS[spec.statistic]
                metric = cloudwatch.MathExpression(
                    expression=(
                        f"SELECT {function}({spec.metric}) "  # noqa: S608  # nosec B608
                        f'FROM SCHEMA("{FUNCTIONS_NAMESPACE}", service)'
                    ),
                    label=spec.metric,
                    period=FIVE_MINUTES,
                    using_metrics={},
                )
            else:
                metric = function_metric(spec.service, spec.metric, spec.statistic, FIVE_MINUTES)
            self.alarm(
                spec.construct_id,
                metric,
                spec.threshold,
                spec.description,
                periods=spec.periods,
            )

    def watch_rest_api(self, api: RestApiMetrics) -> None:
        """The REST API's 5xx rate and p99 latency, and the WAF blocking a spike."""
        t = self._thresholds
        self.alarm(
            "Api5xxRate",
            api.metric("5XXError", "Average", FIVE_MINUTES),
            t.api_5xx_rate,
            f"Over {t.api_5xx_rate:.0%} of API requests answered 5xx (function failures, "
            "timeouts or Kite unavailable)",
            periods=2,
        )
        self.alarm(
            "ApiLatencyP99",
            api.metric("Latency", "p99", FIVE_MINUTES),
            t.api_latency_p99_ms,
            f"API p99 latency over {t.api_latency_p99_ms / 1000:.0f} s: orders are slow",
            periods=3,
        )
        self.alarm(
            "WafBlockedSpike",
            api.waf_metric("BlockedRequests", FIVE_MINUTES),
            t.waf_blocked_per_5_min,
            "The WAF blocked a spike of requests (an attack, or a client over its rate limit)",
        )

    def api_dashboard(
        self,
        api: RestApiMetrics,
        websocket: WebSocketMetrics,
        fanouts: Mapping[str, lambda_.Function],
    ) -> None:
        """A row for the REST API and WAF, and a row for the WebSocket API and its fan-out."""
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="REST API: requests and errors",
                left=[api.metric("Count", "Sum", ONE_MINUTE)],
                right=[
                    api.metric("4XXError", "Sum", ONE_MINUTE),
                    api.metric("5XXError", "Sum", ONE_MINUTE),
                ],
            ),
            cloudwatch.GraphWidget(
                title="REST API: latency (ms)",
                left=[
                    api.metric("Latency", "p50", ONE_MINUTE),
                    api.metric("Latency", "p99", ONE_MINUTE),
                    api.metric("IntegrationLatency", "p99", ONE_MINUTE),
                ],
            ),
            cloudwatch.GraphWidget(
                title="WAF: allowed and blocked",
                left=[api.waf_metric("AllowedRequests", ONE_MINUTE)],
                right=[api.waf_metric("BlockedRequests", ONE_MINUTE)],
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="WebSocket: connects and messages",
                left=[
                    websocket.metric("ConnectCount", "Sum", ONE_MINUTE),
                    websocket.metric("MessageCount", "Sum", ONE_MINUTE),
                ],
                right=[
                    websocket.metric("ClientError", "Sum", ONE_MINUTE),
                    websocket.metric("ExecutionError", "Sum", ONE_MINUTE),
                ],
            ),
            cloudwatch.GraphWidget(
                title="Fan-out: messages posted, failures",
                left=[
                    function_metric(name, "MessagesPosted", "Sum", ONE_MINUTE) for name in fanouts
                ],
                right=[
                    function_metric(name, metric, "Sum", ONE_MINUTE)
                    for name in fanouts
                    for metric in ("Posts_failed", "Posts_throttled", "CarryDropped")
                ],
            ),
            cloudwatch.GraphWidget(
                title="Fan-out: iterator age (ms)",
                left=[
                    fn.metric("IteratorAge", period=ONE_MINUTE, statistic="Maximum", label=name)
                    for name, fn in fanouts.items()
                ],
            ),
        )

    def watch_streams(self, streams: Streams) -> None:
        """Writes refused for throughput: the stage needs more shards."""
        for name, stream in streams.streams.items():
            self.alarm(
                f"{name.capitalize()}WriteThrottled",
                stream.metric_put_records_throttled_records(period=FIVE_MINUTES, statistic="Sum"),
                0,
                f"{name}: writes throttled; the stream needs more shards",
                periods=2,
            )

    def watch_database(self, instance: rds.DatabaseInstance) -> None:
        """CPU and connections of the database."""
        t = self._thresholds
        self.alarm(
            "DatabaseCpu",
            instance.metric_cpu_utilization(period=FIVE_MINUTES),
            t.db_cpu_percent,
            "Database CPU high: persistence will fall behind",
            periods=3,
        )
        self.alarm(
            "DatabaseConnections",
            instance.metric_database_connections(period=FIVE_MINUTES, statistic="Maximum"),
            t.db_connections,
            "Database connections high (RDS Proxy should keep this low)",
            periods=2,
        )

    def dashboard_widgets(
        self,
        streams: Streams,
        functions: dict[str, lambda_.Function],
        instance: rds.DatabaseInstance,
    ) -> None:
        """One row per stage of the data path: feed, streams, functions, database."""
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Feed: lag p99 (s)",
                left=[
                    cloudwatch.Metric(
                        namespace=FEED_NAMESPACE,
                        metric_name="E2eLagP99Seconds",
                        statistic="Maximum",
                        period=ONE_MINUTE,
                    )
                ],
            ),
            cloudwatch.GraphWidget(
                title="Streams: records in",
                left=[
                    s.metric_incoming_records(period=ONE_MINUTE, statistic="Sum", label=name)
                    for name, s in streams.streams.items()
                ],
            ),
            cloudwatch.GraphWidget(
                title="Iterator age (ms)",
                left=[
                    fn.metric("IteratorAge", period=ONE_MINUTE, statistic="Maximum", label=name)
                    for name, fn in functions.items()
                    if name in ("greeks", "persist")
                ],
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Function errors",
                left=[fn.metric_errors(period=ONE_MINUTE, label=n) for n, fn in functions.items()],
            ),
            cloudwatch.GraphWidget(
                title="Function duration p99 (ms)",
                left=[
                    fn.metric_duration(period=ONE_MINUTE, statistic="p99", label=n)
                    for n, fn in functions.items()
                ],
            ),
            cloudwatch.GraphWidget(
                title="Database",
                left=[instance.metric_cpu_utilization(period=ONE_MINUTE)],
                right=[instance.metric_database_connections(period=ONE_MINUTE)],
            ),
        )


def _metric(
    namespace: str, name: str, dimensions: dict[str, str], statistic: str, period: Duration
) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=period,
        label=f"{' '.join(dimensions.values())} {name} {statistic}",
    )


def function_metric(
    service: str, metric: str, statistic: str, period: Duration
) -> cloudwatch.Metric:
    """A metric a function emits through Powertools (dimension ``service``)."""
    return _metric(FUNCTIONS_NAMESPACE, metric, {"service": service}, statistic, period)


@dataclass(frozen=True)
class RestApiMetrics:
    """Where the REST API's and its web ACL's metrics are (names, not constructs)."""

    api_name: str
    stage: str
    web_acl: str
    region: str

    def metric(self, name: str, statistic: str, period: Duration) -> cloudwatch.Metric:
        """An API Gateway metric of the stage."""
        dimensions = {"ApiName": self.api_name, "Stage": self.stage}
        return _metric("AWS/ApiGateway", name, dimensions, statistic, period)

    def waf_metric(self, name: str, period: Duration) -> cloudwatch.Metric:
        """A WAF metric of the web ACL, all rules."""
        dimensions = {"WebACL": self.web_acl, "Region": self.region, "Rule": "ALL"}
        return _metric("AWS/WAFV2", name, dimensions, "Sum", period)


@dataclass(frozen=True)
class WebSocketMetrics:
    """Where the WebSocket API's metrics are."""

    api_id: str
    stage: str

    def metric(self, name: str, statistic: str, period: Duration) -> cloudwatch.Metric:
        """An API Gateway metric of the WebSocket stage."""
        dimensions = {"ApiId": self.api_id, "Stage": self.stage}
        return _metric("AWS/ApiGateway", name, dimensions, statistic, period)
