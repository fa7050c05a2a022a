"""Vendor credentials from Secrets Manager (moto) through Powertools: what an operator sees when they are wrong."""

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


def test_missing_setting_is_named(monkeypatch):
    monkeypatch.delenv("ARCHIVE_BUCKET", raising=False)
    settings.cache_clear()
    with pytest.raises(ConfigError, match="ARCHIVE_BUCKET"):
        settings()
    settings.cache_clear()
