"""The API family in the synthesized stack: REST API, WAF, Cognito, tables, bus, queue, WebSocket.

Each test reads the template the session synthesized (both stages) and checks
it against what the code expects: the REST API against ``openapi.json``, the
gateway's refusals against the sandbox's local gateway, each table against
the layout its store creates on moto, each alarm against the metrics the
functions emit.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from infra.definitions import api_operations, load_openapi, load_queue_mappings
from infra.functions import SIZING
from tests.infra.conftest import ROOT, Synthesized
from tests.infra.test_stack import functions_by_name, ref_id

pytestmark = pytest.mark.infra

API_FUNCTIONS = (
    "api",
    "api-order-updates",
    "api-market",
    "api-login-check",
    "ws-authorizer",
    "ws",
    "fanout-ticks",
    "fanout-greeks",
)
"""NAMES.md's function table."""
FANOUTS = ("fanout-ticks", "fanout-greeks")
PUBLIC_OPERATIONS = {("/health", "GET"), ("/kite/login/callback", "GET"), ("/postbacks", "POST")}
LOGIN_CHECK_SCHEDULES = {"cron(35 0 * * ? *)", "cron(45 2 ? * MON-FRI *)"}
"""NAMES.md: 06:05 IST every day, 08:15 IST Monday to Friday."""
SECRET_WORDS = ("header", "query", "$input", "$method", "authorization", "token", "apikey", "body")
"""What no access log field may name."""


# -- helpers -------------------------------------------------------------------------------


def function_id(stage: Synthesized, name: str) -> str:
    return functions_by_name(stage)[name][0]


def environment(stage: Synthesized, name: str) -> dict[str, Any]:
    _, function = functions_by_name(stage)[name]
    return dict(function["Properties"]["Environment"]["Variables"])


def mentions(value: Any, logical_id: str) -> bool:
    """Whether a CloudFormation value refers to ``logical_id`` (Ref or GetAtt, anywhere)."""
    return re.search(rf'"(?:Ref|Fn::GetAtt)": \[?"{logical_id}"', json.dumps(value)) is not None


def role_of(stage: Synthesized, logical_id: str) -> str:
    resource = stage.template["Resources"][logical_id]
    if resource["Type"] == "AWS::Lambda::Function":
        return ref_id(resource["Properties"]["Role"])
    return ref_id(resource["Properties"]["TaskRoleArn"])  # an ECS task definition


def statements(stage: Synthesized, role: str) -> Iterator[dict[str, Any]]:
    """Every statement of every policy attached to ``role``."""
    for policy in stage.resources("AWS::IAM::Policy").values():
        if any(ref_id(r) == role for r in policy["Properties"]["Roles"]):
            yield from policy["Properties"]["PolicyDocument"]["Statement"]


def actions(statement: dict[str, Any]) -> set[str]:
    value = statement["Action"]
    return {value} if isinstance(value, str) else set(value)


def rest_api(stage: Synthesized) -> dict[str, Any]:
    _, api = stage.one("AWS::ApiGateway::RestApi")
    return dict(api["Properties"]["Body"])


def table_of(stage: Synthesized, value: Any) -> dict[str, Any]:
    return dict(stage.template["Resources"][ref_id(value)])


def alarm_metric(alarm: dict[str, Any]) -> dict[str, Any]:
    """An alarm's one metric (namespace, name, dimensions, statistic), in either of the two
    forms CloudFormation takes (a labelled metric is a one-entry ``Metrics`` list)."""
    if "MetricName" in alarm:
        return {
            "namespace": alarm["Namespace"],
            "name": alarm["MetricName"],
            "dimensions": {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])},
            "statistic": alarm.get("Statistic") or alarm.get("ExtendedStatistic"),
        }
    metrics = [m for m in alarm.get("Metrics", []) if "MetricStat" in m]
    if len(metrics) != 1:
        return {"namespace": None, "name": None, "dimensions": {}, "statistic": None}
    stat = metrics[0]["MetricStat"]
    return {
        "namespace": stat["Metric"]["Namespace"],
        "name": stat["Metric"]["MetricName"],
        "dimensions": {d["Name"]: d["Value"] for d in stat["Metric"].get("Dimensions", [])},
        "statistic": stat["Stat"],
    }


def alarms_on(stage: Synthesized, metric: str) -> list[dict[str, Any]]:
    """The alarms reading ``metric``, each as :func:`alarm_metric` plus its threshold."""
    found = []
    for alarm in stage.resources("AWS::CloudWatch::Alarm").values():
        read = alarm_metric(alarm["Properties"])
        if read["name"] == metric:
            found.append({**read, "threshold": alarm["Properties"]["Threshold"]})
    return found


def dimensions(alarm: dict[str, Any]) -> dict[str, Any]:
    return dict(alarm["dimensions"])


# -- the function table ------------------------------------------------------------------------


def test_every_names_md_function_is_deployed_with_its_handler(stage: Synthesized) -> None:
    # Given NAMES.md's table, When the stack's functions are read, Then each is there
    assert set(API_FUNCTIONS) <= set(SIZING)
    deployed = functions_by_name(stage)
    for name in API_FUNCTIONS:
        _, function = deployed[name]
        assert function["Properties"]["Architectures"] == ["arm64"]
        assert function["Properties"]["TracingConfig"] == {"Mode": "Active"}
    assert environment(stage, "fanout-ticks")["FANOUT_CHANNEL"] == "ticks"
    assert environment(stage, "fanout-greeks")["FANOUT_CHANNEL"] == "greeks"


