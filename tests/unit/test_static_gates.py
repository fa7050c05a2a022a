"""What `make check` relies on beyond the linters: every connector conforms to the Connector protocol, and the
ASL that asl-validator sees is the workflow with every substitution resolved.

mypy type-checks this file (pyproject.toml, [tool.mypy] files): each entry of CONFORMING is checked
structurally against core.domain.Connector (class variables, method signatures, return types), so a
connector that drifts from the protocol fails the type gate, not a vendor call in production. The tests keep
CONFORMING in step with the registry.
"""

from __future__ import annotations

import json
import re
import typing

import pytest

from connectors import registry
from connectors.base import Connector
from connectors.bloomreach import BloomreachConnector
from connectors.elevate import ElevateConnector
from connectors.qualifio import QualifioConnector
from statemachines import ASL_FILE, SUBSTITUTIONS
from statemachines.validate import PLACEHOLDER, UnknownSubstitution, resolve, stand_in_arn

CONFORMING: dict[str, type[Connector]] = {
    "elevate": ElevateConnector,
    "bloomreach": BloomreachConnector,
    "qualifio": QualifioConnector,
}

LAMBDA_ARN = re.compile(r"arn:aws:lambda:[a-z]{2}-[a-z]+-\d:\d{12}:function:[A-Za-z0-9_-]{1,64}")


def test_every_registered_connector_is_checked_against_the_protocol() -> None:
    assert set(CONFORMING) == set(registry.CONNECTORS), "add the new connector to CONFORMING"
    for vendor, cls in CONFORMING.items():
        assert registry.connector_class(vendor) is cls


def test_connectors_define_every_protocol_member() -> None:
    members = {name for name in (*typing.get_type_hints(Connector), *vars(Connector)) if not name.startswith("_")}
    assert {"name", "statuses", "submit", "check", "collect", "dry_run", "cannot_act_on"} <= members
    for vendor, cls in CONFORMING.items():
        missing = sorted(m for m in members if not hasattr(cls, m))
        assert not missing, f"{vendor}: {missing}"


def test_asl_for_the_validator_has_every_substitution_resolved() -> None:
    resolved = resolve(ASL_FILE.read_text())
    assert not PLACEHOLDER.search(resolved)
    arns = set(re.findall(r"arn:aws:lambda:[^\"]+", resolved))
    assert arns == {stand_in_arn(fn) for fn in SUBSTITUTIONS.values()}
    assert all(LAMBDA_ARN.fullmatch(arn) for arn in arns)
    json.loads(resolved)


def test_an_unknown_substitution_is_refused() -> None:
    with pytest.raises(UnknownSubstitution, match=r"\$\{NoSuchFunctionArn\}"):
        resolve('{"FunctionName": "${NoSuchFunctionArn}"}')


def test_make_test_runs_every_test_folder_once() -> None:
    """`make test` runs two lists of folders (the Makefile's TESTS_PARALLEL and TESTS_TIMED): together they hold
    every folder with tests, and none twice, so a new folder is not silently left out of CI."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    makefile = (root / "Makefile").read_text()
    listed: list[str] = []
    for name in ("TESTS_PARALLEL", "TESTS_TIMED"):
        found = re.search(rf"^{name}\s*:=\s*(.+)$", makefile, re.M)
        assert found, f"the Makefile has no {name}"
        listed += found.group(1).split()
    folders = sorted({str(p.parent.relative_to(root)) for p in (root / "tests").rglob("test_*.py")})
    assert sorted(listed) == folders and len(listed) == len(set(listed))
