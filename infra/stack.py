"""One stack per stage: network, state, feed, functions, APIs, archive, observability.

One stack keeps every reference inside one template (no cross-stack exports
to untangle on a change). The APIs (the REST API behind its WAF and Cognito
authorizer, the WebSocket API) share the key, network, tables and alarm topic.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, Stack, Tags
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.api_state import ApiState
from infra.archive import Archive
from infra.config import StageConfig
from infra.data import Buckets, Database, ServiceKey, Streams, Tables
from infra.feed import Feed
from infra.functions import Functions
from infra.identity import Users
from infra.lambda_assets import AssetSource
from infra.network import Network
from infra.observability import (
    CODE_METRIC_ALARMS,
    FANOUTS,
    Observability,
    RestApiMetrics,
    WebSocketMetrics,
)
from infra.rest_api import STAGE as REST_STAGE
from infra.rest_api import RestApi
from infra.websocket_api import STAGE as WEBSOCKET_STAGE
from infra.websocket_api import WebSocketApi


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
        self.api_state = ApiState(self, "ApiState", config=config, key=key)
        self.users = Users(self, "Users", config=config)
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
            order_updates=self.api_state.order_updates,
        )
        self.functions = Functions(
            self,
            "Functions",
            config=config,
            key=key,
            vpc=vpc,
            subnets=self.network.private_subnets,
            streams=self.streams,
            tables=self.tables,
            buckets=self.buckets,
            database=self.database,
            assets=assets,
            kite_environment=self.feed.kite_environment,
            api=self.api_state,
            users=self.users,
        )
        fns = self.functions.functions
        self.rest_api = RestApi(
            self,
            "RestApi",
            config=config,
            key=key,
            functions=fns,
            user_pool_arn=self.users.pool.user_pool_arn,
        )
        self.websocket_api = WebSocketApi(
            self,
            "WebSocketApi",
            config=config,
            key=key,
            routes_function=fns["ws"],
            authorizer_function=fns["ws-authorizer"],
            logging_account=self.rest_api.logging_account,
        )
        self.websocket_api.allow_posts({name: fns[name] for name in FANOUTS})
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
        consumers = {m.function for m in self.functions.mappings.values()}
        self.observability.watch_functions(fns, consumers, live_consumers=frozenset(FANOUTS))
        self.observability.watch_queues(
            {f"{name}-on-failure": q for name, q in self.functions.on_failure.items()}
            | {"scheduled-failures": self.functions.async_failures}
            | {"order-updates-dead-letters": self.api_state.order_updates_dead_letters}
        )
        self.observability.watch_code_metrics(CODE_METRIC_ALARMS)
        rest_metrics = RestApiMetrics(
            api_name=self.rest_api.api.rest_api_name,
            stage=REST_STAGE,
            web_acl=self.rest_api.web_acl.name,
            region=self.region,
        )
        self.observability.watch_rest_api(rest_metrics)
        self.observability.watch_feed(self.feed.service, config.feed.desired_count)
        self.observability.watch_streams(self.streams)
        self.observability.watch_database(self.database.instance)
        self.observability.dashboard_widgets(self.streams, fns, self.database.instance)
        self.observability.api_dashboard(
            rest_metrics,
            WebSocketMetrics(api_id=self.websocket_api.api.api_id, stage=WEBSOCKET_STAGE),
            {name: fns[name] for name in FANOUTS},
        )
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
        # What API clients, operators and other services look up (outputs and SSM).
        api = self.api_state
        for name, parameter, value, description in (
            ("RestApiUrl", "rest-url", self.rest_api.url, "the trading API's base URL"),
            (
                "KiteRedirectUrl",
                "kite-redirect-url",
                self.rest_api.login_callback_url,
                "register as each Kite app's redirect URL",
            ),
            (
                "KitePostbackUrl",
                "kite-postback-url",
                self.rest_api.postback_url,
                "register as each Kite app's postback URL",
            ),
            ("WebSocketUrl", "websocket-url", self.websocket_api.url, "live ticks and Greeks"),
            (
                "UserPoolId",
                "user-pool-id",
                self.users.pool.user_pool_id,
                "users and the admin group",
            ),
            (
                "UserPoolClientId",
                "user-pool-client-id",
                self.users.client.user_pool_client_id,
                "the trading front end's app client (no secret)",
            ),
            ("CognitoIssuer", "cognito-issuer", self.users.issuer, "the tokens' iss"),
            ("EventBusArn", "event-bus-arn", api.bus.event_bus_arn, "order updates, logins"),
            ("EventBusName", "event-bus-name", api.bus.event_bus_name, "order updates, logins"),
        ):
            CfnOutput(self, name, value=value, description=description)
            ssm.StringParameter(
                self,
                f"{name}Parameter",
                parameter_name=f"/ticker-service/{config.name}/api/{parameter}",
                string_value=value,
                description=description,
            )
