"""The REST API (API Gateway v1, regional) from the committed ``openapi.json``, behind a WAF.

The API's definition is generated at synth from ``openapi.json`` (the
document the API's code generates and a test keeps current), so every
deployed route is a documented operation and nothing else: each operation
with ``security`` gets the Cognito user pool authorizer, the public ones
(health, the Kite login callback, Kite's postbacks) none; operations marked
``x-ticker-function: market`` are integrated with the api-market function,
the rest with the api function (Lambda proxy). Each path also answers
``OPTIONS`` through its function, unauthenticated: the function answers a
CORS preflight from its allow-list (``API_CORS_ORIGINS``) and gives any other
origin no CORS headers.

API Gateway's own refusals answer in the API's error shape
(``{"status": "error", "code": ..., "message": ...}``), the bodies the
sandbox's local gateway gives (``sandbox/api_gateway.py``). Access logs are
JSON without the Authorization header or query strings (the login callback's
query carries Kite's request token).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.common import acknowledge, log_group
from infra.config import StageConfig
from infra.definitions import Operation, api_operations, load_openapi
from infra.limits import API_GATEWAY_INTEGRATION_TIMEOUT_S

STAGE = "v1"
"""The REST API's stage (the sandbox's local gateway serves the same one)."""
SECURITY_SCHEME = "cognito"
"""The security scheme ``openapi.json`` names on authenticated operations."""
INTEGRATION_TIMEOUT_MS = API_GATEWAY_INTEGRATION_TIMEOUT_S * 1000
"""API Gateway's default integration timeout; the API functions' timeouts match it."""
LOGIN_CALLBACK_PATH = "/kite/login/callback"
POSTBACK_PATH = "/postbacks"
WAF_LOG_GROUP_PREFIX = "aws-waf-logs-"
"""WAF writes only to log groups whose names start with this."""


@dataclass(frozen=True)
class GatewayResponse:
    """One of API Gateway's own answers, in the API's error shape."""

    status: str | None
    """None: keep the status API Gateway chose (a 5xx)."""
    code: str
    message: str

    def body(self) -> str:
        """The JSON body API Gateway sends."""
        return json.dumps({"status": "error", "code": self.code, "message": self.message})


GATEWAY_RESPONSES: dict[str, GatewayResponse] = {
    # No or a bad token on an authenticated operation (the sandbox's gateway: the same body).
    "UNAUTHORIZED": GatewayResponse("401", "unauthorized", "Unauthorized"),
    # A path or method the API does not have (API Gateway says "missing token" for both).
    "MISSING_AUTHENTICATION_TOKEN": GatewayResponse(
        "403", "forbidden", "Missing Authentication Token"
    ),
    "ACCESS_DENIED": GatewayResponse("403", "forbidden", "Forbidden"),
    "WAF_FILTERED": GatewayResponse("403", "forbidden", "Forbidden"),
    "THROTTLED": GatewayResponse("429", "rate_limited", "Too many requests"),
    "REQUEST_TOO_LARGE": GatewayResponse("413", "payload_too_large", "Request too large"),
    # A function that failed or timed out, or answered something malformed.
    "DEFAULT_5XX": GatewayResponse(None, "internal_error", "Internal server error"),
}

ACCESS_LOG_FIELDS: dict[str, str] = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "method": "$context.httpMethod",
    "resource": "$context.resourcePath",
    "path": "$context.path",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "user": "$context.authorizer.claims.sub",
    "error": "$context.error.message",
    "errorType": "$context.error.responseType",
    "wafStatus": "$context.waf.status",
}
"""What each request's access log line holds: no header (the Authorization token), no
query string (``$context.path`` has none; Kite's request token travels in one)."""


def integration_uri(function: lambda_.IFunction) -> str:
    """The Lambda proxy integration URI of ``function``."""
    return (
        f"arn:{Aws.PARTITION}:apigateway:{Aws.REGION}:lambda:path/2015-03-31/functions/"
        f"{function.function_arn}/invocations"
    )


def gateway_definition(
    document: Mapping[str, Any],
    *,
    integrations: Mapping[str, str],
    user_pool_arn: str,
    title: str,
) -> dict[str, Any]:
    """The API Gateway definition (OpenAPI 3.0 with API Gateway's extensions) of ``document``.

    ``integrations`` maps each function name to its integration URI. Only
    routing, authorization and integration are carried over: the function
    validates requests and answers with the documented bodies itself.
    """
    operations = api_operations(dict(document))
    missing = {o.function for o in operations} - set(integrations)
    if missing:
        raise ValueError(f"no integration for {sorted(missing)}")
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, integrations[operation.function]
        )
    for path, methods in paths.items():
        functions = {o.function for o in operations if o.path == path}
        if len(functions) != 1:
            raise ValueError(f"{path}: its operations name different functions {functions}")
        if "options" not in methods:
            (function,) = functions
            preflight = Operation(path, "OPTIONS", f"preflight{path}", function, False, ("200",))
            methods["options"] = _operation(preflight, integrations[function])
    return {
        "openapi": "3.0.1",
        "info": {
            "title": title,
            "version": str(document.get("info", {}).get("version", "1")),
            "description": "Generated at synth from openapi.json (infra/rest_api.py)",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "x-amazon-apigateway-authtype": "cognito_user_pools",
                    "x-amazon-apigateway-authorizer": {
                        "type": "cognito_user_pools",
                        "providerARNs": [user_pool_arn],
                    },
                }
            }
        },
        "x-amazon-apigateway-gateway-responses": {
            kind: {
                **({"statusCode": response.status} if response.status else {}),
                "responseTemplates": {"application/json": response.body()},
            }
            for kind, response in GATEWAY_RESPONSES.items()
        },
    }


