"""Where personal data rests: KMS key, archive bucket, access-log bucket, vendor secrets."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _key(synth) -> str:
    key_id, _ = synth.archive_key()
    return key_id


def _buckets(synth) -> tuple[tuple[str, dict], tuple[str, dict]]:
    """(archive bucket, access-log bucket), told apart by their encryption."""
    archive, logs = None, None
    for lid, res in synth.resources("AWS::S3::Bucket").items():
        algo = res["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]["SSEAlgorithm"]
        if algo == "aws:kms":
            assert archive is None, "only the archive bucket is KMS-encrypted"
            archive = (lid, res)
        else:
            logs = (lid, res)
    assert archive and logs, "expected an archive bucket and an access-log bucket"
    return archive, logs


def _bucket_policy(synth, bucket_id: str) -> list[dict]:
    for res in synth.resources("AWS::S3::BucketPolicy").values():
        if res["Properties"]["Bucket"] == {"Ref": bucket_id}:
            return res["Properties"]["PolicyDocument"]["Statement"]
    raise AssertionError(f"no bucket policy for {bucket_id}")


BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def test_kms_key_rotates_and_is_retained(synth):
    key_id, key = synth.archive_key()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain" and key["UpdateReplacePolicy"] == "Retain"


def test_archive_bucket_encrypted_with_the_customer_key(synth):
    (_, archive), _ = _buckets(synth)
    rule = archive["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": [_key(synth), "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is True


def test_archive_bucket_private_versioned_logged_and_retained(synth):
    (archive_id, archive), (logs_id, _) = _buckets(synth)
    props = archive["Properties"]
    assert props["PublicAccessBlockConfiguration"] == BLOCK_ALL
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}
    assert archive["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("which", ["archive", "access-logs"])
def test_buckets_deny_plain_http(synth, which):
    archive, logs = _buckets(synth)
    bucket_id = (archive if which == "archive" else logs)[0]
    denies = [
        s
        for s in _bucket_policy(synth, bucket_id)
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    assert denies, f"{which} bucket has no deny for aws:SecureTransport=false"
    assert denies[0]["Principal"] == {"AWS": "*"} and denies[0]["Action"] == "s3:*"
    resources = denies[0]["Resource"]
    assert {"Fn::GetAtt": [bucket_id, "Arn"]} in resources, "the deny must cover the bucket itself"
    assert {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]} in resources, "and its objects"


def test_request_data_expires(synth):
    (_, archive), _ = _buckets(synth)
    rules = {r["Id"]: r for r in archive["Properties"]["LifecycleConfiguration"]["Rules"]}
    expire = rules["expire-request-data"]
    assert expire["Status"] == "Enabled"
    assert expire["Prefix"] == "requests/"
    assert expire["ExpirationInDays"] == 30  # the default retention
    assert expire["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    assert expire["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # The access package expires with the request data: its key is under this rule's prefix and no other's.
    from core.store import package_key

    key = package_key("dsr-1")
    assert [i for i, r in rules.items() if r.get("Prefix") and key.startswith(r["Prefix"])] == ["expire-request-data"]
    # The manifests' proof copy (no personal data) outlives the request data: three years by default.
    proof = rules["expire-proof"]
    assert proof["Prefix"] == "proof/" and proof["ExpirationInDays"] == 1095
    assert proof["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    # Delete markers go under requests/ and proof/ alike: the rule covers the whole bucket.
    markers = rules["remove-expired-delete-markers"]
    assert markers["Status"] == "Enabled" and markers["ExpiredObjectDeleteMarker"] is True
    assert "Prefix" not in markers and "Filter" not in markers, "delete markers under proof/ would stay"


def test_access_log_bucket(synth):
    _, (logs_id, logs) = _buckets(synth)
    props = logs["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert props["PublicAccessBlockConfiguration"] == BLOCK_ALL
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 365
    # S3 log delivery is allowed by bucket policy (not ACLs), for the archive bucket only.
    delivery = [
        s for s in _bucket_policy(synth, logs_id) if s.get("Principal") == {"Service": "logging.s3.amazonaws.com"}
    ]
    assert len(delivery) == 1 and delivery[0]["Action"] == "s3:PutObject"
    archive_id = _buckets(synth)[0][0]
    assert delivery[0]["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::GetAtt": [archive_id, "Arn"]}


def test_one_empty_secret_per_vendor_encrypted_with_the_key(synth):
    secrets = synth.resources("AWS::SecretsManager::Secret")
    names = sorted(s["Properties"]["Name"] for s in secrets.values())
    assert names == [f"dsrflow/dev/vendors/{v}" for v in ("bloomreach", "elevate", "qualifio")]
    for lid, secret in secrets.items():
        props = secret["Properties"]
        # No value of any kind in the template: not a credential, not even a generated placeholder.
        assert "SecretString" not in props, lid
        assert "GenerateSecretString" not in props, lid
        assert props["KmsKeyId"] == {"Fn::GetAtt": [_key(synth), "Arn"]}
