"""The feed on ECS Fargate (ARM64), and kite_sim beside it for stages without Kite.

Images come from the Dockerfiles through ``ContainerImage.from_asset``: synth
only copies each build context (an allow-list of the folders the Dockerfile
copies) into the cloud assembly; ``cdk deploy`` builds and pushes them.
"""

from __future__ import annotations

from aws_cdk import Duration, IgnoreMode, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.common import acknowledge, log_group
from infra.config import StageConfig
from infra.data import INSTRUMENTS_PREFIX, STATUS_PARTITION, Buckets, Streams, Tables
from infra.definitions import IMAGE_FOLDERS, PROJECT_FILES, REPO_ROOT, SIM_PORT
from infra.grants import (
    VAULT_PREFIX,
    grant_objects,
    grant_put_partition,
    grant_put_records,
    grant_vault_read,
    objects_finding,
    vault_findings,
)
from infra.observability import FEED_NAMESPACE

FEED_PORT = 8080
SIM_ACCOUNTS = 2
FEED_STOP_TIMEOUT_S = 45
"""The feed's own budget to flush and exit after SIGTERM (FEED_STOP_TIMEOUT_SECONDS)."""
TASK_STOP_TIMEOUT_S = 60
"""ECS waits this long after SIGTERM before SIGKILL: above the feed's budget, with margin."""
SPILL_DIR = "/var/spool/feed"
GIB = 1024**3


def image_context(image: str) -> list[str]:
    """Docker-style excludes that keep only what ``image``'s Dockerfile copies in its context."""
    keep = (*PROJECT_FILES, *IMAGE_FOLDERS[image])
    return ["*", *(f"!{item}" for item in keep), "**/__pycache__", "**/*.pyc", "**/*.so"]