def _operation(operation: Operation, uri: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "operationId": operation.operation_id,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in operation.path_parameters
        ],
        "responses": {status: {"description": status} for status in operation.statuses},
        "x-amazon-apigateway-integration": {
            "type": "aws_proxy",
            "httpMethod": "POST",
            "uri": uri,
            "passthroughBehavior": "when_no_match",
            "timeoutInMillis": INTEGRATION_TIMEOUT_MS,
        },
    }
    if operation.authenticated:
        spec["security"] = [{SECURITY_SCHEME: []}]
    return spec


class RestApi(Construct):
    """The REST API, its stage (throttled, access-logged, traced) and its web ACL."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        functions: Mapping[str, lambda_.IFunction],
        user_pool_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.operations = api_operations(load_openapi())
        served = {o.function for o in self.operations}
        missing = served - set(functions)
        if missing:
            raise ValueError(f"openapi.json routes to functions the stack lacks: {sorted(missing)}")
        name = f"ticker-{config.name}"
        definition = gateway_definition(
            load_openapi(),
            integrations={f: integration_uri(functions[f]) for f in served},
            user_pool_arn=user_pool_arn,
            title=name,
        )
        access_logs = log_group(self, "AccessLogs", config=config, key=key)
        self.api = apigateway.SpecRestApi(
            self,
            "Api",
            rest_api_name=name,
            description="ticker-service trading, accounts, subscriptions and market data",
            api_definition=apigateway.ApiDefinition.from_inline(definition),
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # tests/infra check the definition's routes, authorizer and integrations; an
            # importer's cosmetic warning must not fail a deploy.
            fail_on_warnings=False,
            # API Gateway writes any stage's logs (access logs of both APIs included) with the
            # region's account-level role: a stage with access logs is refused without it. One
            # per account and region, kept when the stack is deleted (another stack may use it).
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE,
                throttling_rate_limit=config.api.throttling_rate_limit,
                throttling_burst_limit=config.api.throttling_burst_limit,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.custom(
                    json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":"))
                ),
                tracing_enabled=True,
                metrics_enabled=False,
                data_trace_enabled=False,
                logging_level=apigateway.MethodLoggingLevel.OFF,
            ),
        )
        self.stage = self.api.deployment_stage
        # One permission per function for the whole stage (not one per method).
        for function_name in sorted(served):
            functions[function_name].add_permission(
                "RestApiInvoke",
                principal=iam.ServicePrincipal("apigateway.amazonaws.com"),
                source_arn=self.api.arn_for_execute_api("*", "/*", STAGE),
            )
        acknowledge(
            self.api,
            "AwsSolutions-APIG2",
            "The functions validate every request against the same models openapi.json is "
            "generated from (Powertools enable_validation) and answer 422 naming the field; a "
            "gateway validator would need the models twice.",
        )
        acknowledge(
            self.stage,
            "AwsSolutions-APIG6",
            "Execution logs go to a log group API Gateway creates itself, without the service "
            "key or a retention, and can carry request details; access logs (encrypted, JSON, "
            "no headers or queries), the functions' logs and API Gateway's metrics cover the "
            "same failures.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "AWS's managed policy for API Gateway's account-level logging role (it writes "
            "log groups API Gateway names at run time).",
        )
        self.logging_account = self.api.node.find_child("Account")
        """API Gateway's account-level logging setting: stages with access logs wait for it."""
        self.url = self.api.url_for_path("/")
        self.login_callback_url = self.api.url_for_path(LOGIN_CALLBACK_PATH)
        self.postback_url = self.api.url_for_path(POSTBACK_PATH)
        self.web_acl = WebAcl(self, "WebAcl", config=config, key=key)
        association = wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.stage.stage_arn,
            web_acl_arn=self.web_acl.acl.attr_arn,
        )
        association.node.add_dependency(self.stage)