def test_kite_callers_egress_through_the_nat_and_the_websocket_family_stays_out(
    stage: Synthesized,
) -> None:
    # Given each function's network placement
    deployed = functions_by_name(stage)
    for name in ("api", "api-market", "api-login-check", "api-order-updates"):
        # Then Kite's callers (orders only from the Elastic IPs) and the DB's run in the
        # private subnets, whose default route is a NAT gateway
        subnets = deployed[name][1]["Properties"]["VpcConfig"]["SubnetIds"]
        assert subnets
        assert all("privateSubnet" in ref_id(s) for s in subnets), name
    nat_routes = {
        ref_id(r["Properties"]["RouteTableId"])
        for r in stage.resources("AWS::EC2::Route").values()
        if "NatGatewayId" in r["Properties"]
    }
    assert all("privateSubnet" in t for t in nat_routes)
    for name in ("ws-authorizer", "ws", *FANOUTS):
        # And what only reaches public AWS endpoints posts without paying for the NAT
        assert "VpcConfig" not in deployed[name][1]["Properties"], name


# -- the REST API --------------------------------------------------------------------------------


def test_the_rest_api_routes_exactly_the_documented_operations(stage: Synthesized) -> None:
    # Given openapi.json and the REST API's definition in the template
    operations = api_operations(json.loads((ROOT / "openapi.json").read_text()))
    body = rest_api(stage)
    deployed = {
        (path, method.upper()): spec
        for path, item in body["paths"].items()
        for method, spec in item.items()
        if method != "options"
    }
    # Then every documented operation is routed, and nothing else
    assert set(deployed) == {(o.path, o.method) for o in operations}
    api, market = function_id(stage, "api"), function_id(stage, "api-market")
    for operation in operations:
        spec = deployed[(operation.path, operation.method)]
        integration = spec["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        # To the function its x-ticker-function names (market -> api-market, else api)
        target = market if operation.function == "api-market" else api
        assert mentions(integration["uri"], target), operation
        # Behind the Cognito authorizer exactly when it declares security
        assert ("security" in spec) is operation.authenticated, operation
        if operation.authenticated:
            assert spec["security"] == [{"cognito": []}]
    assert {(o.path, o.method) for o in operations if not o.authenticated} == PUBLIC_OPERATIONS
    assert any(o.function == "api-market" for o in operations)
    # Every path answers preflights through its function, unauthenticated
    for path, item in body["paths"].items():
        preflight = item["options"]
        assert "security" not in preflight
        uris = {json.dumps(s["x-amazon-apigateway-integration"]["uri"]) for s in item.values()}
        assert len(uris) == 1, path
    # The authorizer is the stack's user pool, as a Cognito user pools authorizer
    scheme = body["components"]["securitySchemes"]["cognito"]
    pool, _ = stage.one("AWS::Cognito::UserPool")
    assert scheme["x-amazon-apigateway-authtype"] == "cognito_user_pools"
    assert [ref_id(a) for a in scheme["x-amazon-apigateway-authorizer"]["providerARNs"]] == [pool]


def test_api_gateway_may_invoke_each_api_function_on_its_stage_only(stage: Synthesized) -> None:
    api_id, _ = stage.one("AWS::ApiGateway::RestApi")
    for name in ("api", "api-market"):
        permissions = [
            p["Properties"]
            for p in stage.resources("AWS::Lambda::Permission").values()
            if ref_id(p["Properties"]["FunctionName"]) == function_id(stage, name)
            and p["Properties"]["Principal"] == "apigateway.amazonaws.com"
        ]
        assert len(permissions) == 1, name
        source = json.dumps(permissions[0]["SourceArn"])
        assert mentions(permissions[0]["SourceArn"], api_id)
        assert '"/v1/*/*"' in source


def test_gateway_refusals_answer_in_the_apis_error_shape(stage: Synthesized) -> None:
    from lambdas.api.errors import ERROR_CODES
    from sandbox.api_gateway import CognitoAuthorizer, LocalApiGateway, routes_from_openapi

    # Given the gateway responses the stack configures
    responses = rest_api(stage)["x-amazon-apigateway-gateway-responses"]
    assert {
        "UNAUTHORIZED",
        "ACCESS_DENIED",
        "MISSING_AUTHENTICATION_TOKEN",
        "THROTTLED",
        "DEFAULT_5XX",
    } <= set(responses)
    bodies = {}
    for kind, response in responses.items():
        body = json.loads(response["responseTemplates"]["application/json"])
        # Then each is the API's error shape with a documented code and its status
        assert set(body) == {"status", "code", "message"}, kind
        assert body["status"] == "error"
        assert body["code"] in ERROR_CODES, kind
        if "statusCode" in response:
            assert int(response["statusCode"]) == ERROR_CODES[body["code"]][0], kind
        else:
            assert kind == "DEFAULT_5XX"
        bodies[kind] = (int(response.get("statusCode", 500)), body)

    # And the sandbox's local gateway answers the same to the same requests
    def never(event: dict[str, Any]) -> Any:
        raise AssertionError("the gateway itself answers")

    local = LocalApiGateway(
        routes_from_openapi(load_openapi()),
        CognitoAuthorizer(
            "http://127.0.0.1:9/jwks.json",  # never fetched: no token is ever verified here
            "https://cognito-idp.ap-south-1.amazonaws.com/ap-south-1_pool",
            frozenset({"client"}),
        ),
        {"api": never, "market": never},
    )
    for kind, (method, path) in {
        "MISSING_AUTHENTICATION_TOKEN": ("GET", "/no/such/route"),
        "UNAUTHORIZED": ("GET", "/me/grants"),
        "REQUEST_TOO_LARGE": ("POST", "/postbacks"),
    }.items():
        body = b"x" * (10 * 1024 * 1024 + 1) if kind == "REQUEST_TOO_LARGE" else b""
        answer = local.handle(method, path, [], body)
        assert (answer.status, json.loads(answer.body)) == bodies[kind], kind


def test_the_rest_stage_is_throttled_traced_and_logs_no_secret(stage: Synthesized) -> None:
    # Given the REST API's stage
    _, api = stage.one("AWS::ApiGateway::RestApi")
    assert api["Properties"]["EndpointConfiguration"]["Types"] == ["REGIONAL"]
    _, resource = stage.one("AWS::ApiGateway::Stage")
    props = resource["Properties"]
    # Then it is throttled as the stage settings say
    (settings,) = props["MethodSettings"]
    assert (settings["HttpMethod"], settings["ResourcePath"]) == ("*", "/*")
    assert settings["ThrottlingRateLimit"] == stage.context["api"]["throttling_rate_limit"]
    assert settings["ThrottlingBurstLimit"] == stage.context["api"]["throttling_burst_limit"]
    assert props["TracingEnabled"] is True
    # And its access logs go to an encrypted log group, as JSON without headers or queries
    log_group = stage.template["Resources"][
        next(
            k
            for k in stage.resources("AWS::Logs::LogGroup")
            if mentions(props["AccessLogSetting"]["DestinationArn"], k)
        )
    ]
    assert "KmsKeyId" in log_group["Properties"]
    fields = json.loads(props["AccessLogSetting"]["Format"])
    assert {"requestId", "status", "ip", "resource"} <= set(fields)
    for name, value in fields.items():
        assert not any(word in value.lower() for word in SECRET_WORDS), name


def test_both_stages_log_with_the_regions_api_gateway_logging_role(stage: Synthesized) -> None:
    # Given API Gateway's account-level setting (a stage with access logs is refused without it)
    account_id, account = stage.one("AWS::ApiGateway::Account")
    role = ref_id(account["Properties"]["CloudWatchRoleArn"])
    # Then it names a role API Gateway assumes, kept with the stack's deletion (shared)
    assert account["DeletionPolicy"] == "Retain"
    trust = stage.template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "apigateway.amazonaws.com"}
    # And both APIs' stages are created after it
    for kind in ("AWS::ApiGateway::Stage", "AWS::ApiGatewayV2::Stage"):
        _, resource = stage.one(kind)
        assert account_id in resource.get("DependsOn", []), kind


