"""Deployment settings: read once from CDK context (cdk.json, `-c key=value`), validated, typed.

Values given with `-c` arrive as strings and values from cdk.json as JSON types; both are accepted.
Every mistake raises DeployConfigError with a message that names the context key and what to do.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import aws_logs as logs
from constructs import Node

from infra import code_asset
from statemachines import ASL_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
STATE_MACHINE_FILE = ASL_FILE
REGISTRY_FILE = FUNCTIONS_DIR / "connectors" / "registry.py"

# The Lambda runtime ABI. `make lambda-deps` builds the dependency layer for exactly this pair
# (LAMBDA_PYTHON / LAMBDA_ARCH in the Makefile); `lambda_deps_problem` refuses a layer built for another.
LAMBDA_PYTHON = "3.13"
LAMBDA_ARCH = "aarch64"  # arm64 (Graviton): cheaper per GB-second, and every dependency ships aarch64 wheels

# CloudWatch Logs accepts only these retention periods (days -> aws_logs.RetentionDays member).
_LOG_RETENTION = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


MAX_PACKAGE_URL_SECONDS = 43200  # the bound core/settings.py enforces too
MAX_CONTROLLER_TEXT_BYTES = 64 * 1024


class DeployConfigError(Exception):
    """The deployment cannot be synthesized as configured; the message says which setting to fix."""


@dataclass(frozen=True)
class Config:
    stage: str
    vendors: tuple[str, ...]
    event_bus_name: str
    crm_event_source: str
    crm_detail_type: str
    retention_days: int  # objects under requests/ expire after this many days
    proof_retention_days: int  # manifests under proof/ (no personal data) expire after this many days
    noncurrent_version_days: int  # an overwritten/expired version survives this long (undo window)
    access_log_retention_days: int
    log_retention_days: int
    approval_mode: str  # "auto" | "manual": APPROVAL_MODE for the functions that build connectors
    # dsrflow's own approval gate (REQUIRE_APPROVAL for intake): which vendor actions wait for a person's
    # decision before anything is sent: "none", "erase" or "all".
    require_approval: str
    log_level: str
    retain_data: bool  # RETAIN (default) or DESTROY for the key, buckets and log groups
    api_gateway_cloudwatch_role: bool  # set the region's API Gateway logging role (account setting)
    alarm_topic_arn: str | None
    skip_lambda_deps: bool
    lambda_deps_dir: Path
    # GET /requests/{id}/package: how long a link lives (PACKAGE_URL_SECONDS; SECURITY.md says why not longer).
    package_url_seconds: int = 3600
    # The deployer's text about the controller for the access package (a UTF-8 file), else the bundled default.
    controller_text: Path | None = None
    # Per-vendor limits across executions (VENDOR_LIMITS, core/limits.py), as validated JSON text; "" for none.
    vendor_limits: str = ""
    # Vendor callbacks (core/callbacks.py): the unsigned GET /callbacks/{token} and a callBackUrl on the jobs of
    # vendors that offer one (Qualifio's exports); off: every job is polled.
    callbacks: bool = True
    # What the functions' code asset ships: the precompiled copy of functions/ (`make functions-asset`,
    # infra/code_asset.py) while it is current, else (a template-only synth) functions/ itself.
    code_asset_dir: Path = FUNCTIONS_DIR
    # Bulk intake: child executions (= request starts) in flight per batch (context bulkMaxConcurrency).
    bulk_max_concurrency: int = 10

    @property
    def stack_name(self) -> str:
        return f"dsrflow-{self.stage}"


def _raw(node: Node, key: str, default: Any) -> Any:
    value = node.try_get_context(key)
    return default if value is None or value == "" else value


def _bool(node: Node, key: str, default: bool) -> bool:
    value = _raw(node, key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise DeployConfigError(f"context '{key}' must be true or false, got {value!r}")


def _int(node: Node, key: str, default: int, minimum: int = 1) -> int:
    value = _raw(node, key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DeployConfigError(f"context '{key}' must be a whole number, got {value!r}") from None
    if number < minimum or str(number) != str(value).strip():
        raise DeployConfigError(f"context '{key}' must be a whole number >= {minimum}, got {value!r}")
    return number


def _choice(node: Node, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = str(_raw(node, key, default)).strip()
    if value.lower() not in choices:
        raise DeployConfigError(f"context '{key}' must be one of {', '.join(choices)}, got {value!r}")
    return value.lower()


def registry_vendors(registry_file: Path = REGISTRY_FILE) -> tuple[str, ...] | None:
    """Vendor names in the connector registry's CONNECTORS literal, in its order, read without importing
    Lambda code."""
    try:
        tree = ast.parse(registry_file.read_text())
    except (OSError, SyntaxError):
        return None
    for node in ast.walk(tree):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == "CONNECTORS" and isinstance(value, ast.Dict):
            return tuple(k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return None


def known_vendors(registry_file: Path = REGISTRY_FILE) -> set[str] | None:
    """Vendor names in the connector registry's CONNECTORS literal, read without importing Lambda code."""
    names = registry_vendors(registry_file)
    return None if names is None else set(names)


