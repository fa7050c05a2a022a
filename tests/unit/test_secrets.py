"""Vendor credentials from Secrets Manager (moto), cached per container: what an operator sees when they are wrong,
and when a rotated value is picked up."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from connectors import registry
from core import secrets
from core.errors import ConfigError
from core.settings import settings


@pytest.fixture
def env(monkeypatch):
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="eu-west-1")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        monkeypatch.setenv("ARCHIVE_BUCKET", "bucket")
        monkeypatch.setenv("ARCHIVE_KMS_KEY_ID", "key")
        monkeypatch.setenv("VENDOR_SECRETS", json.dumps({"qualifio": "dsrflow/qualifio", "elevate": "dsrflow/elevate"}))
        settings.cache_clear()
        secrets.clear_cache()
        yield sm
        settings.cache_clear()
        secrets.clear_cache()


def test_credentials_json_is_read_and_validated(env):
    env.create_secret(
        Name="dsrflow/elevate", SecretString=json.dumps({"base_url": "https://c.example", "api_key": "k-123"})
    )
    connector = registry.build("elevate", secrets.vendor_credentials("elevate"))
    assert connector.name == "elevate"


def test_secret_created_without_a_value_says_what_to_do(env):
    env.create_secret(Name="dsrflow/qualifio")  # as the CDK stack creates it: no value in the template
    with pytest.raises(
        ConfigError,
        match=r"qualifio: .*dsrflow/qualifio holds no value yet \(or does not exist\): put the vendor's credentials JSON",
    ):
        secrets.vendor_credentials("qualifio")


def test_vendor_not_enabled(env):
    with pytest.raises(ConfigError, match="bloomreach: .*VENDOR_SECRETS.*not enabled"):
        secrets.vendor_credentials("bloomreach")


def test_malformed_credentials_name_the_field_not_the_value(env):
    env.create_secret(Name="dsrflow/elevate", SecretString=json.dumps({"base_url": "ftp://x", "api_key": "k-123"}))
    with pytest.raises(ConfigError) as err:
        registry.build("elevate", secrets.vendor_credentials("elevate"))
    assert "base_url" in str(err.value) and "k-123" not in str(err.value)


def test_a_value_is_read_once_per_max_age_and_a_rotated_one_is_picked_up_after_it(env, monkeypatch):
    env.create_secret(
        Name="dsrflow/elevate", SecretString=json.dumps({"base_url": "https://a.example", "api_key": "k1"})
    )
    clock = [1000.0]
    monkeypatch.setattr(secrets.time, "monotonic", lambda: clock[0])
    calls = []
    real = secrets._read
    monkeypatch.setattr(secrets, "_read", lambda secret_id: calls.append(secret_id) or real(secret_id))
    first = secrets.vendor_credentials("elevate")
    env.put_secret_value(
        SecretId="dsrflow/elevate", SecretString=json.dumps({"base_url": "https://b.example", "api_key": "k2"})
    )
    clock[0] += settings().secrets_max_age - 1
    assert secrets.vendor_credentials("elevate") == first  # within max_age: the cached value, no call
    assert calls == ["dsrflow/elevate"]
    clock[0] += 2
    assert json.loads(secrets.vendor_credentials("elevate"))["api_key"] == "k2"  # rotated: read again
    assert calls == ["dsrflow/elevate"] * 2


def test_a_binary_secret_is_named_not_shown(env):
    env.create_secret(Name="dsrflow/elevate", SecretBinary=b"k-123")
    with pytest.raises(ConfigError, match="elevate: .*dsrflow/elevate holds a binary value") as err:
        secrets.vendor_credentials("elevate")
    assert "k-123" not in str(err.value)


def test_a_denied_read_names_the_code(env, monkeypatch):
    from botocore.exceptions import ClientError

    def denied(secret_id):
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "user x is not allowed"}}, "GetSecretValue"
        )

    monkeypatch.setattr(secrets, "_read", denied)
    with pytest.raises(ConfigError, match=r"dsrflow/elevate could not be read \(AccessDeniedException\)") as err:
        secrets.vendor_credentials("elevate")
    assert "user x" not in str(err.value)


def test_missing_setting_is_named(monkeypatch):
    monkeypatch.delenv("ARCHIVE_BUCKET", raising=False)
    settings.cache_clear()
    with pytest.raises(ConfigError, match="ARCHIVE_BUCKET"):
        settings()
    settings.cache_clear()
