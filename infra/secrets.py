"""One Secrets Manager secret per enabled vendor, created EMPTY: no credential is ever in the template.

CDK's `Secret` without a value falls back to `GenerateSecretString` (a random password). That is not a
credential leak, but it is a value CloudFormation owns: a later change to that property makes CloudFormation
write a new random version over the credentials the operator put in. CloudFormation documents that
omitting both `SecretString` and `GenerateSecretString` creates an empty secret (no version at all), so the
generated property is removed and the value is only ever written by the operator
(`aws secretsmanager put-secret-value`, see README.md, Deploy). Until then the functions fail with a
ConfigError that says exactly that.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct


def secret_name(stage: str, vendor: str) -> str:
    return f"dsrflow/{stage}/vendors/{vendor}"


class VendorSecrets(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: str, vendors: tuple[str, ...], key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self.secrets: dict[str, secretsmanager.Secret] = {}
        # {vendor: secret name}: the VENDOR_SECRETS environment value (names read well in the console).
        self.names: dict[str, str] = {}
        for vendor in vendors:
            secret = secretsmanager.Secret(
                self,
                vendor,
                secret_name=secret_name(stage, vendor),
                description=f"dsrflow {stage}: {vendor} API credentials (JSON, see README.md, Deploy)",
                encryption_key=key,
                # Credentials are not evidence: deleting the stack should not leave live vendor keys behind.
                removal_policy=RemovalPolicy.DESTROY,
            )
            secret.node.default_child.add_property_deletion_override("GenerateSecretString")
            self.secrets[vendor] = secret
            self.names[vendor] = secret_name(stage, vendor)