# Every vendor of the connector registry, unless `-c vendors=...` names fewer: no list to keep in step.
DEFAULT_VENDORS: tuple[str, ...] = registry_vendors() or ()


def _vendors(node: Node) -> tuple[str, ...]:
    value = _raw(node, "vendors", list(DEFAULT_VENDORS))
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [v for v in text.split(",")]
        except ValueError:
            raise DeployConfigError(f"context 'vendors' is not a JSON list: {value!r}") from None
    if not isinstance(value, list) or not value:
        raise DeployConfigError('context \'vendors\' must be a non-empty list such as ["elevate","qualifio"]')
    vendors = tuple(str(v).strip() for v in value)
    if len(set(vendors)) != len(vendors):
        raise DeployConfigError(f"context 'vendors' repeats a vendor: {list(vendors)}")
    known = known_vendors()
    for vendor in vendors:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", vendor):
            raise DeployConfigError(f"context 'vendors': {vendor!r} is not a valid vendor name")
        if known is not None and vendor not in known:
            raise DeployConfigError(
                f"context 'vendors': {vendor!r} has no connector (known: {', '.join(sorted(known))})"
            )
    return vendors


def lambda_deps_problem(deps_dir: Path) -> str | None:
    """Why `deps_dir` is not a usable dependency layer for the Lambda runtime, or None if it is."""
    site = deps_dir / "python"
    if not site.is_dir() or not any(site.iterdir()):
        return (
            f"the Lambda dependency layer {deps_dir} is missing or empty. Run `make lambda-deps` first "
            f"(or pass `-c skipLambdaDeps=true` for a template-only synth that cannot be deployed)"
        )
    want = f"cpython-{LAMBDA_PYTHON.replace('.', '')}-{LAMBDA_ARCH}-linux-gnu"
    for ext in site.rglob("*.so"):
        tag = re.search(r"cpython-\d+-[a-z0-9_]+-linux-gnu", ext.name)
        if tag and tag.group(0) != want:
            return (
                f"the Lambda dependency layer {deps_dir} was built for {tag.group(0)} ({ext.name}), "
                f"but the functions run {want}. Rebuild it: `make lambda-deps`"
            )
    return None


def load_config(node: Node) -> Config:
    stage = str(_raw(node, "stage", "dev")).strip()
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", stage):
        raise DeployConfigError(
            f"context 'stage' must be 1-20 of a-z, 0-9, '-' (starting with a letter), got {stage!r}"
        )

    bus = str(_raw(node, "eventBusName", "default")).strip()
    if bus.startswith("arn:"):
        raise DeployConfigError("context 'eventBusName' takes the bus name, not its ARN")

    log_retention = _int(node, "logRetentionDays", 90)
    if log_retention not in _LOG_RETENTION:
        raise DeployConfigError(
            f"context 'logRetentionDays' must be one of {', '.join(map(str, _LOG_RETENTION))}, got {log_retention}"
        )

    deps_dir = Path(str(_raw(node, "lambdaDepsDir", "build/lambda-deps")))
    if not deps_dir.is_absolute():
        deps_dir = REPO_ROOT / deps_dir
    skip_deps = _bool(node, "skipLambdaDeps", False)
    if not skip_deps:
        problem = lambda_deps_problem(deps_dir)
        if problem:
            raise DeployConfigError(problem)

    code_dir = _code_asset(node, skip_deps)

    retention_days = _int(node, "retentionDays", 30)
    # Three years: roughly how long a data subject or a supervisory authority can still question an answer.
    proof_retention_days = _int(node, "proofRetentionDays", 1095)
    if proof_retention_days < retention_days:
        raise DeployConfigError("context 'proofRetentionDays' must not be shorter than 'retentionDays'")

    topic = _raw(node, "alarmTopicArn", None)
    if topic is not None and not str(topic).startswith("arn:"):
        raise DeployConfigError(f"context 'alarmTopicArn' must be an SNS topic ARN, got {topic!r}")

    package_url_seconds = _int(node, "packageUrlSeconds", 3600, minimum=60)
    if package_url_seconds > MAX_PACKAGE_URL_SECONDS:
        raise DeployConfigError(
            f"context 'packageUrlSeconds' must be at most {MAX_PACKAGE_URL_SECONDS} (12 h): a link signed by the "
            "intake role's temporary credentials cannot outlive them (SECURITY.md)"
        )

    return Config(
        stage=stage,
        vendors=_vendors(node),
        event_bus_name=bus,
        crm_event_source=str(_raw(node, "crmEventSource", "crm")),
        crm_detail_type=str(_raw(node, "crmDetailType", "Data Subject Request")),
        retention_days=retention_days,
        proof_retention_days=proof_retention_days,
        noncurrent_version_days=_int(node, "noncurrentVersionDays", 7),
        access_log_retention_days=_int(node, "accessLogRetentionDays", 365),
        log_retention_days=log_retention,
        approval_mode=_choice(node, "approvalMode", "auto", ("auto", "manual")),
        require_approval=_choice(node, "requireApproval", "none", ("none", "erase", "all")),
        log_level=_choice(node, "logLevel", "info", ("debug", "info", "warning", "error")).upper(),
        retain_data=_choice(node, "removalPolicy", "retain", ("retain", "destroy")) == "retain",
        api_gateway_cloudwatch_role=_bool(node, "apiGatewayCloudWatchRole", True),
        alarm_topic_arn=str(topic) if topic is not None else None,
        skip_lambda_deps=skip_deps,
        lambda_deps_dir=deps_dir,
        package_url_seconds=package_url_seconds,
        controller_text=_controller_text(node),
        vendor_limits=_vendor_limits(node, _vendors(node)),
        callbacks=_bool(node, "callbacks", True),
        code_asset_dir=code_dir,
        bulk_max_concurrency=min(_int(node, "bulkMaxConcurrency", 10), 1000),
    )


