"""The Cognito user pool both APIs authenticate against, its ``admin`` group and app client.

The REST API's Cognito authorizer and the WebSocket API's Lambda authorizer
accept this pool's ID tokens; the ``admin`` group manages grants and accounts
(``lambdas.api.auth.ADMIN_GROUP``). Users are created by operators unless the
stage turns self sign-up on (README, deploying: the first admin).
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from infra.common import acknowledge, removal_policy
from infra.config import StageConfig

ADMIN_GROUP = "admin"
"""The group that manages grants and accounts (lambdas.api.auth.ADMIN_GROUP)."""
TOKEN_MINUTES = 60
"""ID and access tokens: an hour (the front end renews them with its refresh token)."""
PASSWORD_MIN_LENGTH = 12


class Users(Construct):
    """The user pool, the ``admin`` group and the trading front end's app client."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        settings = config.cognito
        self.pool = cognito.UserPool(
            self,
            "Pool",
            user_pool_name=f"ticker-{config.name}",
            self_sign_up_enabled=settings.self_sign_up,
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)
            ),
            mfa=cognito.Mfa.REQUIRED if settings.mfa == "REQUIRED" else cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(
                min_length=PASSWORD_MIN_LENGTH,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=(
                cognito.FeaturePlan.PLUS
                if settings.threat_protection
                else cognito.FeaturePlan.ESSENTIALS
            ),
            standard_threat_protection_mode=(
                cognito.StandardThreatProtectionMode.FULL_FUNCTION
                if settings.threat_protection
                else None
            ),
            deletion_protection=config.retain_data,
            removal_policy=removal_policy(config),
        )
        if settings.mfa != "REQUIRED":
            acknowledge(
                self.pool,
                "AwsSolutions-COG2",
                f"Stage {config.name} lets users sign in before enrolling TOTP (test users); "
                "prod requires it (cdk.json, cognito.mfa).",
            )
        if not settings.threat_protection:
            acknowledge(
                self.pool,
                "AwsSolutions-COG8",
                f"Stage {config.name} runs on the Essentials plan: threat protection (the Plus "
                "plan, per active user) is on where the stage says so (prod).",
            )
        self.admin_group = cognito.CfnUserPoolGroup(
            self,
            "AdminGroup",
            user_pool_id=self.pool.user_pool_id,
            group_name=ADMIN_GROUP,
            description="Manages grants and Kite accounts through the API",
        )
        # A public client (a browser app holds no secret): SRP sign-in, or a password over
        # TLS to Cognito for operators' CLI use; no hosted UI (OAuth flows off).
        self.client = self.pool.add_client(
            "TradingApp",
            user_pool_client_name=f"ticker-{config.name}-trading",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True, user_password=True),
            disable_o_auth=True,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            id_token_validity=Duration.minutes(TOKEN_MINUTES),
            access_token_validity=Duration.minutes(TOKEN_MINUTES),
            refresh_token_validity=Duration.hours(settings.refresh_token_hours),
            auth_session_validity=Duration.minutes(3),
        )
        stack = Stack.of(self)
        self.issuer = (
            f"https://cognito-idp.{stack.region}.{stack.url_suffix}/{self.pool.user_pool_id}"
        )
        """What the pool's tokens carry as ``iss`` (COGNITO_ISSUER of the WebSocket authorizer)."""