def test_the_waf_guards_the_stage(stage: Synthesized) -> None:
    # Given the web ACL and its association
    acl_id, acl = stage.one("AWS::WAFv2::WebACL")
    props = acl["Properties"]
    assert props["Scope"] == "REGIONAL"
    assert props["DefaultAction"] == {"Allow": {}}
    managed = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in props["Rules"]
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    # Then AWS's common, known-bad-inputs and IP reputation groups run
    assert managed == {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesAmazonIpReputationList",
    }
    # And one address is limited as the stage says, answered in the API's shape
    (rate,) = [r for r in props["Rules"] if "RateBasedStatement" in r["Statement"]]
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement["Limit"] == stage.context["api"]["waf_rate_limit"]
    assert statement["AggregateKeyType"] == "IP"
    block = rate["Action"]["Block"]["CustomResponse"]
    assert block["ResponseCode"] == 429
    body = props["CustomResponseBodies"][block["CustomResponseBodyKey"]]["Content"]
    assert json.loads(body)["code"] == "rate_limited"
    # And the ACL guards the REST API's stage
    _, association = stage.one("AWS::WAFv2::WebACLAssociation")
    stage_id, _ = stage.one("AWS::ApiGateway::Stage")
    api_id, _ = stage.one("AWS::ApiGateway::RestApi")
    assert ref_id(association["Properties"]["WebACLArn"]) == acl_id
    assert mentions(association["Properties"]["ResourceArn"], stage_id)
    assert mentions(association["Properties"]["ResourceArn"], api_id)
    # And what it blocks is logged without the token or the query string
    _, logging = stage.one("AWS::WAFv2::LoggingConfiguration")
    redacted = logging["Properties"]["RedactedFields"]
    assert {"SingleHeader": {"Name": "authorization"}} in redacted
    assert {"QueryString": {}} in redacted


# -- Cognito -------------------------------------------------------------------------------------


