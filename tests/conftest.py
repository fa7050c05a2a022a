"""Shared fixtures. Tests talk to real things: simulators over loopback HTTP, moto, cdk synth."""

from __future__ import annotations

import os

import pytest

# Never let a test reach real AWS, whatever the machine has configured.
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_SECURITY_TOKEN"] = "testing"
os.environ["AWS_SESSION_TOKEN"] = "testing"
os.environ.pop("AWS_PROFILE", None)


class SleepRecorder:
    """Stands in for time.sleep in the HTTP retry policy: records the delays, sleeps not at all."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def vendor_http(sleeps):
    """Factory: a VendorHttp for a vendor whose retries do not really sleep (delays land in `sleeps`)."""
    from core.http import RetryPolicy, VendorHttp

    def make(vendor: str, attempts: int = 4) -> VendorHttp:
        return VendorHttp(vendor, timeout=(2.0, 5.0), retry=RetryPolicy(attempts=attempts, sleep=sleeps))

    return make
