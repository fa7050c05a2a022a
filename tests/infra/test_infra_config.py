"""Context parsing and the refusals that protect a deploy (no synthesis: milliseconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra import code_asset
from infra.config import (
    FUNCTIONS_DIR,
    Config,
    DeployConfigError,
    known_vendors,
    lambda_deps_problem,
    load_config,
)


class FakeNode:
    """Stands in for constructs.Node: only try_get_context is used."""

    def __init__(self, **context):
        self.context = context

    def try_get_context(self, key):
        return self.context.get(key)


def cfg(**context) -> Config:
    context.setdefault("skipLambdaDeps", True)
    return load_config(FakeNode(**context))


def test_defaults():
    c = cfg()
    assert c.stage == "dev" and c.stack_name == "dsrflow-dev"
    assert c.vendors == ("elevate", "bloomreach", "qualifio")
    assert (c.event_bus_name, c.crm_event_source, c.crm_detail_type) == ("default", "crm", "Data Subject Request")
    assert (c.retention_days, c.noncurrent_version_days, c.log_retention_days) == (30, 7, 90)
    assert c.proof_retention_days == 1095
    assert c.approval_mode == "auto" and c.retain_data is True and c.api_gateway_cloudwatch_role is True


@pytest.mark.parametrize(
    "given", [["qualifio", "elevate"], '["qualifio","elevate"]', "qualifio,elevate", " qualifio , elevate "]
)
def test_vendors_from_cdk_json_or_command_line(given):
    assert cfg(vendors=given).vendors == ("qualifio", "elevate")


def test_vendor_must_have_a_connector():
    with pytest.raises(DeployConfigError, match="'elevat' has no connector"):
        cfg(vendors="elevat")
    with pytest.raises(DeployConfigError, match="repeats"):
        cfg(vendors="elevate,elevate")


def test_known_vendors_are_read_from_the_registry():
    assert {"elevate", "bloomreach", "qualifio"} <= known_vendors()


@pytest.mark.parametrize(
    "context, message",
    [
        ({"stage": "Prod!"}, "'stage'"),
        ({"retentionDays": "0"}, "'retentionDays'"),
        ({"retentionDays": "thirty"}, "'retentionDays'"),
        ({"retentionDays": "400", "proofRetentionDays": "365"}, "'proofRetentionDays' must not be shorter"),
        ({"logRetentionDays": "42"}, "'logRetentionDays' must be one of"),
        ({"approvalMode": "sometimes"}, "'approvalMode' must be one of auto, manual"),
        ({"removalPolicy": "snapshot"}, "'removalPolicy'"),
        ({"skipLambdaDeps": "maybe"}, "'skipLambdaDeps' must be true or false"),
        ({"eventBusName": "arn:aws:events:eu-west-1:1:event-bus/x"}, "name, not its ARN"),
        ({"alarmTopicArn": "pager"}, "'alarmTopicArn'"),
        ({"packageUrlSeconds": "30"}, "'packageUrlSeconds'"),
        ({"packageUrlSeconds": "86400"}, "cannot outlive them"),
        ({"controllerText": "no/such/file.txt"}, "'controllerText': cannot read"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(context, message):
    with pytest.raises(DeployConfigError, match=message):
        cfg(**context)


def test_missing_dependency_layer_refuses_with_the_make_target(tmp_path):
    with pytest.raises(DeployConfigError, match=r"make lambda-deps.*skipLambdaDeps=true"):
        cfg(skipLambdaDeps="false", lambdaDepsDir=str(tmp_path / "nothing"))


def _layer(tmp_path: Path, so_name: str) -> Path:
    pkg = tmp_path / "deps" / "python" / "pydantic_core"
    pkg.mkdir(parents=True)
    (pkg / so_name).write_bytes(b"")
    return tmp_path / "deps"


def test_layer_for_the_wrong_abi_is_refused(tmp_path):
    x86 = _layer(tmp_path, "_pydantic_core.cpython-313-x86_64-linux-gnu.so")
    assert "cpython-313-x86_64-linux-gnu" in lambda_deps_problem(x86)
    with pytest.raises(DeployConfigError, match="Rebuild it"):
        cfg(skipLambdaDeps="false", lambdaDepsDir=str(x86))


def _code_asset(tmp_path: Path) -> Path:
    """A copy of functions/ as `make functions-asset` leaves it: every module with (stand-in) 3.13 bytecode, the
    stamp last. Compiling for real is tests/unit/test_cold_start.py's."""
    asset = tmp_path / "functions-asset"
    for relative in code_asset.source_files(FUNCTIONS_DIR):
        target = asset / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FUNCTIONS_DIR / relative, target)
        if relative.suffix == ".py":
            pyc = target.parent / "__pycache__" / f"{target.stem}.cpython-313.pyc"
            pyc.parent.mkdir(exist_ok=True)
            pyc.write_bytes(b"")
    (tmp_path / "functions-asset.sha256").write_text(code_asset.digest(FUNCTIONS_DIR))
    return asset


def test_layer_built_by_make_for_this_runtime_is_accepted(tmp_path):
    deps = _layer(tmp_path, "_pydantic_core.cpython-313-aarch64-linux-gnu.so")
    assert lambda_deps_problem(deps) is None
    c = cfg(skipLambdaDeps="false", lambdaDepsDir=str(deps), codeAssetDir=str(_code_asset(tmp_path)))
    assert c.lambda_deps_dir == deps


def test_a_deployable_synth_ships_the_precompiled_code_asset_and_refuses_a_stale_one(tmp_path):
    deps = _layer(tmp_path, "_pydantic_core.cpython-313-aarch64-linux-gnu.so")
    asset = _code_asset(tmp_path)
    assert cfg(skipLambdaDeps="false", lambdaDepsDir=str(deps), codeAssetDir=str(asset)).code_asset_dir == asset
    (asset / "handlers" / "record.py").write_text("# an older handler\n")
    with pytest.raises(DeployConfigError, match=r"stale.*make functions-asset"):
        cfg(skipLambdaDeps="false", lambdaDepsDir=str(deps), codeAssetDir=str(asset))
    with pytest.raises(DeployConfigError, match=r"missing.*make functions-asset"):
        cfg(skipLambdaDeps="false", lambdaDepsDir=str(deps), codeAssetDir=str(tmp_path / "nothing"))


def test_a_template_only_synth_falls_back_to_the_sources_and_says_so(tmp_path, capsys):
    assert cfg(codeAssetDir=str(tmp_path / "nothing")).code_asset_dir == FUNCTIONS_DIR
    assert "make functions-asset" in capsys.readouterr().err
    asset = _code_asset(tmp_path)
    assert cfg(codeAssetDir=str(asset)).code_asset_dir == asset  # current: shipped here too


def test_makefile_builds_the_layer_for_the_runtime_infra_declares():
    """The Makefile's pip --platform/--python-version and infra/config.py must name the same ABI."""
    from infra.config import LAMBDA_ARCH, LAMBDA_PYTHON, REPO_ROOT

    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"LAMBDA_PYTHON     := {LAMBDA_PYTHON}" in makefile
    assert f"LAMBDA_ARCH       := {LAMBDA_ARCH}" in makefile


def test_controller_text_must_be_utf8_and_not_empty(tmp_path):
    empty, binary = tmp_path / "empty.txt", tmp_path / "binary.txt"
    empty.write_text("  \n")
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DeployConfigError, match="is empty"):
        cfg(controllerText=str(empty))
    with pytest.raises(DeployConfigError, match="not UTF-8"):
        cfg(controllerText=str(binary))
    assert cfg().controller_text is None and cfg().package_url_seconds == 3600
