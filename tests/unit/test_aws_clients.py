"""core/aws.py: clients from one botocore session per container, created one at a time (no boto3)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.config import Config

from core import aws


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws.reset()
    yield
    aws.reset()


def test_a_client_takes_the_region_and_config_as_boto3s_would():
    s3 = aws.client("s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}))
    assert s3.meta.region_name == "eu-north-1"
    assert s3.meta.config.signature_version == "s3v4"
    assert aws.client("dynamodb").meta.service_model.service_name == "dynamodb"


def test_clients_created_on_many_threads_share_one_session():
    with ThreadPoolExecutor(max_workers=16) as pool:
        clients = list(pool.map(lambda _: aws.client("stepfunctions"), range(32)))
    assert len({id(c) for c in clients}) == 32  # each call is a new client (callers cache theirs)
    assert {c.meta.region_name for c in clients} == {"eu-north-1"}
    assert aws.session() is aws.session()


def test_reset_forgets_the_session_and_its_resolved_credentials(monkeypatch):
    first = aws.session()
    assert first.get_credentials().access_key == "testing"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated")
    assert aws.session().get_credentials().access_key == "testing"  # resolved once per session, as boto3's
    aws.reset()
    assert aws.session() is not first
    assert aws.session().get_credentials().access_key == "rotated"
