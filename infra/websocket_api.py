"""The WebSocket API (API Gateway v2): live ticks and Greeks to authenticated clients.

``$connect`` is behind the ws-authorizer function (a Lambda REQUEST authorizer:
WebSocket APIs take no Cognito authorizer) whose identity source is the
``Sec-WebSocket-Protocol`` header, where clients put their token (a query
string would end up in access logs); without the header API Gateway answers
401 before calling it. Routes are chosen by ``$request.body.action``;
``$connect``, ``$disconnect``, ``$default``, ``subscribe``, ``unsubscribe`` and
``ping`` go to the ws function, the last four with a route response (the
function's reply is what the client receives). The fan-out functions post to
the stage's ``@connections`` endpoint (``WS_MANAGEMENT_URL``), allowed only
``POST`` there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import ArnFormat, Stack, Token
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct, IConstruct

from infra.common import acknowledge, log_group
from infra.config import StageConfig

STAGE = "v1"
ROUTE_SELECTION = "$request.body.action"
IDENTITY_SOURCE = "route.request.header.Sec-WebSocket-Protocol"
"""Where the client's token is (lambdas.ws.protocol.PROTOCOL_HEADER)."""
ACTIONS = ("subscribe", "unsubscribe", "ping")
"""Client actions with a route of their own (lambdas.ws.protocol)."""
RESPONDING_ROUTES = ("$default", *ACTIONS)
"""Routes whose integration's answer is sent back to the client."""
MANAGEMENT_ENV = "WS_MANAGEMENT_URL"

ACCESS_LOG_FIELDS: dict[str, str] = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "connectionId": "$context.connectionId",
    "eventType": "$context.eventType",
    "route": "$context.routeKey",
    "status": "$context.status",
    "user": "$context.authorizer.principalId",
    "integrationLatency": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "error": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
}
"""One line per connect, disconnect and message: no header (the token travels in one), no
query string, no message body."""


class WebSocketApi(Construct):
    """The API, its routes and authorizer, and a throttled, access-logged stage."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        routes_function: lambda_.IFunction,
        authorizer_function: lambda_.IFunction,
        logging_account: IConstruct,
    ) -> None:
        super().__init__(scope, construct_id)

        def integration(route: str) -> integrations.WebSocketLambdaIntegration:
            return integrations.WebSocketLambdaIntegration(
                f"{route.strip('$').title()}Integration", routes_function
            )

        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            api_name=f"ticker-{config.name}-ws",
            description="ticker-service: live ticks and Greeks",
            route_selection_expression=ROUTE_SELECTION,
            connect_route_options=apigwv2.WebSocketRouteOptions(
                integration=integration("$connect"),
                authorizer=authorizers.WebSocketLambdaAuthorizer(
                    "Authorizer",
                    authorizer_function,
                    authorizer_name="cognito-token",
                    identity_source=[IDENTITY_SOURCE],
                ),
            ),
            disconnect_route_options=apigwv2.WebSocketRouteOptions(
                integration=integration("$disconnect")
            ),
            default_route_options=apigwv2.WebSocketRouteOptions(
                integration=integration("$default"), return_response=True
            ),
        )
        for action in ACTIONS:
            self.api.add_route(action, integration=integration(action), return_response=True)
        acknowledge(
            self.api,
            "AwsSolutions-APIG4",
            "A WebSocket API authorizes once, at $connect (the ws-authorizer); every later "
            "route runs on that authorized connection, and the ws function checks the "
            "connection is registered to its user.",
        )
        access_logs = log_group(self, "AccessLogs", config=config, key=key)
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=STAGE,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=config.api.websocket_rate_limit,
                burst_limit=config.api.websocket_burst_limit,
            ),
        )
        stage = self.stage.node.default_child
        if not isinstance(stage, apigwv2.CfnStage):  # pragma: no cover - CDK's own layout
            raise TypeError("WebSocketStage has no CfnStage")
        # Access logs need API Gateway's account-level logging role (the REST API sets it).
        stage.node.add_dependency(logging_account)
        stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn,
            format=json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":")),
        )
        self.url = self.stage.url
        """``wss://<api id>.execute-api.<region>.amazonaws.com/v1``: what clients connect to."""
        self.management_url = self.stage.callback_url
        """``https://<api id>.execute-api.<region>.amazonaws.com/v1``: the ``@connections``
        endpoint (WS_MANAGEMENT_URL)."""

    def connections_arn(self) -> str:
        """``POST @connections/*`` on this stage: what a fan-out may call, nothing else."""
        return Stack.of(self).format_arn(
            service="execute-api",
            resource=self.api.api_id,
            resource_name=f"{STAGE}/POST/@connections/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )

    def allow_posts(self, fanouts: Mapping[str, lambda_.Function]) -> None:
        """Point each fan-out at the stage's ``@connections`` endpoint and let it post there."""
        for function in fanouts.values():
            function.add_environment(MANAGEMENT_ENV, self.management_url)
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["execute-api:ManageConnections"],
                    resources=[self.connections_arn()],
                )
            )
            acknowledge(
                function,
                self._connections_finding(),
                "Connection ids are made at run time: the fan-out may post to any connection "
                "of this stage, and only POST (no GET or DELETE).",
            )

    def _connections_finding(self) -> str:
        """cdk-nag's finding id for :meth:`connections_arn`'s wildcard."""
        stack = Stack.of(self)

        def shown(value: str, pseudo: str) -> str:
            return f"<AWS::{pseudo}>" if Token.is_unresolved(value) else value

        cfn = self.api.node.default_child
        api = stack.resolve(stack.get_logical_id(cfn))  # type: ignore[arg-type]
        return (
            f"AwsSolutions-IAM5[Resource::arn:{shown(stack.partition, 'Partition')}:execute-api:"
            f"{shown(stack.region, 'Region')}:{shown(stack.account, 'AccountId')}:<{api}>/"
            f"{STAGE}/POST/@connections/*]"
        )
