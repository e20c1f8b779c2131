"""State: the service key, both streams (with their published contract), tables, buckets, DB."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.common import acknowledge, removal_policy
from infra.config import StageConfig
from infra.definitions import record_schemas

INSTRUMENTS_PREFIX = "instruments/"
DATABASE_NAME = "ticker"
DATABASE_ADMIN = "ticker_admin"
# The schema each stream carries (files in ticker_core/schemas).
STREAM_SCHEMAS = {"ticks": "tick.v1", "greeks": "greeks.v1"}
STATUS_TTL_ATTRIBUTE = "expires_at"
"""The feed's status records expire by it (ticker_adapters.feed_status.TTL_ATTRIBUTE)."""
STATUS_PARTITION = "STATUS"
"""The partition of the subscriptions table the feed writes its status records to."""


class ServiceKey(Construct):
    """The customer-managed key: streams, queues, tables, buckets, logs, secrets, the vault."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/ticker-service-{config.name}",
            description="ticker-service: streams, tables, logs, secrets, the Kite credential vault",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
            pending_window=Duration.days(7 if not config.retain_data else 30),
        )
        # CloudWatch Logs encrypts log groups with it (scoped to this account's log groups).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                        )
                    }
                },
            )
        )


class Streams(Construct):
    """``ticks`` and ``greeks``: KMS-encrypted, mode and retention per stage, contract published.

    Other services find each stream's ARN and record schema in SSM
    (``/ticker-service/<stage>/streams/<name>/arn`` and ``.../schema``) and in
    the stack's outputs; the schemas are the committed JSON Schema files.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        provisioned = config.streams.mode == "PROVISIONED"
        schemas = record_schemas()
        self.streams: dict[str, kinesis.Stream] = {}
        for name in ("ticks", "greeks"):
            stream = kinesis.Stream(
                self,
                name.capitalize(),
                stream_name=f"ticker-{config.name}-{name}",
                encryption=kinesis.StreamEncryption.KMS,
                encryption_key=key,
                stream_mode=(
                    kinesis.StreamMode.PROVISIONED if provisioned else kinesis.StreamMode.ON_DEMAND
                ),
                shard_count=config.streams.shards if provisioned else None,
                retention_period=Duration.hours(config.streams.retention_hours),
                removal_policy=removal_policy(config),
            )
            self.streams[name] = stream
            acknowledge(
                stream,
                "AwsSolutions-KDS3",
                "Encrypted with the service's customer-managed key on purpose (rotation, a key "
                "policy this stack controls, grants for subscribing services), not aws/kinesis.",
            )
            prefix = f"/ticker-service/{config.name}/streams/{name}"
            ssm.StringParameter(
                self,
                f"{name.capitalize()}Arn",
                parameter_name=f"{prefix}/arn",
                string_value=stream.stream_arn,
                description=f"ARN of the {name} stream (KPL-aggregated JSON records)",
            )
            schema = schemas[STREAM_SCHEMAS[name]]
            ssm.StringParameter(
                self,
                f"{name.capitalize()}Schema",
                parameter_name=f"{prefix}/schema",
                string_value=schema.read_text(),
                tier=ssm.ParameterTier.ADVANCED,  # over the standard tier's 4 KB
                description=f"JSON Schema ({schema.name}) of each {name} user record",
            )
            CfnOutput(scope, f"{name.capitalize()}StreamArn", value=stream.stream_arn)
        self.ticks = self.streams["ticks"]
        self.greeks = self.streams["greeks"]
        # The Greeks function reads ticks on its own enhanced fan-out consumer.
        self.greeks_consumer = kinesis.StreamConsumer(
            self, "GreeksConsumer", stream=self.ticks, stream_consumer_name="greeks"
        )


