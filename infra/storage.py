"""Where personal data rests: the customer-managed KMS key, the archive bucket, and its access-log bucket."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

REQUESTS_PREFIX = "requests/"
# Manifests only (no personal data): the proof that a request was answered, kept longer than the data.
PROOF_PREFIX = "proof/"
# Bulk intake's files (core/bulk.py): the batches hold emails; they expire with the request data.
BULK_PREFIX = "bulk/"


class Storage(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        retention_days: int,
        proof_retention_days: int,
        noncurrent_version_days: int,
        access_log_retention_days: int,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)

        # One customer-managed key for everything that can hold PII (archives, subject, vendor secrets, the
        # intake dead-letter queue): disabling it or revoking a grant cuts access to all of it at once.
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/dsrflow-{stage}",
            description=f"dsrflow {stage}: data-subject archives, requests and vendor credentials",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )

        # Target of the archive bucket's server access logs. S3 documents default encryption of a log
        # destination bucket as supported with SSE-S3 only, and the logs hold object keys (ids), caller ARNs
        # and IPs, not the subject's data: S3-managed encryption is the norm here.
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(access_log_retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=removal_policy,
        )

        self.bucket = s3.Bucket(
            self,
            "Archive",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # one data key per bucket and period instead of one KMS call per object
            enforce_ssl=True,
            minimum_tls_version=1.2,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Versioning protects the proof (manifest, archives) against an accidental overwrite or delete;
            # the noncurrent-version rule below keeps that undo window short so erased data really goes.
            versioned=True,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="archive/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-request-data",
                    prefix=REQUESTS_PREFIX,
                    expiration=Duration.days(retention_days),
                    noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                    # An archive that failed mid-upload is aborted by the code; this catches a crashed Lambda.
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="expire-bulk",
                    prefix=BULK_PREFIX,
                    expiration=Duration.days(retention_days),
                    noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="expire-proof",
                    prefix=PROOF_PREFIX,
                    expiration=Duration.days(proof_retention_days),
                    noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                ),
                s3.LifecycleRule(
                    # Once the last noncurrent version is gone, drop the lone delete marker too, under
                    # requests/ and proof/ alike (whole bucket). S3 does not allow this flag in a rule that
                    # also sets an expiration in days, hence a rule of its own.
                    id="remove-expired-delete-markers",
                    expired_object_delete_marker=True,
                ),
            ],
            removal_policy=removal_policy,
        )