class Feed(Construct):
    """The cluster, the feed service and (optionally) the simulator service."""

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
        order_updates: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._key = key
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.simulator: Simulator | None = None
        if config.kite_simulator:
            self.simulator = Simulator(
                self, "KiteSim", config=config, key=key, cluster=self.cluster, subnets=subnets
            )
            ws_url, rest_url = self.simulator.ws_url, self.simulator.rest_url
            # kite_sim speaks plain HTTP on the private network; its tokens are its own.
            kite_env = {"KITE_PLAINTEXT_HOSTS": self.simulator.host}
        else:
            ws_url, rest_url = "wss://ws.kite.trade", "https://api.kite.trade"
            kite_env = {}
        self.kite_environment = {"KITE_REST_URL": rest_url, "KITE_WS_URL": ws_url, **kite_env}
        """The shared ``KITE_*`` settings (ticker_adapters.settings.KiteSettings) to Kite."""

        task = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=config.feed.cpu,
            memory_limit_mib=config.feed.memory_mib,
            ephemeral_storage_gib=config.feed.ephemeral_storage_gib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        # The root filesystem is read-only; the spill and /tmp are the task's ephemeral storage.
        task.add_volume(name="spill")
        task.add_volume(name="tmp")
        spill_bytes = (config.feed.ephemeral_storage_gib - 10) * GIB
        self.environment = {
            **self.kite_environment,
            "KITE_CREDENTIALS_KMS_KEY_ARN": key.key_arn,
            "KITE_CREDENTIALS_PREFIX": VAULT_PREFIX,
            "SUBSCRIPTIONS_TABLE_NAME": tables.subscriptions.table_name,
            "TICKS_STREAM_NAME": streams.ticks.stream_name,
            "FEED_INSTRUMENTS_SOURCE": "snapshot",
            "INSTRUMENTS_BUCKET": buckets.instruments.bucket_name,
            "INSTRUMENTS_PREFIX": INSTRUMENTS_PREFIX,
            "FEED_HEALTH_PORT": str(FEED_PORT),
            # The namespace the alarms read (infra/observability.py).
            "FEED_EMF_NAMESPACE": FEED_NAMESPACE,
            "FEED_STOP_TIMEOUT_SECONDS": str(FEED_STOP_TIMEOUT_S),
            "FEED_SPILL_DIR": SPILL_DIR,
            "FEED_SPILL_MAX_BYTES": str(spill_bytes),
            # Kite's WebSocket order messages go here (the api-order-updates function stores them).
            "ORDER_UPDATES_QUEUE_URL": order_updates.queue_url,
        }
        container = task.add_container(
            "feed",
            image=ecs.ContainerImage.from_asset(
                str(REPO_ROOT),
                file="feed_container/Dockerfile",
                platform=ecr_assets.Platform.LINUX_ARM64,
                exclude=image_context("feed_container"),
                ignore_mode=IgnoreMode.DOCKER,
            ),
            environment=self.environment,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="feed",
                log_group=log_group(self, "FeedLogs", config=config, key=key),
            ),
            port_mappings=[ecs.PortMapping(container_port=FEED_PORT)],
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "python",
                    "-c",
                    "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen("
                    f"'http://127.0.0.1:{FEED_PORT}/healthz', timeout=2).status == 200 else 1)",
                ],
                interval=Duration.seconds(15),
                timeout=Duration.seconds(3),
                retries=3,
                start_period=Duration.seconds(60),
            ),
            stop_timeout=Duration.seconds(TASK_STOP_TIMEOUT_S),
            readonly_root_filesystem=True,
        )
        container.add_mount_points(
            ecs.MountPoint(container_path=SPILL_DIR, source_volume="spill", read_only=False),
            ecs.MountPoint(container_path="/tmp", source_volume="tmp", read_only=False),  # noqa: S108  # nosec B108
        )
        # What the feed touches: the ticks stream, the tables, the vault, the snapshot.
        role = task.task_role
        grant_put_records(role, streams.ticks, key)
        tables.subscriptions.grant_read_data(role)
        # Its status records go beside the subscriptions (ticker_adapters.feed_status).
        grant_put_partition(role, tables.subscriptions, STATUS_PARTITION, key)
        grant_objects(role, buckets.instruments, INSTRUMENTS_PREFIX, key)
        grant_vault_read(role, key)
        order_updates.grant_send_messages(role)
        findings = {
            **vault_findings(Stack.of(self)),
            objects_finding(buckets.instruments, INSTRUMENTS_PREFIX): (
                "The snapshots are objects under the instruments/ prefix, one per day."
            ),
        }
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            findings[f"AwsSolutions-IAM5[Action::{action}]"] = (
                "CDK's grant to send to the order-updates queue, encrypted with the service key "
                "(SQS asks KMS for data keys on the sender's behalf)."
            )
        for rule, reason in findings.items():
            acknowledge(task, rule, reason)
        acknowledge(
            task,
            "AwsSolutions-ECS2",
            "The environment holds names, ARNs and tuning only; Kite credentials are read at "
            "run time from the encrypted vault, never passed in the task definition.",
        )
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="ticker-service feed"
        )
        # Deployments never run two feeds: Kite allows 3 WebSocket connections per API key and
        # one task already opens all 3, so the old task stops (flushing) before the new starts.
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=task,
            desired_count=config.feed.desired_count,
            min_healthy_percent=0,
            max_healthy_percent=100,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            assign_public_ip=False,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            enable_execute_command=False,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )
        if self.simulator is not None:
            self.simulator.allow_from(self.security_group, "feed")