class Tables(Construct):
    """DynamoDB tables of the data path (the API's tables are in :mod:`infra.api_state`)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self.subscriptions = dynamo_table(
            self, "Subscriptions", config=config, key=key, sort_key="sk", ttl=STATUS_TTL_ATTRIBUTE
        )
        """The desired subscriptions (layout: ticker_adapters.subscription_store), and the
        feed's status records beside them (ticker_adapters.feed_status: partition ``STATUS``,
        expiring by TTL)."""
        self.feed_status = self._table("FeedStatus", config, key)
        """What the feed actually streams, per account (written by the feed)."""

    def _table(self, name: str, config: StageConfig, key: kms.IKey) -> dynamodb.Table:
        return dynamo_table(self, name, config=config, key=key, sort_key="sk")


def dynamo_table(
    scope: Construct,
    construct_id: str,
    *,
    config: StageConfig,
    key: kms.IKey,
    partition_key: str = "pk",
    sort_key: str | None = None,
    ttl: str | None = None,
) -> dynamodb.Table:
    """An on-demand table with string keys, encrypted with the service key, PITR on.

    Keys and the TTL attribute are the ones the code creates the table with on moto
    (each store's ``create_table``), so what the tests run against is what deploys.
    """
    return dynamodb.Table(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
        sort_key=(
            dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING)
            if sort_key
            else None
        ),
        time_to_live_attribute=ttl,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        deletion_protection=config.retain_data,
        removal_policy=removal_policy(config),
    )


class Buckets(Construct):
    """The instruments snapshot bucket, the stream archive bucket and their access-log bucket."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        removal = removal_policy(config)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # server access logging supports SSE-S3 only
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=removal,
            auto_delete_objects=False,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This is the access-log bucket: logging it into itself would loop.",
        )
        self.instruments = self._bucket("Instruments", "instruments/", removal, key)
        self.instruments.add_lifecycle_rule(
            prefix=INSTRUMENTS_PREFIX, noncurrent_version_expiration=Duration.days(7)
        )
        self.archive = self._bucket("Archive", "archive/", removal, key)

    def _bucket(
        self, name: str, log_prefix: str, removal: RemovalPolicy, key: kms.IKey
    ) -> s3.Bucket:
        return s3.Bucket(
            self,
            name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=log_prefix,
            removal_policy=removal,
        )


class Database(Construct):
    """RDS PostgreSQL 17 in isolated subnets, reached only through RDS Proxy with TLS."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
    ) -> None:
        super().__init__(scope, construct_id)
        db = config.database
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9)
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            parameters={
                "rds.force_ssl": "1",
                "log_min_duration_statement": "1000",
                "log_connections": "1",
                "log_disconnections": "1",
            },
        )
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=engine,
            instance_type=ec2.InstanceType(db.instance_type),
            vpc=vpc,
            vpc_subnets=subnets,
            database_name=DATABASE_NAME,
            credentials=rds.Credentials.from_generated_secret(DATABASE_ADMIN, encryption_key=key),
            storage_encrypted=True,
            storage_encryption_key=key,
            storage_type=rds.StorageType.GP3,
            allocated_storage=db.allocated_storage_gib,
            max_allocated_storage=db.max_allocated_storage_gib,
            multi_az=db.multi_az,
            deletion_protection=db.deletion_protection,
            backup_retention=Duration.days(db.backup_retention_days),
            iam_authentication=True,
            publicly_accessible=False,
            auto_minor_version_upgrade=True,
            parameter_group=parameters,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            enable_performance_insights=True,
            performance_insight_encryption_key=key,
            monitoring_interval=Duration.seconds(60),
            removal_policy=RemovalPolicy.SNAPSHOT if config.retain_data else RemovalPolicy.DESTROY,
        )
        acknowledge(
            self.instance,
            "AwsSolutions-RDS11",
            "Clients reach the database only through RDS Proxy, which listens on 5432 whatever "
            "the instance's port; the security groups, not the port number, keep others out.",
        )
        acknowledge(
            self.instance,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonRDSEnhancedMonitoringRole]",
            "RDS enhanced monitoring's own service role, as AWS defines it.",
        )
        acknowledge(
            self.instance,
            "AwsSolutions-SMG4",
            "The admin secret is what RDS Proxy signs in with; rotating it needs a rotation "
            "Lambda in the VPC, left to operations (see README, deploying).",
        )
        if not db.multi_az:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS3",
                f"Stage {config.name} runs one instance to halve the cost; prod is Multi-AZ.",
            )
        if not db.deletion_protection:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS10",
                f"Stage {config.name} is disposable; prod turns deletion protection on.",
            )
        self.secret = self.instance.secret
        self.proxy = self.instance.add_proxy(
            "Proxy",
            secrets=[self.instance.secret] if self.instance.secret else [],
            vpc=vpc,
            vpc_subnets=subnets,
            require_tls=True,
            iam_auth=False,
            debug_logging=False,
            borrow_timeout=Duration.seconds(30),
        )
