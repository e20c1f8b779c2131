"""The VPC: private subnets, NAT on Elastic IPs (registered with Kite), endpoints, flow logs."""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.common import acknowledge, log_group, removal_policy
from infra.config import StageConfig


class Network(Construct):
    """Public subnets for the NAT gateways only; everything runs in private subnets.

    Kite accepts orders only from registered static IPs, so every NAT gateway
    sits on an Elastic IP this construct allocates (retained with the data when
    ``retain_data``: a redeploy must not change the addresses registered with
    Kite) and outputs. Endpoints keep the heavy and the sensitive traffic off
    the NAT: Kinesis (every tick, twice), S3 and DynamoDB (gateway endpoints,
    free), Secrets Manager and KMS (the credential vault).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        removal = removal_policy(config)
        self.egress_ips: list[ec2.CfnEIP] = []
        for n in range(config.nat_gateways):
            eip = ec2.CfnEIP(self, f"EgressIp{n + 1}", domain="vpc")
            eip.apply_removal_policy(removal)
            self.egress_ips.append(eip)
            CfnOutput(
                scope,
                f"EgressIp{n + 1}",
                value=eip.attr_public_ip,
                description="Register with Kite: orders are accepted only from these addresses",
            )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            availability_zones=list(config.availability_zones),
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            nat_gateways=config.nat_gateways,
            nat_gateway_provider=ec2.NatProvider.gateway(
                eip_allocation_ids=[eip.attr_allocation_id for eip in self.egress_ips]
            ),
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
                ec2.SubnetConfiguration(
                    name="database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
            ],
        )
        flow_logs = log_group(self, "FlowLogs", config=config, key=key)
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        for name, service in (
            ("Kinesis", ec2.InterfaceVpcEndpointAwsService.KINESIS_STREAMS),
            ("SecretsManager", ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER),
            ("Kms", ec2.InterfaceVpcEndpointAwsService.KMS),
        ):
            endpoint = self.vpc.add_interface_endpoint(
                name, service=service, subnets=private, open=True
            )
            acknowledge(
                endpoint,
                "AwsSolutions-EC23",
                "The endpoint admits HTTPS from this VPC's own CIDR only (open=True), not "
                "0.0.0.0/0; the rule cannot read the CIDR's token at synth.",
            )
        self.private_subnets = private
        self.database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
