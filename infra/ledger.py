"""The request ledger: one DynamoDB table per stage holding each request's lifecycle and audit trail, with no
personal data (ids, statuses, times, vendor names, job ids, fixed-vocabulary reasons; functions/core/ledger.py).

Keys: pk = "REQ#<request id>"; sk = "REQUEST" (the one item per request) or "AUDIT#<iso time>#<n>" (an audit
event). Indexes for the operator's routes: "open-by-deadline" (sparse: open_pk is set only while the request is
open) and "by-status" (status, received_at). Items expire through TTL on `expires_at`, set by the code to
received_at + the proof retention.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

OPEN_INDEX = "open-by-deadline"  # core/ledger.OPEN_INDEX
STATUS_INDEX = "by-status"  # core/ledger.STATUS_INDEX
TTL_ATTRIBUTE = "expires_at"


class Ledger(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: str, key: kms.IKey, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        string = dynamodb.AttributeType.STRING
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="pk", type=string),
            sort_key=dynamodb.Attribute(name="sk", type=string),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            time_to_live_attribute=TTL_ATTRIBUTE,
            # The audit trail is proof: it outlives the stack and cannot be deleted by accident, unless the
            # stage is a throwaway one (removalPolicy=destroy), like the buckets and the key.
            deletion_protection=removal_policy != RemovalPolicy.DESTROY,
            removal_policy=removal_policy,
        )
        self.table.add_global_secondary_index(
            index_name=OPEN_INDEX,
            partition_key=dynamodb.Attribute(name="open_pk", type=string),
            sort_key=dynamodb.Attribute(name="deadline", type=string),
        )
        self.table.add_global_secondary_index(
            index_name=STATUS_INDEX,
            partition_key=dynamodb.Attribute(name="status", type=string),
            sort_key=dynamodb.Attribute(name="received_at", type=string),
        )
