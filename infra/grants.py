"""Least-privilege grants the CDK helpers would make wider (their ``*`` action groups).

Each statement names exact actions; a resource wildcard remains only where the
resource is a set by design (objects under a prefix, secrets under the vault's
prefix), and each such finding is acknowledged where it is granted.
"""

from __future__ import annotations

from aws_cdk import Stack, Token
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3

VAULT_PREFIX = "ticker/kite"
"""The credential vault's secret names: ``ticker/kite/<account>/api|session``."""
ENVELOPE_CONTEXT = {"kms:EncryptionContext:service": "ticker-service"}
"""Every vault envelope carries this encryption context (ticker_adapters.envelope)."""


def _via(service: str, stack: Stack) -> dict[str, dict[str, str]]:
    return {"StringEquals": {"kms:ViaService": f"{service}.{stack.region}.amazonaws.com"}}


def _vault_arn(stack: Stack) -> str:
    """Every secret of the vault (a prefix: accounts are added at run time)."""
    return (
        f"arn:{stack.partition}:secretsmanager:{stack.region}:{stack.account}"
        f":secret:{VAULT_PREFIX}/*"
    )


def grant_objects(
    principal: iam.IGrantable,
    bucket: s3.IBucket,
    prefix: str,
    key: kms.IKey,
    *,
    write: bool = False,
) -> None:
    """Read (and optionally put) objects under ``prefix``; list only that prefix.

    ListBucket is what makes a missing object a 404 (NoSuchKey) rather than a
    403, which is how readers tell "nothing published yet" from "not allowed".
    """
    stack = Stack.of(bucket)
    actions = ["s3:GetObject", "s3:PutObject"] if write else ["s3:GetObject"]
    statements = [
        iam.PolicyStatement(actions=actions, resources=[bucket.arn_for_objects(f"{prefix}*")]),
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        ),
        iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey"] if write else ["kms:Decrypt"],
            resources=[key.key_arn],
            conditions=_via("s3", stack),
        ),
    ]
    for statement in statements:
        principal.grant_principal.add_to_principal_policy(statement)


def grant_put_records(principal: iam.IGrantable, stream: kinesis.IStream, key: kms.IKey) -> None:
    """PutRecord(s) to ``stream``, and the data key its server-side encryption needs."""
    stack = Stack.of(stream)
    for statement in (
        iam.PolicyStatement(
            actions=["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"],
            resources=[stream.stream_arn],
        ),
        iam.PolicyStatement(
            actions=["kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions=_via("kinesis", stack),
        ),
    ):
        principal.grant_principal.add_to_principal_policy(statement)


def grant_vault_read(principal: iam.IGrantable, key: kms.IKey) -> None:
    """Read the credential vault: its secrets by prefix, decrypt under its context only.

    ListSecrets (the vault lists its accounts by name prefix) takes no resource.
    """
    secrets_arn = _vault_arn(Stack.of(key))
    for statement in (
        iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            resources=[secrets_arn],
        ),
        iam.PolicyStatement(
            actions=["kms:Decrypt"],
            resources=[key.key_arn],
            conditions={"StringEquals": ENVELOPE_CONTEXT},
        ),
        iam.PolicyStatement(actions=["secretsmanager:ListSecrets"], resources=["*"]),
    ):
        principal.grant_principal.add_to_principal_policy(statement)


def grant_vault_write(principal: iam.IGrantable, key: kms.IKey) -> None:
    """Write the credential vault: create, update and delete its secrets (registering and
    retiring accounts, storing each day's session); encrypt under its context only.

    The envelope is encrypted with the service key (``kms:GenerateDataKey`` bound to the
    vault's encryption context); the secrets themselves use Secrets Manager's own key.
    """
    secrets_arn = _vault_arn(Stack.of(key))
    for statement in (
        iam.PolicyStatement(
            actions=[
                "secretsmanager:CreateSecret",
                "secretsmanager:PutSecretValue",
                "secretsmanager:DeleteSecret",
                "secretsmanager:TagResource",
            ],
            resources=[secrets_arn],
        ),
        iam.PolicyStatement(
            actions=["kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions={"StringEquals": ENVELOPE_CONTEXT},
        ),
    ):
        principal.grant_principal.add_to_principal_policy(statement)


def grant_put_partition(
    principal: iam.IGrantable, table: dynamodb.ITable, partition: str, key: kms.IKey
) -> None:
    """PutItem into one partition of ``table`` only (the feed's status records)."""
    stack = Stack.of(table)
    for statement in (
        iam.PolicyStatement(
            actions=["dynamodb:PutItem"],
            resources=[table.table_arn],
            conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [partition]}},
        ),
        iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions=_via("dynamodb", stack),
        ),
    ):
        principal.grant_principal.add_to_principal_policy(statement)


def vault_findings(stack: Stack) -> dict[str, str]:
    """The cdk-nag findings :func:`grant_vault_read` raises, with the reason each is accepted."""
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    return {
        "AwsSolutions-IAM5[Resource::*]": (
            "secretsmanager:ListSecrets cannot be scoped to resources (the vault lists its "
            "accounts by name prefix); the other resource-less actions here are AWS's own "
            "(X-Ray segments, VPC network interfaces, ECR authorization)."
        ),
        f"AwsSolutions-IAM5[Resource::arn:aws:secretsmanager:{stack.region}:{account}"
        f":secret:{VAULT_PREFIX}/*]": (
            "The vault holds one secret per account and kind under ticker/kite/; accounts are "
            "added at run time, so the set is a prefix."
        ),
    }


def objects_finding(bucket: s3.IBucket, prefix: str) -> str:
    """The cdk-nag finding id of :func:`grant_objects`'s object wildcard."""
    stack = Stack.of(bucket)
    cfn = bucket.node.default_child
    logical_id = stack.resolve(stack.get_logical_id(cfn))  # type: ignore[arg-type]
    return f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{prefix}*]"