class Simulator(Construct):
    """kite_sim as an ECS service on a private DNS name: a staging stack runs without Kite.

    The simulator's first account's API key and secret and its admin token are
    generated secrets; ``README.md`` (deploying) tells how to register that
    account in the vault so the feed logs in to the simulator as it would to Kite.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        cluster: ecs.Cluster,
        subnets: ec2.SubnetSelection,
    ) -> None:
        super().__init__(scope, construct_id)
        vpc = cluster.vpc
        namespace = servicediscovery.PrivateDnsNamespace(
            self, "Namespace", name=f"ticker-{config.name}.internal", vpc=vpc
        )
        self.account = secretsmanager.Secret(
            self,
            "Account",
            secret_name=f"ticker-{config.name}/kite-sim/account",
            description="kite_sim's first simulated app: api_key and api_secret",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template='{"api_key": "simkey' + config.name + '"}',
                generate_string_key="api_secret",
                exclude_punctuation=True,
                password_length=32,
            ),
        )
        self.admin_token = secretsmanager.Secret(
            self,
            "AdminToken",
            secret_name=f"ticker-{config.name}/kite-sim/admin-token",
            description="kite_sim's admin API token (X-Sim-Admin-Token)",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=40
            ),
        )
        for secret in (self.account, self.admin_token):
            acknowledge(
                secret,
                "AwsSolutions-SMG4",
                "A simulator's credentials for a staging stack: nothing real to rotate.",
            )
        task = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=512,
            memory_limit_mib=1024,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        task.add_volume(name="tmp")  # the root filesystem is read-only
        sim = task.add_container(
            "kite-sim",
            image=ecs.ContainerImage.from_asset(
                str(REPO_ROOT),
                file="kite_sim/Dockerfile",
                platform=ecr_assets.Platform.LINUX_ARM64,
                exclude=image_context("kite_sim"),
                ignore_mode=IgnoreMode.DOCKER,
            ),
            command=[
                "--host",
                # Inside its own task (awsvpc); its security group decides who may call.
                "0.0.0.0",  # noqa: S104  # nosec B104
                "--port",
                str(SIM_PORT),
                "--accounts",
                str(SIM_ACCOUNTS),
                # Orders reach it from the VPC's private addresses, not Kite's registered IP.
                "--no-ip-check",
            ],
            secrets={
                "KITE_SIM_API_KEY": ecs.Secret.from_secrets_manager(self.account, "api_key"),
                "KITE_SIM_API_SECRET": ecs.Secret.from_secrets_manager(self.account, "api_secret"),
                "KITE_SIM_ADMIN_TOKEN": ecs.Secret.from_secrets_manager(self.admin_token),
            },
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="kite-sim",
                log_group=log_group(self, "Logs", config=config, key=key),
            ),
            port_mappings=[ecs.PortMapping(container_port=SIM_PORT)],
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "python",
                    "-c",
                    "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen("
                    f"'http://127.0.0.1:{SIM_PORT}/', timeout=2).status == 200 else 1)",
                ],
                interval=Duration.seconds(15),
                timeout=Duration.seconds(3),
                retries=3,
                start_period=Duration.seconds(60),
            ),
            readonly_root_filesystem=True,
        )
        sim.add_mount_points(
            ecs.MountPoint(container_path="/tmp", source_volume="tmp", read_only=False)  # noqa: S108  # nosec B108
        )
        acknowledge(
            task,
            "AwsSolutions-IAM5[Resource::*]",
            "The execution role's ecr:GetAuthorizationToken takes no resource.",
        )
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="ticker-service kite_sim (staging)"
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=task,
            desired_count=1,
            min_healthy_percent=0,
            max_healthy_percent=100,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            assign_public_ip=False,
            cloud_map_options=ecs.CloudMapOptions(
                name="kite-sim", cloud_map_namespace=namespace, dns_ttl=Duration.seconds(10)
            ),
        )
        self.host = host = f"kite-sim.{namespace.namespace_name}"
        self.rest_url = f"http://{host}:{SIM_PORT}"
        self.ws_url = f"ws://{host}:{SIM_PORT}"

    def allow_from(self, peer: ec2.IConnectable, who: str) -> None:
        """Let ``peer`` reach the simulator's REST and WebSocket port."""
        self.security_group.connections.allow_from(
            peer, ec2.Port.tcp(SIM_PORT), f"{who} to kite_sim"
        )
