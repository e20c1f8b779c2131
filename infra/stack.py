"""One stack per stage: network, state, feed, functions, archive, observability.

One stack keeps every reference inside one template (no cross-stack exports
to untangle on a change). The API issues add their construct (REST API,
Cognito, WAF, EventBridge bus, grants/idempotency/limiter tables) here, given
the same key, network, tables and alarm topic.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, Stack, Tags
from constructs import Construct

from infra.archive import Archive
from infra.config import StageConfig
from infra.data import Buckets, Database, ServiceKey, Streams, Tables
from infra.feed import Feed
from infra.functions import Functions
from infra.lambda_assets import AssetSource
from infra.network import Network
from infra.observability import Observability


class TickerServiceStack(Stack):
    """Everything one stage of ticker-service runs on."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, assets: AssetSource
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=config.account, region=config.region),
            description=f"ticker-service ({config.name}): Kite market data and trading",
        )
        # DBProxyTargetGroup takes no Tags property (CloudFormation rejects it).
        untaggable = ["AWS::RDS::DBProxyTargetGroup"]
        Tags.of(self).add("service", "ticker-service", exclude_resource_types=untaggable)
        Tags.of(self).add("stage", config.name, exclude_resource_types=untaggable)
        self.config = config
        key = ServiceKey(self, "ServiceKey", config=config).key
        self.key = key
        self.network = Network(self, "Network", config=config, key=key)
        vpc = self.network.vpc
        self.streams = Streams(self, "Streams", config=config, key=key)
        self.tables = Tables(self, "Tables", config=config, key=key)
        self.buckets = Buckets(self, "Buckets", config=config, key=key)
        self.database = Database(
            self,
            "Database",
            config=config,
            key=key,
            vpc=vpc,
            subnets=self.network.database_subnets,
        )
        self.database.instance.connections.allow_default_port_from(
            self.database.proxy, "RDS Proxy to the database"
        )
        self.feed = Feed(
            self,
            "Feed",
            config=config,
            key=key,
            vpc=vpc,
            subnets=self.network.private_subnets,
            streams=self.streams,
            tables=self.tables,
            buckets=self.buckets,
        )
        self.functions = Functions(
            self,
            "Functions",
            config=config,
            key=key,
            vpc=vpc,
            subnets=self.network.private_subnets,
            streams=self.streams,
            buckets=self.buckets,
            database=self.database,
            assets=assets,
            kite_environment=self.feed.kite_environment,
        )
        if self.feed.simulator is not None:
            self.feed.simulator.allow_from(self.functions.security_group, "Lambda functions")
        self.archive = Archive(
            self,
            "Archive",
            config=config,
            key=key,
            streams=self.streams,
            bucket=self.buckets.archive,
        )
        self.observability = Observability(self, "Observability", config=config, key=key)
        fns = self.functions.functions
        consumers = {m.function for m in self.functions.mappings.values()}
        self.observability.watch_functions(fns, consumers)
        self.observability.watch_queues(
            {f"{name}-on-failure": q for name, q in self.functions.on_failure.items()}
            | {"scheduled-failures": self.functions.async_failures}
        )
        self.observability.watch_feed(self.feed.service, config.feed.desired_count)
        self.observability.watch_streams(self.streams)
        self.observability.watch_database(self.database.instance)
        self.observability.dashboard_widgets(self.streams, fns, self.database.instance)
        # What operators look up after a deploy (the egress IPs and stream ARNs are output
        # where they are made).
        for name, value, description in (
            ("AlarmTopicArn", self.observability.topic.topic_arn, "subscribe to be paged"),
            ("InstrumentsBucket", self.buckets.instruments.bucket_name, "daily snapshots"),
            ("ArchiveBucket", self.buckets.archive.bucket_name, "Parquet by IST day"),
            ("ArchiveGlueDatabase", self.archive.database_name, "query with Athena"),
            ("SubscriptionsTable", self.tables.subscriptions.table_name, "desired set"),
            ("DatabaseProxyEndpoint", self.database.proxy.endpoint, "TLS, port 5432"),
            ("ServiceKeyArn", key.key_arn, "the vault's KMS key"),
        ):
            CfnOutput(self, name, value=value, description=description)
