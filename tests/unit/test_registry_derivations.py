"""Adding a vendor is one connector, one simulator, one contract test and one registry line
(functions/connectors/registry.py): every other list of vendors is derived from the registry, and these tests
fail when a registered vendor lacks one of the files it needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.registry import CONNECTORS, connector_class
from local.simulators import SIMULATORS, simulator_class, simulator_target
from local.simulators.base import Simulator

ROOT = Path(__file__).resolve().parents[2]
VENDORS = tuple(CONNECTORS)


def test_the_simulators_are_the_registry_s_vendors_in_its_order() -> None:
    assert tuple(SIMULATORS) == VENDORS


def test_the_simulator_target_follows_the_connector_s_names() -> None:
    assert simulator_target("connectors.acme_crm:AcmeCrmConnector") == "local.simulators.acme_crm:AcmeCrmSimulator"


def test_an_unknown_simulator_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="no simulator named 'nope' \\(known: bloomreach, elevate, qualifio\\)"):
        simulator_class("nope")


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_registered_vendor_has_a_simulator(vendor: str) -> None:
    module = SIMULATORS[vendor].split(":")[0].replace(".", "/") + ".py"
    assert (ROOT / module).is_file(), f"{vendor} is in the connector registry but has no simulator {module}"
    cls = simulator_class(vendor)
    assert isinstance(cls, type) and issubclass(cls, Simulator), f"{SIMULATORS[vendor]} is not a Simulator"


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_registered_vendor_has_a_connector_and_a_contract_test(vendor: str) -> None:
    connector_class(vendor)  # importable, and declares its vocabulary (the registry's own check)
    contract = ROOT / "tests" / "contract" / f"test_{vendor}.py"
    assert contract.is_file(), f"{vendor} is in the connector registry but has no contract test {contract}"


def test_the_default_deployment_runs_every_registered_vendor() -> None:
    from infra.config import DEFAULT_VENDORS, registry_vendors

    assert DEFAULT_VENDORS == VENDORS
    assert registry_vendors() == VENDORS  # read from the source without importing Lambda code: the same names


def test_the_registry_names_are_read_from_the_literal(tmp_path: Path) -> None:
    from infra.config import known_vendors, registry_vendors

    registry = tmp_path / "registry.py"
    registry.write_text(
        'CONNECTORS: dict[str, str] = {"b": "connectors.b:BConnector", "a": "connectors.a:AConnector"}\n'
    )
    assert registry_vendors(registry) == ("b", "a")
    assert known_vendors(registry) == {"a", "b"}
    assert registry_vendors(tmp_path / "missing.py") is None


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_credential_header_a_connector_sends_is_stripped_off_host(vendor: str) -> None:
    """core/http.CREDENTIAL_HEADERS (dropped should a redirect ever leave the vendor's host) cannot import the
    connectors (core never imports connectors): a connector that puts a secret in a header it does not list
    fails here. `auth=(...)` is basic auth: `Authorization`."""
    from core.http import CREDENTIAL_HEADERS

    source = (ROOT / "functions" / (CONNECTORS[vendor].split(":")[0].replace(".", "/") + ".py")).read_text()
    headers = set(re.findall(r"[\"']([A-Za-z0-9-]+)[\"']\s*:\s*[\w.]+\.get_secret_value\(\)", source))
    headers = {h for h in headers if h.lower() != "auth"}
    if re.search(r"[\"']auth[\"']\s*:\s*\(", source):
        headers.add("Authorization")
    missing = sorted(h for h in headers if h.lower() not in CREDENTIAL_HEADERS)
    assert not missing, f"{vendor} sends credentials in {missing}: add them to core/http.CREDENTIAL_HEADERS"
