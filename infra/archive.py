"""Both streams archived to S3 as Parquet, partitioned by IST day, readable by Athena.

Firehose reads each stream (it de-aggregates KPL records itself), converts
each JSON record to Parquet against a Glue table whose columns are derived
from the committed JSON Schema, and writes ``<stream>/day=YYYY-MM-DD/``. The
tables use partition projection, so Athena reads new days with no crawler.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import Duration, Size, Stack, TimeZone
from aws_cdk import aws_glue as glue
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.common import acknowledge, log_group
from infra.config import StageConfig
from infra.data import STREAM_SCHEMAS, Streams
from infra.definitions import record_schemas

ARCHIVE_FROM = "2024-01-01"


def glue_type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """The Hive/Glue column type of one JSON Schema node (``$ref`` resolved)."""
    if "$ref" in node:
        node = {
            **defs[node["$ref"].rsplit("/", 1)[-1]],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    if "const" in node or "enum" in node:
        return "string"
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else [k for k in (kinds or []) if k != "null"]
    if len(kinds) != 1:
        raise ValueError(f"cannot map {node!r} to one column type")
    kind = kinds[0]
    if kind == "object":
        fields = ",".join(
            f"{name}:{glue_type(child, defs)}" for name, child in node["properties"].items()
        )
        return f"struct<{fields}>"
    if kind == "array":
        return f"array<{glue_type(node['items'], defs)}>"
    return {"integer": "bigint", "number": "double", "string": "string", "boolean": "boolean"}[kind]


def glue_columns(schema_path: Path) -> list[glue.CfnTable.ColumnProperty]:
    """One Glue column per top-level property of a record's JSON Schema."""
    schema = json.loads(schema_path.read_text())
    defs = schema.get("$defs", {})
    return [
        glue.CfnTable.ColumnProperty(
            name=name, type=glue_type(node, defs), comment=node.get("description", "")[:255]
        )
        for name, node in schema["properties"].items()
    ]


class Archive(Construct):
    """Firehose -> S3 Parquet for ``ticks`` and ``greeks``, with a Glue table each."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        streams: Streams,
        bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.database_name = f"ticker_{config.name}"
        database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=stack.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description="ticker-service stream archive (Parquet by IST day)",
            ),
        )
        schemas = record_schemas()
        self.tables: dict[str, glue.CfnTable] = {}
        self.delivery_streams: dict[str, firehose.DeliveryStream] = {}
        for name, stream in streams.streams.items():
            location = f"s3://{bucket.bucket_name}/{name}/"
            table = glue.CfnTable(
                self,
                f"{name.capitalize()}Table",
                catalog_id=stack.account,
                database_name=self.database_name,
                table_input=glue.CfnTable.TableInputProperty(
                    name=name,
                    description=f"The {name} stream, one row per user record",
                    table_type="EXTERNAL_TABLE",
                    partition_keys=[glue.CfnTable.ColumnProperty(name="day", type="string")],
                    parameters={
                        "classification": "parquet",
                        "projection.enabled": "true",
                        "projection.day.type": "date",
                        "projection.day.format": "yyyy-MM-dd",
                        "projection.day.range": f"{ARCHIVE_FROM},NOW",
                        "storage.location.template": location + "day=${day}/",
                    },
                    storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                        columns=glue_columns(schemas[STREAM_SCHEMAS[name]]),
                        location=location,
                        input_format=(
                            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
                        ),
                        output_format=(
                            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
                        ),
                        serde_info=glue.CfnTable.SerdeInfoProperty(
                            serialization_library=(
                                "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                            )
                        ),
                    ),
                ),
            )
            table.node.add_dependency(database)
            self.tables[name] = table
            delivery = firehose.DeliveryStream(
                self,
                f"{name.capitalize()}Delivery",
                source=firehose.KinesisStreamSource(stream),
                destination=firehose.S3Bucket(
                    bucket,
                    data_output_prefix=f"{name}/day=!{{timestamp:yyyy-MM-dd}}/",
                    error_output_prefix=(
                        f"errors/{name}/!{{firehose:error-output-type}}/day=!{{timestamp:yyyy-MM-dd}}/"
                    ),
                    time_zone=TimeZone.ASIA_KOLKATA,
                    buffering_interval=Duration.minutes(5),
                    buffering_size=Size.mebibytes(128),
                    encryption_key=key,
                    logging_config=firehose.EnableLogging(
                        log_group(self, f"{name.capitalize()}DeliveryLogs", config=config, key=key)
                    ),
                    data_format_conversion=firehose.DataFormatConversionProps(
                        input_format=firehose.InputFormat.OPENX_JSON,
                        output_format=firehose.OutputFormat.PARQUET,
                        schema_configuration=firehose.SchemaConfiguration.from_cfn_table(table),
                    ),
                ),
            )
            self.delivery_streams[name] = delivery
            stack_ = Stack.of(self)
            archive_id = stack_.resolve(stack_.get_logical_id(bucket.node.default_child))  # type: ignore[arg-type]
            for finding in (
                "Resource::*",
                "Action::kms:GenerateDataKey*",
                "Action::kms:ReEncrypt*",
                "Action::s3:GetBucket*",
                "Action::s3:GetObject*",
                "Action::s3:List*",
                "Action::s3:Abort*",
                "Action::s3:DeleteObject*",
                f"Resource::<{archive_id}.Arn>/*",
            ):
                acknowledge(
                    delivery,
                    f"AwsSolutions-IAM5[{finding}]",
                    "The destination role CDK's Firehose construct makes: S3 delivery (multipart "
                    "uploads, retries), the Glue schema and the stream's key need these.",
                )
            acknowledge(
                delivery,
                "AwsSolutions-KDF1",
                "Firehose takes no server-side encryption with a Kinesis stream source; the "
                "source stream and the destination bucket are both encrypted with the service key.",
            )
