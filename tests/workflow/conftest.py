"""Workflow fixtures: the real ASL executed by moto, handlers in-process, vendors as simulators on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from local.engine import LocalCloud
from local.simulators import SIMULATORS, simulator_class
from local.simulators.data import SAMPLE

# 4 vendor days per real second: Elevate's 5-day archive window takes about 1.25 s.
FAST = 4 * 86400.0


def sample_subject() -> dict[str, Any]:
    return {
        "email": SAMPLE.email,
        "customer_key": SAMPLE.customer_key,
        "customer_ids": {"registered": SAMPLE.registered},
    }


@contextlib.contextmanager
def local_run(
    time_scale: float = FAST,
    vendors: tuple[str, ...] = tuple(SIMULATORS),
    sim_options: dict[str, dict[str, Any]] | None = None,
    creds_override: dict[str, dict[str, Any]] | None = None,
    approval_mode: str = "auto",
    require_approval: str = "none",
    vendor_limits: dict[str, Any] | None = None,
    callbacks: bool = False,
) -> Iterator[tuple[LocalCloud, dict[str, Any]]]:
    sim_options, creds_override = sim_options or {}, creds_override or {}
    with contextlib.ExitStack() as stack:
        sims = {
            name: stack.enter_context(simulator_class(name)(time_scale=time_scale, **sim_options.get(name, {})))
            for name in vendors
        }
        creds = {name: {**sim.credentials(), **creds_override.get(name, {})} for name, sim in sims.items()}
        cloud = stack.enter_context(
            LocalCloud(
                creds,
                time_scale=time_scale,
                approval_mode=approval_mode,
                require_approval=require_approval,
                vendor_limits=vendor_limits,
                callbacks=callbacks,
            )
        )
        yield cloud, sims


@pytest.fixture
def run_request():
    """Submit through the API path, wait for the execution, return (accepted, describe_execution, summary)."""

    def run(cloud: LocalCloud, request: dict[str, Any], timeout: float = 120.0):
        accepted = cloud.submit(request)
        execution = cloud.wait(accepted["request_id"], timeout=timeout)
        assert execution["status"] == "SUCCEEDED", (execution.get("error"), execution.get("cause"))
        return accepted, execution, json.loads(execution["output"])

    return run


def summary_of(cloud: LocalCloud, name: str, timeout: float = 120) -> dict[str, Any]:
    """The output (the manifest's summary) of execution `name` once it succeeded."""
    execution = cloud.wait(name, timeout=timeout)
    assert execution["status"] == "SUCCEEDED", (execution.get("error"), execution.get("cause"))
    output: dict[str, Any] = json.loads(execution["output"])
    return output


def outcome(summary: dict[str, Any], vendor: str, action: str) -> dict[str, Any]:
    return next(o for o in summary["outcomes"] if o["vendor"] == vendor and o["action"] == action)
