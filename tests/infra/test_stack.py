"""The synthesized stack: encryption, isolation, egress IPs, feed deployment, mappings, alarms."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from feed_container.metrics import _emf_name as emf_name
from infra.definitions import load_functions, load_mappings
from infra.feed import FEED_STOP_TIMEOUT_S
from infra.lint import lint
from tests.infra.conftest import ROOT, Synthesized

pytestmark = pytest.mark.infra

FEED_QUERY = re.compile(r'^SELECT (?:SUM|MAX)\((\w+)\) FROM "TickerService/Feed"$')


def ref_id(value: Any) -> str:
    """The logical id a ``Ref`` or ``Fn::GetAtt`` points at."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


def functions_by_name(stage: Synthesized) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each declared function's (logical id, resource), found by the name its description
    starts with (two functions may share a handler: the fan-outs) and checked by handler."""
    by_name = {}
    for k, r in stage.resources("AWS::Lambda::Function").items():
        match = re.match(r"ticker-service (\S+) \(", r["Properties"].get("Description", ""))
        if match:
            by_name[match.group(1)] = (k, r)
    found = {name: by_name[name] for name in load_functions()}
    for name, definition in load_functions().items():
        assert found[name][1]["Properties"]["Handler"] == definition.handler, name
    return found


def test_every_store_is_encrypted_with_the_service_key(stage: Synthesized) -> None:
    # Given the synthesized stage, When its stores are read, Then each names the KMS key
    key_id, _ = stage.one("AWS::KMS::Key")
    for _, stream in stage.resources("AWS::Kinesis::Stream").items():
        encryption = stream["Properties"]["StreamEncryption"]
        assert encryption["EncryptionType"] == "KMS"
        assert ref_id(encryption["KeyId"]) == key_id
    for _, table in stage.resources("AWS::DynamoDB::Table").items():
        sse = table["Properties"]["SSESpecification"]
        assert sse["SSEEnabled"] is True
        assert sse["SSEType"] == "KMS"
        assert ref_id(sse["KMSMasterKeyId"]) == key_id
    for _, queue in stage.resources("AWS::SQS::Queue").items():
        assert ref_id(queue["Properties"]["KmsMasterKeyId"]) == key_id
    for _, group in stage.resources("AWS::Logs::LogGroup").items():
        assert ref_id(group["Properties"]["KmsKeyId"]) == key_id
    for _, topic in stage.resources("AWS::SNS::Topic").items():
        assert ref_id(topic["Properties"]["KmsMasterKeyId"]) == key_id
    for _, secret in stage.resources("AWS::SecretsManager::Secret").items():
        assert ref_id(secret["Properties"]["KmsKeyId"]) == key_id
    for name, bucket in stage.resources("AWS::S3::Bucket").items():
        rule = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        algorithm = rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        # Server access logs can only land in an SSE-S3 bucket; every data bucket uses the key.
        assert algorithm == ("AES256" if "AccessLogs" in name else "aws:kms"), name
    _, database = stage.one("AWS::RDS::DBInstance")
    assert database["Properties"]["StorageEncrypted"] is True
    assert ref_id(database["Properties"]["KmsKeyId"]) == key_id
    _, key = stage.one("AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True


def test_the_database_is_private_and_reached_only_through_the_proxy(stage: Synthesized) -> None:
    # Given the database and its security group
    _, database = stage.one("AWS::RDS::DBInstance")
    props = database["Properties"]
    assert props["PubliclyAccessible"] is False
    assert props["EnableIAMDatabaseAuthentication"] is True
    assert props["MultiAZ"] is stage.context["database"]["multi_az"]
    assert props["DeletionProtection"] is stage.context["database"]["deletion_protection"]
    # Its subnets are the isolated ones (no route to a NAT or an internet gateway)
    _, subnet_group = stage.one("AWS::RDS::DBSubnetGroup")
    assert all("databaseSubnet" in ref_id(s) for s in subnet_group["Properties"]["SubnetIds"])
    # Only the proxy may connect, and the proxy requires TLS
    (db_group,) = [ref_id(g) for g in props["VPCSecurityGroups"]]
    ingress = [
        r["Properties"]
        for r in stage.resources("AWS::EC2::SecurityGroupIngress").values()
        if ref_id(r["Properties"]["GroupId"]) == db_group
    ]
    _, proxy = stage.one("AWS::RDS::DBProxy")
    (proxy_group,) = [ref_id(g) for g in proxy["Properties"]["VpcSecurityGroupIds"]]
    assert ingress
    assert all(ref_id(r["SourceSecurityGroupId"]) == proxy_group for r in ingress)
    assert proxy["Properties"]["RequireTLS"] is True


def test_each_nat_gateway_egresses_from_an_elastic_ip_the_stack_outputs(stage: Synthesized) -> None:
    # Given the stage's NAT gateways
    nats = stage.resources("AWS::EC2::NatGateway")
    eips = stage.resources("AWS::EC2::EIP")
    assert len(nats) == stage.context["nat_gateways"] == len(eips)
    # Then each uses one of the stack's Elastic IPs, and each address is an output
    assert {ref_id(n["Properties"]["AllocationId"]) for n in nats.values()} == set(eips)
    outputs = {
        ref_id(o["Value"]) for k, o in stage.template["Outputs"].items() if k.startswith("EgressIp")
    }
    assert outputs == set(eips)


def test_a_feed_deployment_never_runs_two_tasks_on_the_same_api_keys(stage: Synthesized) -> None:
    # Given the feed service
    _, service = stage.one("AWS::ECS::Service", "FeedService")
    props = service["Properties"]
    # Then the old task stops before a new one starts, and there is at most one
    assert props["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert props["DeploymentConfiguration"]["MinimumHealthyPercent"] == 0
    assert props["DesiredCount"] in (0, 1)
    assert props["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    # And ECS waits longer than the feed's flush budget before SIGKILL
    _, task = stage.one("AWS::ECS::TaskDefinition", "FeedTask")
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert int(env["FEED_STOP_TIMEOUT_SECONDS"]) == FEED_STOP_TIMEOUT_S
    assert container["StopTimeout"] > FEED_STOP_TIMEOUT_S
    assert container["HealthCheck"]["Command"][0] == "CMD"
    assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    _, cluster = stage.one("AWS::ECS::Cluster")
    settings = cluster["Properties"]["ClusterSettings"]
    assert {"Name": "containerInsights", "Value": "enabled"} in settings


def test_every_mapping_is_the_shared_definition(stage: Synthesized) -> None:
    # Given the shared definition and the synthesized mappings
    functions = {k: name for name, (k, _) in functions_by_name(stage).items()}
    streams = {
        ref_id({"Ref": k}): name
        for name in ("ticks", "greeks")
        for k in stage.resources("AWS::Kinesis::Stream")
        if name.capitalize() in k
    }
    _, _consumer = stage.one("AWS::Kinesis::StreamConsumer")
    consumers = {
        k: streams[ref_id(c["Properties"]["StreamARN"])]
        for k, c in stage.resources("AWS::Kinesis::StreamConsumer").items()
    }
    deployed = {}
    for mapping in stage.resources("AWS::Lambda::EventSourceMapping").values():
        p = mapping["Properties"]
        source = ref_id(p["EventSourceArn"])
        if source not in streams and source not in consumers:
            continue  # not a stream (the order-updates queue's mapping, tested apart)
        stream = streams.get(source) or consumers[source]
        kind = "enhanced-fan-out" if source in consumers else "shared"
        destination = p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        queue = ref_id(destination) if destination else None
        deployed[(stream, functions[ref_id(p["FunctionName"])])] = {
            "consumer": kind,
            "batch_size": p["BatchSize"],
            "maximum_batching_window_seconds": p["MaximumBatchingWindowInSeconds"],
            # Lambda's defaults where a setting is left out: -1, keep retrying / never expire.
            "maximum_retry_attempts": p.get("MaximumRetryAttempts", -1),
            "maximum_record_age_seconds": p.get("MaximumRecordAgeInSeconds", -1),
            "bisect_batch_on_function_error": p["BisectBatchOnFunctionError"],
            "report_batch_item_failures": "ReportBatchItemFailures"
            in p.get("FunctionResponseTypes", []),
            "parallelization_factor": p["ParallelizationFactor"],
            "starting_position": p["StartingPosition"],
            "on_failure_queue": queue,
            "depends_on_schema": any("Schema" in d for d in mapping.get("DependsOn", [])),
        }
    # When compared entry by entry, Then they are equal
    definitions = load_mappings()
    assert set(deployed) == {(d.stream, d.function) for d in definitions.values()}
    queues: dict[str | None, str | None] = {None: None}  # no destination: none deployed
    for d in definitions.values():
        got = deployed[(d.stream, d.function)]
        queues.setdefault(d.on_failure, got["on_failure_queue"])
        assert got == {
            "consumer": d.consumer,
            "batch_size": d.batch_size,
            "maximum_batching_window_seconds": d.maximum_batching_window_seconds,
            "maximum_retry_attempts": d.maximum_retry_attempts,
            "maximum_record_age_seconds": d.maximum_record_age_seconds,
            "bisect_batch_on_function_error": d.bisect_batch_on_function_error,
            "report_batch_item_failures": d.report_batch_item_failures,
            "parallelization_factor": d.parallelization_factor,
            "starting_position": d.starting_position,
            "on_failure_queue": queues[d.on_failure],
            "depends_on_schema": True,
        }, d.name
    # One on-failure queue per named destination; none where the definition names none
    named = {k: v for k, v in queues.items() if k is not None}
    assert None not in named.values()
    assert len(set(named.values())) == len(named)


def test_the_data_path_is_alarmed_to_the_topic(stage: Synthesized) -> None:
    # Given every alarm of the stage
    topic, _ = stage.one("AWS::SNS::Topic")
    alarms = stage.resources("AWS::CloudWatch::Alarm")
    for alarm in alarms.values():
        assert [ref_id(a) for a in alarm["Properties"]["AlarmActions"]] == [topic]

    def metric_names() -> set[str]:
        names = set()
        for alarm in alarms.values():
            p = alarm["Properties"]
            if "MetricName" in p:
                names.add(p["MetricName"])
            for m in p.get("Metrics", []):
                names.add(m.get("Expression") or m["MetricStat"]["Metric"]["MetricName"])
        return names

    # Then each failure the issue names has one
    names = metric_names()
    names |= {m.group(1) for n in names for m in [FEED_QUERY.match(n)] if m}
    for expected in (
        "IteratorAge",
        "ApproximateNumberOfMessagesVisible",
        "E2eLagP99Seconds",
        "DroppedRecordsTotal",
        "AccountsWaitingForLogin",
        "ReconnectsTotal",
        "Errors",
        "Throttles",
        "CPUUtilization",
        "DatabaseConnections",
        "PutRecords.ThrottledRecords",
    ):
        assert expected in names, expected
    if stage.context["feed"]["desired_count"]:
        assert "RunningTaskCount" in names
    # Errors and throttles per function, iterator age per stream consumer
    per_function = [a for a in alarms if a.startswith("ObservabilityGreeksErrors")]
    assert per_function
    assert len([a for a in alarms if "IteratorAge" in a]) == len(
        {d.function for d in load_mappings().values()}
    )
    _, dashboard = stage.one("AWS::CloudWatch::Dashboard")
    assert dashboard["Properties"]["DashboardBody"]


def test_stream_contracts_are_published(stage: Synthesized) -> None:
    # Given the SSM parameters, Then each stream has its ARN and its JSON Schema there
    names = {
        p["Properties"]["Name"]: p["Properties"]["Value"]
        for p in stage.resources("AWS::SSM::Parameter").values()
    }
    for stream in ("ticks", "greeks"):
        prefix = f"/ticker-service/{stage.stage}/streams/{stream}"
        assert f"{prefix}/arn" in names
        assert '"$schema"' in names[f"{prefix}/schema"]
    assert {"TicksStreamArn", "GreeksStreamArn"} <= set(stage.template["Outputs"])


def test_the_archive_writes_parquet_by_day_for_both_streams(stage: Synthesized) -> None:
    deliveries = stage.resources("AWS::KinesisFirehose::DeliveryStream")
    assert len(deliveries) == 2
    for delivery in deliveries.values():
        s3 = delivery["Properties"]["ExtendedS3DestinationConfiguration"]
        conversion = s3["DataFormatConversionConfiguration"]
        assert conversion["Enabled"] is True
        assert "ParquetSerDe" in conversion["OutputFormatConfiguration"]["Serializer"]
        assert "day=!{timestamp:yyyy-MM-dd}" in s3["Prefix"]
    for table in stage.resources("AWS::Glue::Table").values():
        parameters = table["Properties"]["TableInput"]["Parameters"]
        assert parameters["projection.enabled"] == "true"


def test_the_simulator_runs_only_where_the_stage_asks_for_it(stage: Synthesized) -> None:
    services = stage.resources("AWS::ECS::Service")
    simulated = any("KiteSim" in k for k in services)
    assert simulated is stage.context["kite_simulator"]
    _, task = stage.one("AWS::ECS::TaskDefinition", "FeedTask")
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    if simulated:
        # In clear only to the simulator's private host, and only by explicit opt-in
        assert env["KITE_WS_URL"].startswith("ws://kite-sim.")
        assert env["KITE_PLAINTEXT_HOSTS"] == env["KITE_WS_URL"].split("//")[1].split(":")[0]
    else:
        assert env["KITE_WS_URL"] == "wss://ws.kite.trade"
        assert "KITE_PLAINTEXT_HOSTS" not in env


def test_every_feed_alarm_reads_a_metric_the_feed_emits(stage: Synthesized) -> None:
    # Given the metric names the feed can emit as EMF (every name it registers, as named in EMF)
    source = "\n".join(p.read_text() for p in (ROOT / "feed_container").glob("*.py"))
    emitted = {emf_name(n, ()) for n in re.findall(r'"(feed_[a-z0-9_]+)"', source)}
    emitted |= {"E2eLagP50Seconds", "E2eLagP99Seconds"}
    # When the alarms' queries on the feed's namespace are read
    queried = set()
    for alarm in stage.resources("AWS::CloudWatch::Alarm").values():
        for metric in alarm["Properties"].get("Metrics", []):
            match = FEED_QUERY.match(metric.get("Expression", ""))
            if match:
                queried.add(match.group(1))
    # Then each is a metric the feed emits, in the namespace the task sets
    assert queried
    assert queried <= emitted, sorted(queried - emitted)
    _, task = stage.one("AWS::ECS::TaskDefinition", "FeedTask")
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["FEED_EMF_NAMESPACE"] == "TickerService/Feed"


def test_cfn_lint_finds_nothing_in_either_stage(
    tmp_path: Path, synthesized: dict[str, Synthesized]
) -> None:
    # Given both stages' templates, When cfn-lint reads them (the checks make synth runs)
    paths = []
    for name, stage in synthesized.items():
        path = tmp_path / f"{name}.template.json"
        path.write_text(json.dumps(stage.template))
        paths.append(path)
    result = lint(paths)
    # Then it reports nothing
    assert result.returncode == 0, result.stdout + result.stderr
