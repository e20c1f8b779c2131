"""The Lambda functions, their triggers and their grants.

Every function is declared once in ``pyproject.toml`` (handler, packages,
wheels, environment model); its Kinesis event source mappings come from
``lambdas/event_source_mappings.toml``, the definition the sandbox's emulator
runs. Each function's environment and grants are keyed by its name: it gets
only what it touches (its streams, tables, bucket prefix, secrets, the key for
the encryption contexts it uses), reads where it only reads. The API family
(``api*``, ``ws*``, ``fanout-*``) is wired to its API by :mod:`infra.rest_api`
and :mod:`infra.websocket_api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.api_state import ApiState
from infra.common import acknowledge, failure_queue, log_group
from infra.config import StageConfig
from infra.data import INSTRUMENTS_PREFIX, Buckets, Database, Streams, Tables
from infra.definitions import (
    PYPROJECT,
    DefinitionError,
    FunctionDefinition,
    MappingDefinition,
    load_functions,
    load_mappings,
    load_queue_mappings,
    migrations_fingerprint,
)
from infra.grants import (
    VAULT_PREFIX,
    grant_objects,
    grant_put_records,
    grant_vault_read,
    grant_vault_write,
    objects_finding,
    vault_findings,
)
from infra.identity import Users
from infra.lambda_assets import ARCHITECTURE, PYTHON_VERSION, RUNTIME, AssetSource
from infra.limits import API_GATEWAY_INTEGRATION_TIMEOUT_S

METRICS_NAMESPACE = "TickerService"
PROXY_PORT = 5432
"""RDS Proxy for PostgreSQL always listens on 5432."""


@dataclass(frozen=True)
class Sizing:
    """Memory and timeout of one function."""

    memory_mb: int
    timeout_s: int


SIZING = {
    "greeks": Sizing(1024, 60),
    "persist": Sizing(1024, 120),
    "persist-maintenance": Sizing(512, 300),
    "instruments": Sizing(1024, 300),
    "migrate": Sizing(512, 600),
    # API Gateway waits this long for an integration (REST and WebSocket): so do these.
    "api": Sizing(1024, API_GATEWAY_INTEGRATION_TIMEOUT_S),
    "api-order-updates": Sizing(512, 60),
    # One full vCPU: implied volatility for a whole chain.
    "api-market": Sizing(1769, API_GATEWAY_INTEGRATION_TIMEOUT_S),
    "api-login-check": Sizing(512, 120),
    "ws-authorizer": Sizing(512, 10),
    "ws": Sizing(512, API_GATEWAY_INTEGRATION_TIMEOUT_S),
    "fanout-ticks": Sizing(1024, 60),
    "fanout-greeks": Sizing(1024, 60),
}
"""Every function the stack deploys (each must be declared in pyproject's function table)."""

OUTSIDE_VPC = frozenset({"ws-authorizer", "ws", "fanout-ticks", "fanout-greeks"})
"""Functions that touch only public AWS endpoints (DynamoDB, S3, Cognito's keys, the
WebSocket API's @connections): in the VPC the fan-out's posts would all pay for the NAT.
Everything that calls Kite (orders come only from the registered Elastic IPs) or the
database, and the login check (the vault through its endpoints), runs in the private
subnets."""


@dataclass(frozen=True)
class Schedule:
    """When a scheduled function runs (UTC cron fields) and why then."""

    minute: str
    hour: str
    week_day: str | None
    """None: every day of the month (``cron(M H * * ? *)``)."""
    why: str

    def cron(self) -> events.Schedule:
        """The EventBridge schedule."""
        if self.week_day is None:
            return events.Schedule.cron(minute=self.minute, hour=self.hour)
        return events.Schedule.cron(minute=self.minute, hour=self.hour, week_day=self.week_day)


SCHEDULES: dict[str, tuple[Schedule, ...]] = {
    # 02:00 IST, every day: partitions for the days ahead exist before anything is written.
    "persist-maintenance": (Schedule("30", "20", "*", "partitions ahead and retention, nightly"),),
    # 08:40 IST, Monday to Friday: after the morning login, before the 09:00 pre-open.
    "instruments": (Schedule("10", "3", "MON-FRI", "the day's instruments before the open"),),
    "api-login-check": (
        # 06:05 IST, every day: just after Kite expires the day's tokens (~06:00 IST).
        Schedule("35", "0", None, "accounts needing a Kite login, at token expiry"),
        # 08:15 IST, Monday to Friday: who is still not logged in, before the pre-open.
        Schedule("45", "2", "MON-FRI", "accounts still needing a Kite login, before the open"),
    ),
}


class Functions(Construct):
    """greeks, persist, persist maintenance, instruments and migrate, wired to the data path."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        streams: Streams,
        tables: Tables,
        buckets: Buckets,
        database: Database,
        assets: AssetSource,
        kite_environment: dict[str, str],
        api: ApiState,
        users: Users,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._key = key
        definitions = require_functions(load_functions(), SIZING)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="ticker-service Lambda functions"
        )
        database.proxy.connections.allow_from(
            self.security_group, ec2.Port.tcp(PROXY_PORT), "Lambda functions to RDS Proxy"
        )
        self.async_failures = self._queue("AsyncFailures")
        """Scheduled invocations that failed every retry."""
        common_env = {"POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE, "LOG_LEVEL": "INFO"}
        proxy_secret = database.secret
        if proxy_secret is None:  # from_generated_secret always makes one
            raise ValueError("the database has no credentials secret for the functions")
        db_env = {
            "DB_HOST": database.proxy.endpoint,
            "DB_SECRET_ARN": proxy_secret.secret_arn,
            "DB_TLS": "verify-full",
        }
        snapshot_env = {
            "INSTRUMENTS_BUCKET": buckets.instruments.bucket_name,
            "INSTRUMENTS_PREFIX": INSTRUMENTS_PREFIX,
        }
        vault_env = {
            "KITE_CREDENTIALS_KMS_KEY_ARN": key.key_arn,
            "KITE_CREDENTIALS_PREFIX": VAULT_PREFIX,
        }
        # The API family calls Kite's REST API only (the feed alone holds WebSockets).
        kite_rest_env = {k: v for k, v in kite_environment.items() if k != "KITE_WS_URL"}
        cors_env = (
            {"API_CORS_ORIGINS": ",".join(config.cors_allowed_origins)}
            if config.cors_allowed_origins
            else {}
        )
        ws_state_env = {
            "SUBSCRIPTIONS_TABLE_NAME": tables.subscriptions.table_name,
            "WS_CONNECTIONS_TABLE_NAME": api.ws_connections.table_name,
            "WS_SUBSCRIBERS_TABLE_NAME": api.ws_subscribers.table_name,
        }
        environments: dict[str, dict[str, str]] = {
            "greeks": {**snapshot_env, "GREEKS_STREAM_NAME": streams.greeks.stream_name},
            "persist": db_env,
            "persist-maintenance": db_env,
            "instruments": {**db_env, **snapshot_env, **kite_environment, **vault_env},
            "migrate": db_env,
            "api": {
                **db_env,
                **snapshot_env,
                **kite_rest_env,
                **vault_env,
                **cors_env,
                "SUBSCRIPTIONS_TABLE_NAME": tables.subscriptions.table_name,
                "GRANTS_TABLE_NAME": api.grants.table_name,
                "IDEMPOTENCY_TABLE_NAME": api.idempotency.table_name,
                "ORDER_LIMITER_TABLE_NAME": api.order_limiter.table_name,
                "ACCOUNTS_TABLE_NAME": api.accounts.table_name,
                "EVENT_BUS_NAME": api.bus.event_bus_name,
                "LOGIN_STATE_SECRET_ARN": api.login_state_key.secret_arn,
            },
            "api-order-updates": {**db_env, "EVENT_BUS_NAME": api.bus.event_bus_name},
            # Market data is not account-scoped: no grants; Kite only for its history.
            "api-market": {
                **db_env,
                **snapshot_env,
                **kite_rest_env,
                **vault_env,
                **cors_env,
                "ACCOUNTS_TABLE_NAME": api.accounts.table_name,
            },
            # Reads sessions from the vault (their expiry), asks Kite nothing.
            "api-login-check": {
                **vault_env,
                "ACCOUNTS_TABLE_NAME": api.accounts.table_name,
                "EVENT_BUS_NAME": api.bus.event_bus_name,
            },
            "ws-authorizer": {
                "COGNITO_ISSUER": users.issuer,
                "COGNITO_CLIENT_IDS": users.client.user_pool_client_id,
            },
            "ws": {**ws_state_env, **snapshot_env},
            # WS_MANAGEMENT_URL joins when the WebSocket API exists (WebSocketApi.allow_posts).
            "fanout-ticks": {**ws_state_env, "FANOUT_CHANNEL": "ticks"},
            "fanout-greeks": {**ws_state_env, "FANOUT_CHANNEL": "greeks"},
        }
        self.functions: dict[str, lambda_.Function] = {}
        for name, definition in definitions.items():
            self.functions[name] = self._function(
                definition,
                {**common_env, **environments[name]},
                vpc=None if name in OUTSIDE_VPC else vpc,
                subnets=subnets,
                assets=assets,
            )
        fns = self.functions
        # Grants: each function, what it touches.
        grant_put_records(fns["greeks"], streams.greeks, key)
        grant_objects(fns["greeks"], buckets.instruments, INSTRUMENTS_PREFIX, key)
        grant_objects(fns["instruments"], buckets.instruments, INSTRUMENTS_PREFIX, key, write=True)
        for name in ("greeks", "instruments"):
            acknowledge(
                fns[name],
                objects_finding(buckets.instruments, INSTRUMENTS_PREFIX),
                "The snapshots are objects under the instruments/ prefix, one per day.",
            )
        for name in ("persist", "persist-maintenance", "instruments", "migrate"):
            proxy_secret.grant_read(fns[name])
        grant_vault_read(fns["instruments"], key)
        for rule, reason in vault_findings(Stack.of(self)).items():
            acknowledge(fns["instruments"], rule, reason)
        self._grant_api_family(fns, tables=tables, buckets=buckets, api=api, proxy=proxy_secret)
        # The schema migrates on every deploy that brings a migration, before any consumer runs.
        self.migration = self._migration(fns["migrate"])
        # Triggers.
        self.on_failure: dict[str, sqs.Queue] = {}
        self.mappings = load_mappings()
        for mapping in self.mappings.values():
            self._mapping(mapping, fns[mapping.function], streams)
        for name, schedules in SCHEDULES.items():
            for n, schedule in enumerate(schedules):
                schedule_rule = events.Rule(
                    self,
                    f"{name.title().replace('-', '')}Schedule{n + 1 if n else ''}",
                    description=schedule.why,
                    schedule=schedule.cron(),
                )
                schedule_rule.add_target(
                    targets.LambdaFunction(
                        fns[name],
                        retry_attempts=2,
                        max_event_age=Duration.hours(1),
                        dead_letter_queue=self.async_failures,
                    )
                )
        # The feed's forwarded order messages, as the shared definition reads them.
        queue_mapping = load_queue_mappings()["order-updates"]
        self.order_updates_mapping = sources.SqsEventSource(
            api.order_updates,
            batch_size=queue_mapping.batch_size,
            max_batching_window=Duration.seconds(queue_mapping.maximum_batching_window_seconds),
            report_batch_item_failures=queue_mapping.report_batch_item_failures,
            max_concurrency=queue_mapping.maximum_concurrency,
        )
        fns[queue_mapping.function].add_event_source(self.order_updates_mapping)
        acknowledge(
            fns["api-order-updates"],
            "Serverless-LambdaEventSourceMappingDestination",
            "An SQS mapping takes no on-failure destination: the queue's redrive policy moves a "
            "message to its dead-letter queue after its last delivery (alarmed).",
        )

    def _grant_api_family(
        self,
        fns: dict[str, lambda_.Function],
        *,
        tables: Tables,
        buckets: Buckets,
        api: ApiState,
        proxy: secretsmanager.ISecret,
    ) -> None:
        """What each API and WebSocket function touches: writes where it writes, else reads."""
        key = self._key
        stack = Stack.of(self)
        # api: trading, grants, accounts and their login, subscriptions.
        for table in (
            api.grants,
            api.idempotency,
            api.order_limiter,
            api.accounts,
            tables.subscriptions,
        ):
            table.grant_read_write_data(fns["api"])
        api.login_state_key.grant_read(fns["api"])
        role = fns["api"].role
        if role is None:  # pragma: no cover - every function here has its own role
            raise ValueError("the api function has no role")
        api.restrict_login_state_key(role)
        grant_vault_read(fns["api"], key)
        grant_vault_write(fns["api"], key)
        # api-market: reads only (the market schema, sessions for Kite's history).
        api.accounts.grant_read_data(fns["api-market"])
        grant_vault_read(fns["api-market"], key)
        # api-login-check: reads sessions, marks accounts that need a login.
        api.accounts.grant_read_write_data(fns["api-login-check"])
        grant_vault_read(fns["api-login-check"], key)
        for name in ("api", "api-order-updates", "api-login-check"):
            api.bus.grant_put_events_to(fns[name])
        for name in ("api", "api-order-updates", "api-market"):
            proxy.grant_read(fns[name])
        for name in ("api", "api-market", "ws"):
            grant_objects(fns[name], buckets.instruments, INSTRUMENTS_PREFIX, key)
            acknowledge(
                fns[name],
                objects_finding(buckets.instruments, INSTRUMENTS_PREFIX),
                "The snapshots are objects under the instruments/ prefix, one per day.",
            )
        # ws and the fan-outs: connections, subscribers and the feed's desired set (one
        # transaction across them: a gone connection releases its instruments).
        for name in ("ws", "fanout-ticks", "fanout-greeks"):
            for table in (api.ws_connections, api.ws_subscribers, tables.subscriptions):
                table.grant_read_write_data(fns[name])
        for name in ("api", "api-market", "api-login-check"):
            for rule, reason in vault_findings(stack).items():
                acknowledge(fns[name], rule, reason)

    def _queue(self, construct_id: str) -> sqs.Queue:
        return failure_queue(self, construct_id, key=self._key)

    def _function(
        self,
        definition: FunctionDefinition,
        environment: dict[str, str],
        *,
        vpc: ec2.IVpc | None,
        subnets: ec2.SubnetSelection,
        assets: AssetSource,
    ) -> lambda_.Function:
        name = definition.name
        sizing = SIZING[name]
        construct_id = name.title().replace("-", "")
        function = lambda_.Function(
            self,
            construct_id,
            description=f"ticker-service {name} ({definition.handler})",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=definition.handler,
            code=assets.code(definition),
            memory_size=sizing.memory_mb,
            timeout=Duration.seconds(sizing.timeout_s),
            environment=environment,
            environment_encryption=self._key,
            vpc=vpc,
            vpc_subnets=subnets if vpc else None,
            security_groups=[self.security_group] if vpc else None,
            tracing=lambda_.Tracing.ACTIVE,
            dead_letter_queue=self.async_failures if name in SCHEDULES else None,
            log_group=log_group(self, f"{construct_id}Logs", config=self._config, key=self._key),
            logging_format=lambda_.LoggingFormat.JSON,
        )
        if vpc is not None:
            acknowledge(
                function,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaVPCAccessExecutionRole]",
                "AWS's managed policy for a function's ENIs in the VPC (ec2 network interface "
                "actions that cannot be scoped to resources).",
            )
        acknowledge(
            function,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "AWS's managed policy for writing the function's own logs.",
        )
        acknowledge(
            function,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords take no resource (active tracing); "
            "ENI management likewise.",
        )
        for rule in ("AwsSolutions-L1", "Serverless-LambdaLatestVersion"):
            acknowledge(
                function,
                rule,
                f"Pinned to Python {PYTHON_VERSION}: the version its wheels are resolved for "
                "(infra/lambda_assets.py) and the Dockerfiles use; they move together.",
            )
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(
                function,
                f"AwsSolutions-IAM5[Action::{action}]",
                "CDK's grants to write KMS-encrypted queues and tables (SQS and DynamoDB ask "
                "KMS for data keys on the caller's behalf).",
            )
        if name not in SCHEDULES:
            acknowledge(
                function,
                "Serverless-LambdaDLQ",
                "Invoked synchronously (API Gateway, an event source mapping or the custom "
                "resource provider): the caller sees the failure; failed stream batches go to "
                "the mapping's on-failure queue, failed order messages to the queue's DLQ.",
            )
        return function

    def _mapping(
        self, mapping: MappingDefinition, function: lambda_.Function, streams: Streams
    ) -> None:
        destination = mapping.on_failure
        if destination is not None and destination not in self.on_failure:
            self.on_failure[destination] = self._queue(f"{destination.title()}OnFailure")
        options: dict[str, Any] = {
            "batch_size": mapping.batch_size,
            "max_batching_window": Duration.seconds(mapping.maximum_batching_window_seconds),
            "retry_attempts": mapping.maximum_retry_attempts,
            "max_record_age": (
                None
                if mapping.maximum_record_age_seconds == -1
                else Duration.seconds(mapping.maximum_record_age_seconds)
            ),
            "bisect_batch_on_error": mapping.bisect_batch_on_function_error,
            "report_batch_item_failures": mapping.report_batch_item_failures,
            "parallelization_factor": mapping.parallelization_factor,
            "starting_position": lambda_.StartingPosition[mapping.starting_position],
            "on_failure": (
                sources.SqsDlq(self.on_failure[destination]) if destination is not None else None
            ),
        }
        source: lambda_.IEventSource
        if mapping.consumer == "enhanced-fan-out":
            if mapping.stream != "ticks":
                raise ValueError(f"{mapping.name}: only the ticks stream has a consumer")
            source = sources.KinesisConsumerEventSource(streams.greeks_consumer, **options)
        else:
            source = sources.KinesisEventSource(streams.streams[mapping.stream], **options)
        before = set(_mappings_of(function))
        function.add_event_source(source)
        # Nothing reads a stream before the schema exists.
        for created in set(_mappings_of(function)) - before:
            created.node.add_dependency(self.migration)
            if mapping.on_failure is None:
                acknowledge(
                    created,
                    "Serverless-LambdaEventSourceMappingDestination",
                    f"{mapping.name} carries live data only: a batch discarded after its "
                    "retries is worthless later, so no on-failure queue "
                    "(lambdas/event_source_mappings.toml); the function's errors are alarmed.",
                )

    def _migration(self, function: lambda_.Function) -> CustomResource:
        provider = cr.Provider(
            self,
            "MigrationProvider",
            on_event_handler=function,
            log_group=log_group(self, "MigrationProviderLogs", config=self._config, key=self._key),
        )
        acknowledge(
            provider,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "CDK's custom resource provider framework function writes its own logs.",
        )
        stack = Stack.of(self)
        logical_id = stack.resolve(stack.get_logical_id(function.node.default_child))  # type: ignore[arg-type]
        acknowledge(
            provider,
            f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>:*]",
            "The provider framework may invoke any version of the migrate function.",
        )
        acknowledge(
            provider,
            "AwsSolutions-L1",
            "The provider framework's runtime is chosen by aws-cdk-lib, not by this stack.",
        )
        acknowledge(
            provider,
            "Serverless-LambdaDLQ",
            "CloudFormation invokes the provider synchronously and reports its failure.",
        )
        acknowledge(
            provider,
            "Serverless-LambdaTracing",
            "CDK's provider framework function; the migrate function it calls is traced.",
        )
        acknowledge(
            provider,
            "Serverless-LambdaDefaultMemorySize",
            "CDK's provider framework function; sized by aws-cdk-lib.",
        )
        return CustomResource(
            self,
            "Schema",
            service_token=provider.service_token,
            resource_type="Custom::TickerSchema",
            properties={"Migrations": migrations_fingerprint()},
        )


def require_functions(
    definitions: dict[str, FunctionDefinition], deployed: Mapping[str, object]
) -> dict[str, FunctionDefinition]:
    """The declared functions, refused unless they are exactly the ones the stack deploys.

    A function the stack deploys but ``pyproject.toml`` does not declare (no handler, no
    asset) and one declared that the stack has no sizing, environment or trigger for both
    stop the synth, naming them.
    """
    missing = sorted(set(deployed) - set(definitions))
    unknown = sorted(set(definitions) - set(deployed))
    problems = []
    if missing:
        problems.append(f"the stack deploys {missing} but the table does not declare them")
    if unknown:
        problems.append(f"the table declares {unknown} but the stack does not deploy them")
    if problems:
        raise DefinitionError(
            f"{PYPROJECT.name} [tool.ticker-service.functions]: " + "; ".join(problems)
        )
    return definitions


def _mappings_of(function: lambda_.Function) -> list[lambda_.EventSourceMapping]:
    return [c for c in function.node.children if isinstance(c, lambda_.EventSourceMapping)]
