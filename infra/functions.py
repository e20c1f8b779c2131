"""The Lambda functions of the data path, their triggers and their grants.

Every function is declared once in ``pyproject.toml`` (handler, packages,
wheels); its event source mappings come from
``lambdas/event_source_mappings.toml``, the definition the sandbox's emulator
runs. Each function gets only what it touches: its streams, its bucket
prefix, its secrets, the key for the encryption contexts it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.common import acknowledge, log_group
from infra.config import StageConfig
from infra.data import INSTRUMENTS_PREFIX, Buckets, Database, Streams
from infra.definitions import (
    FunctionDefinition,
    MappingDefinition,
    load_functions,
    load_mappings,
    migrations_fingerprint,
)
from infra.grants import (
    VAULT_PREFIX,
    grant_objects,
    grant_put_records,
    grant_vault_read,
    objects_finding,
    vault_findings,
)
from infra.lambda_assets import ARCHITECTURE, PYTHON_VERSION, RUNTIME, AssetSource

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
}


@dataclass(frozen=True)
class Schedule:
    """When a scheduled function runs (UTC cron fields) and why then."""

    minute: str
    hour: str
    week_day: str
    why: str


SCHEDULES = {
    # 02:00 IST, every day: partitions for the days ahead exist before anything is written.
    "persist-maintenance": Schedule("30", "20", "*", "partitions ahead and retention, nightly"),
    # 08:40 IST, Monday to Friday: after the morning login, before the 09:00 pre-open.
    "instruments": Schedule("10", "3", "MON-FRI", "the day's instruments before the open"),
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
        buckets: Buckets,
        database: Database,
        assets: AssetSource,
        kite_environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._key = key
        definitions = load_functions()
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
        environments = {
            "greeks": {**snapshot_env, "GREEKS_STREAM_NAME": streams.greeks.stream_name},
            "persist": db_env,
            "persist-maintenance": db_env,
            "instruments": {
                **db_env,
                **snapshot_env,
                **kite_environment,
                "KITE_CREDENTIALS_KMS_KEY_ARN": key.key_arn,
                "KITE_CREDENTIALS_PREFIX": VAULT_PREFIX,
            },
            "migrate": db_env,
        }
        self.functions: dict[str, lambda_.Function] = {}
        for name, definition in definitions.items():
            self.functions[name] = self._function(
                definition,
                {**common_env, **environments[name]},
                vpc=vpc,
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
        # The schema migrates on every deploy that brings a migration, before any consumer runs.
        self.migration = self._migration(fns["migrate"])
        # Triggers.
        self.on_failure: dict[str, sqs.Queue] = {}
        self.mappings = load_mappings()
        for mapping in self.mappings.values():
            self._mapping(mapping, fns[mapping.function], streams)
        for name, schedule in SCHEDULES.items():
            schedule_rule = events.Rule(
                self,
                f"{name.title().replace('-', '')}Schedule",
                description=schedule.why,
                schedule=events.Schedule.cron(
                    minute=schedule.minute, hour=schedule.hour, week_day=schedule.week_day
                ),
            )
            schedule_rule.add_target(
                targets.LambdaFunction(
                    fns[name],
                    retry_attempts=2,
                    max_event_age=Duration.hours(1),
                    dead_letter_queue=self.async_failures,
                )
            )

    def _queue(self, construct_id: str) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self._key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        for rule in ("AwsSolutions-SQS3", "Serverless-SQSRedrivePolicy"):
            acknowledge(
                queue,
                rule,
                "This queue is itself the failure destination (on-failure or dead-letter queue).",
            )
        return queue

    def _function(
        self,
        definition: FunctionDefinition,
        environment: dict[str, str],
        *,
        vpc: ec2.IVpc,
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
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            tracing=lambda_.Tracing.ACTIVE,
            dead_letter_queue=self.async_failures if name in SCHEDULES else None,
            log_group=log_group(self, f"{construct_id}Logs", config=self._config, key=self._key),
            logging_format=lambda_.LoggingFormat.JSON,
        )
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
                "CDK's grant to send to the KMS-encrypted failure queues (SQS asks KMS for "
                "data keys on the sender's behalf).",
            )
        if name not in SCHEDULES:
            acknowledge(
                function,
                "Serverless-LambdaDLQ",
                "Invoked synchronously (event source mapping or the custom resource provider); "
                "failed batches go to the mapping's on-failure queue instead.",
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


def _mappings_of(function: lambda_.Function) -> list[lambda_.EventSourceMapping]:
    return [c for c in function.node.children if isinstance(c, lambda_.EventSourceMapping)]