def test_the_user_pool_is_as_the_stage_says(stage: Synthesized) -> None:
    settings = stage.context["cognito"]
    _, pool = stage.one("AWS::Cognito::UserPool")
    props = pool["Properties"]
    # MFA by TOTP (no SMS), required or optional per stage
    assert props["MfaConfiguration"] == ("ON" if settings["mfa"] == "REQUIRED" else "OPTIONAL")
    assert props["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    # A strong password policy
    policy = props["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12
    for rule in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"):
        assert policy[rule] is True, rule
    # Operators create users unless the stage opens sign-up
    allowed_only = props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"]
    assert allowed_only is (not settings["self_sign_up"])
    # Threat protection (the Plus plan) where the stage says
    if settings["threat_protection"]:
        assert props["UserPoolTier"] == "PLUS"
        assert props["UserPoolAddOns"]["AdvancedSecurityMode"] == "ENFORCED"
    else:
        assert props.get("UserPoolTier") != "PLUS"
    # The admin group
    groups = [
        g["Properties"]["GroupName"]
        for g in stage.resources("AWS::Cognito::UserPoolGroup").values()
    ]
    from lambdas.api.auth import ADMIN_GROUP

    assert groups == [ADMIN_GROUP]
    # The trading front end's client: public (no secret), no hosted-UI flows, short tokens
    _, client = stage.one("AWS::Cognito::UserPoolClient")
    c = client["Properties"]
    assert c["GenerateSecret"] is False
    assert c["AllowedOAuthFlowsUserPoolClient"] is False
    assert c["EnableTokenRevocation"] is True
    assert c["PreventUserExistenceErrors"] == "ENABLED"
    units = c["TokenValidityUnits"]
    assert (c["IdTokenValidity"], units["IdToken"]) == (60, "minutes")
    assert (c["AccessTokenValidity"], units["AccessToken"]) == (60, "minutes")
    assert c["RefreshTokenValidity"] == settings["refresh_token_hours"] * 60
    assert not any(flow.startswith("ALLOW_ADMIN") for flow in c["ExplicitAuthFlows"])


def test_the_websocket_authorizer_accepts_this_pools_tokens(stage: Synthesized) -> None:
    env = environment(stage, "ws-authorizer")
    pool, _ = stage.one("AWS::Cognito::UserPool")
    client, _ = stage.one("AWS::Cognito::UserPoolClient")
    assert mentions(env["COGNITO_ISSUER"], pool)
    assert json.dumps(env["COGNITO_ISSUER"]).startswith('{"Fn::Join": ["", ["https://cognito-idp.')
    assert ref_id(env["COGNITO_CLIENT_IDS"]) == client


# -- tables, bus, secret, queue ---------------------------------------------------------------


class _RecordingDynamoDB:
    """Stands in for a DynamoDB client: keeps what ``create_table`` and TTL calls ask for."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}

    def create_table(self, **request: Any) -> None:
        self.tables[request["TableName"]] = {**request, "ttl": None}

    def update_time_to_live(self, TableName: str, TimeToLiveSpecification: dict[str, Any]) -> None:
        self.tables[TableName]["ttl"] = TimeToLiveSpecification["AttributeName"]

    def get_waiter(self, name: str) -> Any:
        return type("Waiter", (), {"wait": staticmethod(lambda **_: None)})()


def _layouts() -> dict[str, tuple[list[dict[str, str]], list[dict[str, str]], str | None]]:
    """Each table's (key schema, attributes, TTL) as its code creates it (on moto, in tests)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from lambdas.api.dal.accounts import DynamoAccountRegistry
    from lambdas.api.dal.grants import DynamoGrantStore
    from lambdas.api.dal.limiter import DynamoOrderLimiter
    from lambdas.api.idempotency import create_idempotency_table
    from lambdas.ws.dal.connections import DynamoConnectionStore
    from lambdas.ws.dal.subscribers import DynamoSubscriberIndex
    from ticker_adapters import feed_status
    from ticker_adapters.subscription_store import SubscriptionStore

    db = _RecordingDynamoDB()
    DynamoGrantStore(db, "GRANTS_TABLE_NAME").create_table()
    create_idempotency_table(db, "IDEMPOTENCY_TABLE_NAME")
    DynamoOrderLimiter(db, "ORDER_LIMITER_TABLE_NAME").create_table()
    DynamoAccountRegistry(db, "ACCOUNTS_TABLE_NAME").create_table()
    DynamoConnectionStore(db, "WS_CONNECTIONS_TABLE_NAME").create_table()
    store = SubscriptionStore(db, "SUBSCRIPTIONS_TABLE_NAME")
    store.create_table()
    DynamoSubscriberIndex(db, "WS_SUBSCRIBERS_TABLE_NAME", store).create_table()
    # The feed's status records expire beside the subscriptions (CDK sets that table's TTL).
    db.tables["SUBSCRIPTIONS_TABLE_NAME"]["ttl"] = feed_status.TTL_ATTRIBUTE
    # The API's idempotency layer uses Powertools' default attributes: the table must match.
    defaults = inspect.signature(DynamoDBPersistenceLayer.__init__).parameters
    assert db.tables["IDEMPOTENCY_TABLE_NAME"]["KeySchema"] == [
        {"AttributeName": defaults["key_attr"].default, "KeyType": "HASH"}
    ]
    assert db.tables["IDEMPOTENCY_TABLE_NAME"]["ttl"] == defaults["expiry_attr"].default
    return {
        name: (t["KeySchema"], t["AttributeDefinitions"], t["ttl"]) for name, t in db.tables.items()
    }


def test_each_table_has_the_layout_its_code_creates(stage: Synthesized) -> None:
    key, _ = stage.one("AWS::KMS::Key")
    layouts = _layouts()
    seen: dict[str, set[str]] = {}
    # Given every function's table variables (and the feed's)
    _, task = stage.one("AWS::ECS::TaskDefinition", "FeedTask")
    (container,) = task["Properties"]["ContainerDefinitions"]
    variables = [{e["Name"]: e["Value"] for e in container["Environment"]}]
    variables += [environment(stage, name) for name in functions_by_name(stage)]
    for env in variables:
        for variable, value in env.items():
            if variable in layouts:
                seen.setdefault(variable, set()).add(ref_id(value))
    # Then each variable names one table everywhere, laid out as its store creates it
    assert set(seen) == set(layouts)
    for variable, (schema, attributes, ttl) in layouts.items():
        (table_id,) = seen[variable]
        props = stage.template["Resources"][table_id]["Properties"]
        assert props["KeySchema"] == schema, variable
        assert sorted(props["AttributeDefinitions"], key=str) == sorted(attributes, key=str)
        if ttl is None:
            assert "TimeToLiveSpecification" not in props, variable
        else:
            assert props["TimeToLiveSpecification"] == {"AttributeName": ttl, "Enabled": True}
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        spec = props["PointInTimeRecoverySpecification"]
        assert spec["PointInTimeRecoveryEnabled"] is True, variable
        assert ref_id(props["SSESpecification"]["KMSMasterKeyId"]) == key
    assert len({next(iter(ids)) for ids in seen.values()}) == len(layouts)


def _writable_tables(stage: Synthesized, name: str) -> set[str]:
    tables = set(stage.resources("AWS::DynamoDB::Table"))
    writable = set()
    for statement in statements(stage, role_of(stage, function_id(stage, name))):
        if statement["Effect"] == "Allow" and actions(statement) & {
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        }:
            writable |= {t for t in tables if mentions(statement["Resource"], t)}
    return writable


def test_each_function_writes_only_the_tables_it_writes(stage: Synthesized) -> None:
    def table(variable: str, function: str = "api") -> str:
        return ref_id(environment(stage, function)[variable])

    ws_state = {
        table("WS_CONNECTIONS_TABLE_NAME", "ws"),
        table("WS_SUBSCRIBERS_TABLE_NAME", "ws"),
        table("SUBSCRIPTIONS_TABLE_NAME", "ws"),
    }
    expected = {
        "api": {
            table(v)
            for v in (
                "GRANTS_TABLE_NAME",
                "IDEMPOTENCY_TABLE_NAME",
                "ORDER_LIMITER_TABLE_NAME",
                "ACCOUNTS_TABLE_NAME",
                "SUBSCRIPTIONS_TABLE_NAME",
            )
        },
        "api-login-check": {table("ACCOUNTS_TABLE_NAME")},
        "api-market": set(),
        "api-order-updates": set(),
        "ws-authorizer": set(),
        "ws": ws_state,
        "fanout-ticks": ws_state,
        "fanout-greeks": ws_state,
    }
    for name, tables in expected.items():
        assert _writable_tables(stage, name) == tables, name
    # The feed writes only its status records, into the subscriptions table's STATUS partition
    from ticker_adapters.feed_status import STATUS_PARTITION

    task_id, _ = stage.one("AWS::ECS::TaskDefinition", "FeedTask")
    feed_writes = [
        s
        for s in statements(stage, role_of(stage, task_id))
        if actions(s) & {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    ]
    (put,) = feed_writes
    assert actions(put) == {"dynamodb:PutItem"}
    assert ref_id(put["Resource"]) == table("SUBSCRIPTIONS_TABLE_NAME")
    leading = put["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]
    assert leading == [STATUS_PARTITION]


def test_only_the_api_writes_the_vault_and_reads_the_login_state_key(stage: Synthesized) -> None:
    # Given the login-state key
    secret_id = next(
        k for k in stage.resources("AWS::SecretsManager::Secret") if "LoginStateKey" in k
    )
    secret = stage.template["Resources"][secret_id]["Properties"]
    key, _ = stage.one("AWS::KMS::Key")
    # Then it is generated (>= 32 characters), encrypted with the service key
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    assert ref_id(secret["KmsKeyId"]) == key
    api_role = role_of(stage, function_id(stage, "api"))
    readers, vault_writers = set(), set()
    for role in stage.resources("AWS::IAM::Role"):
        for statement in statements(stage, role):
            if "secretsmanager:GetSecretValue" in actions(statement) and mentions(
                statement["Resource"], secret_id
            ):
                readers.add(role)
            if "secretsmanager:PutSecretValue" in actions(statement):
                vault_writers.add(role)
    # And only the api function may read it (IAM), and the key's policy denies everyone else
    assert readers == {api_role}
    (policy,) = [
        p["Properties"]["ResourcePolicy"]["Statement"]
        for p in stage.resources("AWS::SecretsManager::ResourcePolicy").values()
        if ref_id(p["Properties"]["SecretId"]) == secret_id
    ]
    (deny,) = policy
    assert deny["Effect"] == "Deny"
    assert ref_id(deny["Condition"]["StringNotEquals"]["aws:PrincipalArn"]) == api_role
    # And only the api function writes the credential vault (registering accounts, sessions)
    assert vault_writers == {api_role}
    names = [
        n for n in functions_by_name(stage) if "LOGIN_STATE_SECRET_ARN" in environment(stage, n)
    ]
    assert names == ["api"]


def test_the_event_bus_is_encrypted_archived_and_fed_by_the_publishers(stage: Synthesized) -> None:
    key, _ = stage.one("AWS::KMS::Key")
    bus_id, bus = stage.one("AWS::Events::EventBus")
    assert ref_id(bus["Properties"]["KmsKeyIdentifier"]) == key
    archives = stage.resources("AWS::Events::Archive")
    days = stage.context["api"]["event_archive_days"]
    assert len(archives) == (1 if days else 0)
    for archive in archives.values():
        assert archive["Properties"]["RetentionDays"] == days
        assert ref_id(archive["Properties"]["KmsKeyIdentifier"]) == key
    publishers = set()
    for name in functions_by_name(stage):
        if any(
            "events:PutEvents" in actions(s) and mentions(s["Resource"], bus_id)
            for s in statements(stage, role_of(stage, function_id(stage, name)))
        ):
            publishers.add(name)
        if "EVENT_BUS_NAME" in environment(stage, name):
            assert ref_id(environment(stage, name)["EVENT_BUS_NAME"]) == bus_id
    assert publishers == {"api", "api-order-updates", "api-login-check"}


def test_order_updates_flow_from_the_feed_through_the_queue(stage: Synthesized) -> None:
    key, _ = stage.one("AWS::KMS::Key")
    queue_id = next(
        k
        for k in stage.resources("AWS::SQS::Queue")
        if k.startswith("ApiStateOrderUpdates") and "DeadLetters" not in k
    )
    props = stage.template["Resources"][queue_id]["Properties"]
    dlq = next(k for k in stage.resources("AWS::SQS::Queue") if "OrderUpdatesDeadLetters" in k)
    # The queue is encrypted and gives a message up to its DLQ after a few deliveries
    assert ref_id(props["KmsMasterKeyId"]) == key
    assert ref_id(props["RedrivePolicy"]["deadLetterTargetArn"]) == dlq
    assert 1 < props["RedrivePolicy"]["maxReceiveCount"] <= 10
    _, consumer = functions_by_name(stage)["api-order-updates"]
    assert props["VisibilityTimeout"] >= 6 * consumer["Properties"]["Timeout"]
    # The order-updates function consumes it, reporting failed messages one by one
    (mapping,) = [
        m["Properties"]
        for m in stage.resources("AWS::Lambda::EventSourceMapping").values()
        if ref_id(m["Properties"]["EventSourceArn"]) == queue_id
    ]
    assert ref_id(mapping["FunctionName"]) == function_id(stage, "api-order-updates")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # as the shared definition says (the sandbox's emulator reads the same entry)
    definition = load_queue_mappings()["order-updates"]
    assert definition.function == "api-order-updates"
    assert definition.report_batch_item_failures
    assert mapping["BatchSize"] == definition.batch_size
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": definition.maximum_concurrency}
    assert mapping.get("MaximumBatchingWindowInSeconds", 0) == (
        definition.maximum_batching_window_seconds
    )
    # The feed sends to it
    task_id, task = stage.one("AWS::ECS::TaskDefinition", "FeedTask")
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert ref_id(env["ORDER_UPDATES_QUEUE_URL"]) == queue_id
    assert any(
        "sqs:SendMessage" in actions(s) and mentions(s["Resource"], queue_id)
        for s in statements(stage, role_of(stage, task_id))
    )
    # And a message given up on pages someone
    depth = [
        a
        for a in alarms_on(stage, "ApproximateNumberOfMessagesVisible")
        if mentions(dimensions(a).get("QueueName"), dlq)
    ]
    assert len(depth) == 1


def test_login_check_runs_on_the_names_md_schedules(stage: Synthesized) -> None:
    target = function_id(stage, "api-login-check")
    expressions = {
        rule["Properties"]["ScheduleExpression"]
        for rule in stage.resources("AWS::Events::Rule").values()
        if any(ref_id(t["Arn"]) == target for t in rule["Properties"].get("Targets", []))
    }
    assert expressions == LOGIN_CHECK_SCHEDULES


# -- the WebSocket API -----------------------------------------------------------------------------


def test_the_websocket_api_routes_authorizes_and_answers(stage: Synthesized) -> None:
    api_id, api = stage.one("AWS::ApiGatewayV2::Api")
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    assert api["Properties"]["RouteSelectionExpression"] == "$request.body.action"
    routes = {
        r["Properties"]["RouteKey"]: (k, r["Properties"])
        for k, r in stage.resources("AWS::ApiGatewayV2::Route").items()
    }
    assert set(routes) == {
        "$connect",
        "$disconnect",
        "$default",
        "subscribe",
        "unsubscribe",
        "ping",
    }
    ws = function_id(stage, "ws")
    integrations = stage.resources("AWS::ApiGatewayV2::Integration")
    for key, (_, route) in routes.items():
        # Every route goes to the ws function
        integration = route["Target"]["Fn::Join"][1][1]["Ref"]
        assert mentions(integrations[integration]["Properties"]["IntegrationUri"], ws), key
    # $connect only through the authorizer, which reads the token from the subprotocol header
    _, connect = routes["$connect"]
    assert connect["AuthorizationType"] == "CUSTOM"
    _, authorizer = stage.one("AWS::ApiGatewayV2::Authorizer")
    assert ref_id(connect["AuthorizerId"]) == next(
        iter(stage.resources("AWS::ApiGatewayV2::Authorizer"))
    )
    assert authorizer["Properties"]["AuthorizerType"] == "REQUEST"
    assert authorizer["Properties"]["IdentitySource"] == [
        "route.request.header.Sec-WebSocket-Protocol"
    ]
    assert mentions(authorizer["Properties"]["AuthorizerUri"], function_id(stage, "ws-authorizer"))
    # The message routes answer the client with the function's reply
    answered = {
        ref_id(r["Properties"]["RouteId"])
        for r in stage.resources("AWS::ApiGatewayV2::RouteResponse").values()
    }
    assert answered == {routes[k][0] for k in ("$default", "subscribe", "unsubscribe", "ping")}
    # The stage is throttled and access-logged (no headers: the token is in one)
    _, ws_stage = stage.one("AWS::ApiGatewayV2::Stage")
    props = ws_stage["Properties"]
    throttle = props["DefaultRouteSettings"]
    assert throttle["ThrottlingRateLimit"] == stage.context["api"]["websocket_rate_limit"]
    assert throttle["ThrottlingBurstLimit"] == stage.context["api"]["websocket_burst_limit"]
    fields = json.loads(props["AccessLogSettings"]["Format"])
    assert {"connectionId", "route", "status"} <= set(fields)
    for name, value in fields.items():
        assert not any(word in value.lower() for word in SECRET_WORDS), name
    assert ref_id(props["ApiId"]) == api_id


def test_fanouts_post_to_the_stage_connections_and_nowhere_else(stage: Synthesized) -> None:
    api_id, _ = stage.one("AWS::ApiGatewayV2::Api")
    posters = set()
    for name in functions_by_name(stage):
        for statement in statements(stage, role_of(stage, function_id(stage, name))):
            if any(a.startswith("execute-api:") for a in actions(statement)):
                posters.add(name)
                assert actions(statement) == {"execute-api:ManageConnections"}
                assert mentions(statement["Resource"], api_id)
                assert json.dumps(statement["Resource"]).endswith('/v1/POST/@connections/*"]]}')
    assert posters == set(FANOUTS)
    for name in FANOUTS:
        url = environment(stage, name)["WS_MANAGEMENT_URL"]
        parts = url["Fn::Join"][1]
        assert parts[0] == "https://"
        assert mentions(url, api_id)
        assert parts[-1].endswith("/v1")


# -- observability and outputs ----------------------------------------------------------------


def test_every_new_function_is_alarmed_for_errors_and_throttles(stage: Synthesized) -> None:
    for metric in ("Errors", "Throttles"):
        watched = {ref_id(dimensions(a)["FunctionName"]) for a in alarms_on(stage, metric)}
        for name in API_FUNCTIONS:
            assert function_id(stage, name) in watched, (metric, name)


def test_the_api_and_waf_are_alarmed(stage: Synthesized) -> None:
    (rate,) = alarms_on(stage, "5XXError")
    assert rate["statistic"] == "Average"
    assert dimensions(rate)["Stage"] == "v1"
    assert dimensions(rate)["ApiName"] == f"ticker-{stage.stage}"
    (latency,) = alarms_on(stage, "Latency")
    assert latency["statistic"] == "p99"
    (blocked,) = alarms_on(stage, "BlockedRequests")
    _, acl = stage.one("AWS::WAFv2::WebACL")
    assert dimensions(blocked)["WebACL"] == acl["Properties"]["Name"]
    _, dashboard = stage.one("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    assert "REST API" in body
    assert "WebSocket" in body


def _observers(text: str) -> dict[str, list[str]]:
    """A module's ``Observability`` variables and the services each counts under: a literal,
    a module constant, or ``fanout-<channel>`` for the fan-out (named per stream)."""
    from lambdas.ws.protocol import Channel

    per_stream = [f"fanout-{c.value}" for c in Channel]
    constants = dict(re.findall(r'^(\w+) = "([\w-]+)"$', text, re.M))
    found: dict[str, list[str]] = {}
    for variable, argument in re.findall(r"(\w+) = Observability\(([^)]*)\)", text):
        argument = argument.strip()
        if argument.startswith('f"fanout-'):
            found[variable] = per_stream
        elif argument.startswith('"'):
            found[variable] = [argument.strip('"')]
        elif argument in constants:
            found[variable] = [constants[argument]]
    for variable in re.findall(r'(\w+)\.name_service\(f"fanout-', text):
        found[variable] = per_stream
    return found


def _emitted() -> set[tuple[str, str]]:
    """(service, metric) pairs the functions' code can emit (Powertools EMF).

    A count's service is its ``Observability``'s (see :func:`_observers`; the API
    resolver's, ``lambdas/api/app.py``, is that of each handler passing ``obs`` to
    ``observed_app``); its metrics are the string literals of the ``.count(...)`` call,
    an f-string's prefix expanded by what fills it.
    """
    from lambdas.ws.dal.management import PostOutcome

    cognito = (ROOT / "lambdas" / "common" / "cognito.py").read_text()
    expansions = {
        "Posts_": [o.value for o in PostOutcome],
        "Denied_": re.findall(r'TokenRejectedError\("(\w+)"\)', cognito),
    }
    texts = {p: p.read_text() for p in sorted((ROOT / "lambdas").glob("*/*.py"))}
    resolver = [
        service
        for text in texts.values()
        if "observed_app(" in text and "def observed_app" not in text
        for service in _observers(text).get("obs", [])
    ]
    emitted = set()
    for path, text in texts.items():
        observers = _observers(text)
        for line in text.splitlines():
            counted = re.search(r"(\w+)\.count\(", line)
            if not counted:
                continue
            services = observers.get(counted.group(1)) or (
                resolver if path.name == "app.py" and path.parent.name == "api" else []
            )
            names = set(re.findall(r'(?<![\w])"(\w+)"', line))
            for prefix in re.findall(r'f"(\w+)\{', line):
                names |= {prefix + suffix for suffix in expansions.get(prefix, [])}
            emitted |= {(service, name) for service in services for name in names}
    return emitted


INSIGHTS_QUERY = re.compile(r'^SELECT \w+\((\w+)\) FROM SCHEMA\("TickerService", service\)$')


def test_every_function_metric_alarm_reads_a_metric_the_code_emits(stage: Synthesized) -> None:
    # Given the alarms on the functions' own namespace: per service, or any service's
    alarmed: set[tuple[str | None, str]] = set()
    for alarm in stage.resources("AWS::CloudWatch::Alarm").values():
        read = alarm_metric(alarm["Properties"])
        if read["namespace"] == "TickerService":
            alarmed.add((read["dimensions"]["service"], read["name"]))
        for metric in alarm["Properties"].get("Metrics", []):
            match = INSIGHTS_QUERY.match(metric.get("Expression", ""))
            if match:
                alarmed.add((None, match.group(1)))
    # Then each reads a metric the code emits, under that service where it names one
    emitted = _emitted()
    assert alarmed, "no alarm on the functions' metrics"
    for service, metric in alarmed:
        if service is None:
            assert any(name == metric for _, name in emitted), metric
        else:
            assert (service, metric) in emitted, (service, metric)
    # And the failures the login check, the WebSocket routes and the fan-outs count are watched
    for pair in [
        (None, "KiteLoginRequired"),
        ("ws", "UnexpectedErrors"),
        ("ws-authorizer", "Denied_keys_unavailable"),
        *(
            (fanout, metric)
            for fanout in FANOUTS
            for metric in (
                "FanoutBatchFailed",
                "RemoveFailures",
                "CarryDropped",
                "Posts_failed",
                "Posts_throttled",
            )
        ),
    ]:
        assert pair in alarmed, pair
    for name in API_FUNCTIONS:
        assert environment(stage, name)["POWERTOOLS_METRICS_NAMESPACE"] == "TickerService"


def test_the_api_endpoints_are_outputs_and_parameters(stage: Synthesized) -> None:
    outputs = stage.template["Outputs"]
    for name in (
        "RestApiUrl",
        "KiteRedirectUrl",
        "KitePostbackUrl",
        "WebSocketUrl",
        "UserPoolId",
        "UserPoolClientId",
        "CognitoIssuer",
        "EventBusArn",
    ):
        assert name in outputs, name
    assert json.dumps(outputs["KiteRedirectUrl"]["Value"]).endswith('/kite/login/callback"]]}')
    assert json.dumps(outputs["KitePostbackUrl"]["Value"]).endswith('/postbacks"]]}')
    assert json.dumps(outputs["WebSocketUrl"]["Value"]).startswith('{"Fn::Join": ["", ["wss://')
    parameters = {p["Properties"]["Name"] for p in stage.resources("AWS::SSM::Parameter").values()}
    prefix = f"/ticker-service/{stage.stage}/api/"
    for name in (
        "rest-url",
        "websocket-url",
        "user-pool-id",
        "user-pool-client-id",
        "cognito-issuer",
        "event-bus-arn",
    ):
        assert prefix + name in parameters, name


# -- the pieces, without a synth ---------------------------------------------------------------


def test_a_missing_or_undeployed_function_stops_the_synth_naming_it() -> None:
    from infra.definitions import DefinitionError, load_functions
    from infra.functions import require_functions

    declared = load_functions()
    # Given a table without one function the stack deploys, When checked, Then it is named
    without = {k: v for k, v in declared.items() if k != "fanout-greeks"}
    with pytest.raises(DefinitionError, match=r"deploys \['fanout-greeks'\]"):
        require_functions(without, SIZING)
    # Given a table declaring one the stack does not deploy, Then that is named too
    extra = {**declared, "stray": declared["api"]}
    with pytest.raises(DefinitionError, match=r"declares \['stray'\]"):
        require_functions(extra, SIZING)
    assert require_functions(declared, SIZING) is declared


def test_the_gateway_definition_refuses_a_path_split_across_functions() -> None:
    from infra.rest_api import gateway_definition

    # Given a document whose one path is served by two functions
    document = {
        "info": {"version": "1"},
        "paths": {
            "/x": {
                "get": {"responses": {"200": {}}},
                "post": {"responses": {"200": {}}, "x-ticker-function": "market"},
            }
        },
    }
    integrations = {"api": "uri-api", "api-market": "uri-market"}
    # Then there is no one function to answer its preflight: refused
    with pytest.raises(ValueError, match="/x"):
        gateway_definition(document, integrations=integrations, user_pool_arn="pool", title="t")
    # And a function without an integration is refused
    del document["paths"]["/x"]["post"]
    with pytest.raises(ValueError, match="api"):
        gateway_definition(document, integrations={}, user_pool_arn="pool", title="t")
    # And a one-function path gets its preflight, unauthenticated, from that function
    body = gateway_definition(document, integrations=integrations, user_pool_arn="pool", title="t")
    preflight = body["paths"]["/x"]["options"]
    assert preflight["x-amazon-apigateway-integration"]["uri"] == "uri-api"
    assert "security" not in preflight


def test_an_unknown_function_marker_in_openapi_is_refused() -> None:
    from infra.definitions import DefinitionError

    document = {"paths": {"/x": {"get": {"x-ticker-function": "trading"}}}}
    with pytest.raises(DefinitionError, match="x-ticker-function 'trading'"):
        api_operations(document)


def test_infra_reads_the_function_marker_the_api_writes() -> None:
    from infra.definitions import FUNCTION_EXTENSION
    from lambdas.api.context import FUNCTION_EXTENSION as API_EXTENSION

    assert FUNCTION_EXTENSION == API_EXTENSION