def _vendor_limits(node: Node, vendors: tuple[str, ...]) -> str:
    """Context `vendorLimits`: {"<vendor>": {"jobs": N, "callsPerSecond": R}} (JSON text or an object), for
    enabled vendors only; checked here so that a typo fails the synth, not the first request."""
    import json

    from core.errors import ConfigError
    from core.limits import parse_limits

    value = _raw(node, "vendorLimits", None)
    if value is None:
        return ""
    try:
        parsed = parse_limits(value, where="vendorLimits")
    except ConfigError as exc:
        raise DeployConfigError(f"context {exc.message.removeprefix('dsrflow: ')}") from None
    unknown = sorted(set(parsed) - set(vendors))
    if unknown:
        raise DeployConfigError(
            f"context 'vendorLimits' names vendors that are not enabled: {', '.join(unknown)} (enabled: {', '.join(vendors)})"
        )
    return json.dumps(
        {v: limit.model_dump(by_alias=True, exclude_none=True) for v, limit in sorted(parsed.items())},
        separators=(",", ":"),
    )


def _code_asset(node: Node, skip_deps: bool) -> Path:
    """The precompiled code asset (context codeAssetDir, its stamp next to it as <dir>.sha256) if it is the
    current copy of functions/. A deployable synth refuses a missing or stale one: a Lambda shipped without
    bytecode compiles every module on every cold start, and a stale copy would deploy old code. A template-only
    synth (skipLambdaDeps: nothing is deployed) falls back to functions/ and says so."""
    asset = Path(str(_raw(node, "codeAssetDir", "build/functions-asset")))
    if not asset.is_absolute():
        asset = REPO_ROOT / asset
    problem = code_asset.problem(asset, asset.with_name(asset.name + ".sha256"), FUNCTIONS_DIR)
    if problem is None:
        return asset
    if not skip_deps:
        raise DeployConfigError(problem)
    print(
        f"dsrflow: {problem}. This template-only synth (skipLambdaDeps) ships functions/ without bytecode.",
        file=sys.stderr,
    )
    return FUNCTIONS_DIR


def _controller_text(node: Node) -> Path | None:
    value = _raw(node, "controllerText", None)
    if value is None:
        return None
    path = Path(str(value))
    if not path.is_absolute():
        path = REPO_ROOT / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeployConfigError(f"context 'controllerText': cannot read {path} ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeployConfigError(f"context 'controllerText': {path} is not UTF-8 text") from None
    if not text.strip():
        raise DeployConfigError(f"context 'controllerText': {path} is empty")
    if len(data) > MAX_CONTROLLER_TEXT_BYTES:
        raise DeployConfigError(
            f"context 'controllerText': {path} has {len(data)} bytes, more than {MAX_CONTROLLER_TEXT_BYTES}"
        )
    return path


def log_retention(days: int) -> logs.RetentionDays:
    return logs.RetentionDays[_LOG_RETENTION[days]]
