"""Small helpers every construct uses: log groups, failure queues, removal policies, cdk-nag
acknowledgments."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from infra.config import StageConfig

_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def removal_policy(config: StageConfig) -> RemovalPolicy:
    """RETAIN for stages that keep their data (prod), DESTROY otherwise (dev tears down clean)."""
    return RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY


def log_group(
    scope: Construct,
    construct_id: str,
    *,
    config: StageConfig,
    key: kms.IKey,
    log_group_name: str | None = None,
) -> logs.LogGroup:
    """A log group encrypted with the service key, with the stage's retention.

    ``log_group_name`` only where a service requires a name (WAF: ``aws-waf-logs-*``);
    otherwise CloudFormation names it.
    """
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=log_group_name,
        encryption_key=key,
        retention=_RETENTION[config.log_retention_days],
        removal_policy=RemovalPolicy.DESTROY,
    )


def failure_queue(scope: Construct, construct_id: str, *, key: kms.IKey) -> sqs.Queue:
    """A queue where failures are set aside (an on-failure or dead-letter queue): encrypted
    with the service key, TLS only, kept 14 days (SQS's longest)."""
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
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


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``scope`` (and its children), with the reason why."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))
