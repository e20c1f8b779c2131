"""Alarms to an SNS topic, and a dashboard of the data path.

Each alarm says what it means for traders in its description. Feed metrics
are the container's CloudWatch EMF lines (namespace ``TickerService/Feed``):
per-account counters carry an ``account`` dimension and are summed with a
Metrics Insights query, stream-wide ones have no dimension.
"""

from __future__ import annotations

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
FIVE_MINUTES = Duration.minutes(5)
ONE_MINUTE = Duration.minutes(1)


@dataclass(frozen=True)
class Thresholds:
    """Where each alarm fires (the defaults are sized for one trading day's load)."""

    iterator_age_ms: int = 60_000
    feed_lag_p99_s: float = 5.0
    reconnects_per_minute: int = 5
    db_cpu_percent: int = 80
    db_connections: int = 200
    lambda_errors_per_5_min: int = 1


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
        self, functions: dict[str, lambda_.Function], stream_consumers: set[str]
    ) -> None:
        """Errors and throttles of every function; iterator age of the stream consumers."""
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
                self.alarm(
                    f"{cid}IteratorAge",
                    fn.metric("IteratorAge", period=ONE_MINUTE, statistic="Maximum"),
                    t.iterator_age_ms,
                    f"{name} is behind its stream by over {t.iterator_age_ms // 1000} s: "
                    "live data is late and history is filling in late",
                    periods=3,
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
