"""State of the API family: its tables, the event bus, the login-state key, the order-updates queue.

Every table has the keys and TTL attribute the code creates it with on moto
(each store's ``create_table``; the sandbox's ``provision`` module), so the
tests run against the layout that deploys. Names are left to CloudFormation
(two stages never collide); the functions get them in their environment.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.common import acknowledge, failure_queue
from infra.config import StageConfig
from infra.data import dynamo_table

IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL = "expiration"
"""Powertools' DynamoDB persistence layer's key and expiry attributes (its defaults)."""
TTL_ATTRIBUTE = "expires_at"
"""The order limiter's, the account registry's and the WebSocket connections' expiry."""
LOGIN_STATE_KEY_CHARS = 64
"""The login-state signing key's length (the code requires at least 32)."""
ORDER_UPDATES_MAX_RECEIVES = 5
"""Deliveries of one order-updates message before it moves to the dead-letter queue."""
ORDER_UPDATES_VISIBILITY = Duration.minutes(6)
"""Six times the order-updates function's timeout (AWS's advice for SQS mappings)."""


class ApiState(Construct):
    """The API's and the WebSocket API's tables, the bus, the login-state key, the queue."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self.grants = dynamo_table(self, "Grants", config=config, key=key, sort_key="sk")
        """User -> account grants (``USER#<sub>`` / ``ACCOUNT#<id>``; lambdas.api.dal.grants)."""
        self.idempotency = dynamo_table(
            self,
            "Idempotency",
            config=config,
            key=key,
            partition_key=IDEMPOTENCY_KEY,
            ttl=IDEMPOTENCY_TTL,
        )
        """Powertools idempotency records of order writes."""
        self.order_limiter = dynamo_table(
            self, "OrderLimiter", config=config, key=key, ttl=TTL_ATTRIBUTE
        )
        """Per-account order slots (``pk`` = account; lambdas.api.dal.limiter)."""
        self.accounts = dynamo_table(
            self, "Accounts", config=config, key=key, sort_key="sk", ttl=TTL_ATTRIBUTE
        )
        """Account registry and single-use login-state markers (lambdas.api.dal.accounts)."""
        self.ws_connections = dynamo_table(
            self, "WsConnections", config=config, key=key, ttl=TTL_ATTRIBUTE
        )
        """WebSocket connections and users (lambdas.ws.dal.connections)."""
        self.ws_subscribers = dynamo_table(self, "WsSubscribers", config=config, key=key)
        """Subscribers by instrument and the feed budget (lambdas.ws.dal.subscribers)."""

        # Order updates and login-required events for other services, encrypted with the key.
        bus_name = f"ticker-{config.name}-trading"
        self.bus = events.EventBus(
            self,
            "Bus",
            event_bus_name=bus_name,
            description="ticker-service: order updates and Kite login-required events",
            kms_key=key,
        )
        self.archive: events.Archive | None = None
        if config.api.event_archive_days:
            # Replays for a consumer that joins late or lost events; encrypted like the bus.
            # The bus by its ARN from its name: the key's policy names the bus, and a GetAtt
            # there would make the key and the bus wait for each other.
            by_name = events.EventBus.from_event_bus_arn(
                self,
                "BusByName",
                Stack.of(self).format_arn(
                    service="events", resource="event-bus", resource_name=bus_name
                ),
            )
            self.archive = events.Archive(
                self,
                "Archive",
                source_event_bus=by_name,
                description="Every event of the bus, for replay to a new consumer",
                event_pattern=events.EventPattern(account=[self.bus.stack.account]),
                retention=Duration.days(config.api.event_archive_days),
                kms_key=key,
            )
            self.archive.node.add_dependency(self.bus)

        # The key that signs Kite login states: generated at deploy, read by the api function.
        self.login_state_key = secretsmanager.Secret(
            self,
            "LoginStateKey",
            description="Signs the state of Kite login redirects (read only by the api function)",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=LOGIN_STATE_KEY_CHARS, exclude_punctuation=True
            ),
        )
        acknowledge(
            self.login_state_key,
            "AwsSolutions-SMG4",
            "It signs login links that live 10 minutes; rotating it needs no rotation Lambda: "
            "put a new random value (README, deploying), which only voids links in flight.",
        )

        # The feed forwards Kite's WebSocket order messages here; api-order-updates stores them.
        self.order_updates_dead_letters = failure_queue(self, "OrderUpdatesDeadLetters", key=key)
        self.order_updates = sqs.Queue(
            self,
            "OrderUpdates",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=Duration.minutes(15),
            enforce_ssl=True,
            retention_period=Duration.days(4),
            visibility_timeout=ORDER_UPDATES_VISIBILITY,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.order_updates_dead_letters,
                max_receive_count=ORDER_UPDATES_MAX_RECEIVES,
            ),
        )

    def restrict_login_state_key(self, reader: iam.IRole) -> None:
        """Deny reading the login-state key to every principal but ``reader`` (the api role).

        IAM grants it only to that role already; the resource policy also holds against a
        broad policy elsewhere in the account.
        """
        self.login_state_key.add_to_resource_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["secretsmanager:GetSecretValue"],
                resources=["*"],
                conditions={"StringNotEquals": {"aws:PrincipalArn": reader.role_arn}},
            )
        )