class WebAcl(Construct):
    """AWS's managed rule groups (IP reputation, known bad inputs, common) and a rate limit.

    Blocked requests are logged (header and query redacted) to an encrypted log
    group; allowed ones are only counted (CloudWatch metrics per rule).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = f"ticker-{config.name}-api"
        rules = [
            _managed_rule("AWSManagedRulesAmazonIpReputationList", 0),
            _managed_rule("AWSManagedRulesKnownBadInputsRuleSet", 1),
            # The common set blocks bodies over 8 KB; the functions cap bodies themselves
            # (API_MAX_BODY_BYTES) and a basket of orders may be larger, so that rule counts.
            _managed_rule("AWSManagedRulesCommonRuleSet", 2, count=("SizeRestrictions_BODY",)),
            wafv2.CfnWebACL.RuleProperty(
                name="RateLimitPerAddress",
                priority=3,
                action=wafv2.CfnWebACL.RuleActionProperty(
                    block=wafv2.CfnWebACL.BlockActionProperty(
                        custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                            response_code=429, custom_response_body_key="rate_limited"
                        )
                    )
                ),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        limit=config.api.waf_rate_limit,
                        aggregate_key_type="IP",
                        evaluation_window_sec=300,
                    )
                ),
                visibility_config=_visibility("RateLimitPerAddress"),
            ),
        ]
        self.acl = wafv2.CfnWebACL(
            self,
            "Acl",
            name=self.name,
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=rules,
            custom_response_bodies={
                "rate_limited": wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=GatewayResponse("429", "rate_limited", "Too many requests").body(),
                )
            },
            visibility_config=_visibility(self.name),
        )
        self.rule_names = [rule.name for rule in rules]
        logs = log_group(
            self,
            "BlockedRequests",
            config=config,
            key=key,
            log_group_name=f"{WAF_LOG_GROUP_PREFIX}ticker-{config.name}-api",
        )
        stack = Stack.of(self)
        wafv2.CfnLoggingConfiguration(
            self,
            "Logging",
            resource_arn=self.acl.attr_arn,
            log_destination_configs=[
                stack.format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=logs.log_group_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(
                    single_header={"Name": "authorization"}
                ),
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(query_string={}),
            ],
            logging_filter={
                "DefaultBehavior": "DROP",
                "Filters": [
                    {
                        "Behavior": "KEEP",
                        "Requirement": "MEETS_ANY",
                        "Conditions": [{"ActionCondition": {"Action": "BLOCK"}}],
                    }
                ],
            },
        )


def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


def _managed_rule(
    name: str, priority: int, *, count: tuple[str, ...] = ()
) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                vendor_name="AWS",
                name=name,
                rule_action_overrides=[
                    wafv2.CfnWebACL.RuleActionOverrideProperty(
                        name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                    )
                    for rule in count
                ]
                or None,
            )
        ),
        visibility_config=_visibility(name),
    )
