"""The Lambda functions against the runtime contract in ARCHITECTURE.md."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.config import REPO_ROOT

pytestmark = pytest.mark.slow

HANDLERS = (
    "intake",
    "submit",
    "check",
    "collect",
    "package",
    "finalize",
    "approval",
    "record",
    "park",
    "callback",
    "sweep",
    "bulk",
    "bulk_item",
)


def architecture_env_table() -> dict[str, set[str]]:
    """{variable: functions that must have it} from ARCHITECTURE.md's Environment table (local-only rows out)."""
    text = (REPO_ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("### Environment", 1)[1].split("\n### ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or "`" not in cells[0]:
            continue
        if "local only" in cells[2] or cells[1].endswith("(optional)"):  # optional: set by a context key only
            continue
        users = set(HANDLERS) if cells[1] == "all" else {u.strip() for u in cells[1].split(",")}
        assert users <= set(HANDLERS), f"unknown function in ARCHITECTURE.md: {cells[1]}"
        for var in re.findall(r"`([A-Z_]+)`", cells[0]):
            table[var] = users
    assert len(table) >= 8, "the Environment table of ARCHITECTURE.md was not found or changed shape"
    return table


def test_every_handler_has_one_function_on_the_pinned_runtime(synth):
    functions = synth.resources("AWS::Lambda::Function")
    assert len(functions) == len(HANDLERS)
    (layer_id, _) = synth.one("AWS::Lambda::LayerVersion")
    for name in HANDLERS:
        _, fn = synth.function(name)
        props = fn["Properties"]
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Layers"] == [{"Ref": layer_id}]


def test_dependency_layer_matches_the_runtime(synth):
    _, layer = synth.one("AWS::Lambda::LayerVersion")
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


@pytest.mark.parametrize("name", HANDLERS)
def test_handler_exists_in_the_code_asset(name):
    """The Handler setting points at a module that defines `handler` (a typo would only fail in AWS)."""
    path = REPO_ROOT / "functions" / "handlers" / f"{name}.py"
    if not path.exists():
        pytest.fail(f"{path} is missing: the {name} function's handler would not import")
    tree = ast.parse(path.read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    assert "handler" in defined


def test_functions_log_to_their_own_group_with_retention(synth):
    groups = synth.resources("AWS::Logs::LogGroup")
    for name in HANDLERS:
        _, fn = synth.function(name)
        group_ref = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert groups[group_ref]["Properties"]["RetentionInDays"] == 90
    for lid, group in groups.items():
        assert "RetentionInDays" in group["Properties"], f"log group {lid} keeps logs forever"


def test_sizing(synth):
    collect = synth.function("collect")[1]["Properties"]
    assert collect["Timeout"] == 900 and collect["MemorySize"] >= 1769
    # The zip spool (core/verify.py) lives in /tmp: the limit must fit with room for the Bloomreach spool.
    spool = int(collect["Environment"]["Variables"]["ARCHIVE_SPOOL_LIMIT_MB"])
    assert collect["EphemeralStorage"]["Size"] >= spool + 400
    for name in HANDLERS:
        props = synth.function(name)[1]["Properties"]
        assert props["Timeout"] <= 900
        if name == "intake":
            assert props["Timeout"] <= 29, "API Gateway gives up after 29 s"


# Set on every function but not part of the runtime contract: PII guards (SECURITY.md), fixed to "false".
PII_GUARDS = {"POWERTOOLS_LOGGER_LOG_EVENT", "POWERTOOLS_TRACER_CAPTURE_RESPONSE"}


def test_environment_matches_architecture_md(synth):
    table = architecture_env_table()
    for name in HANDLERS:
        env = synth.function(name)[1]["Properties"]["Environment"]["Variables"]
        for var, users in table.items():
            if name in users:
                assert var in env, f"{name} lacks {var} (ARCHITECTURE.md, Environment)"
        assert "DSRFLOW_TIME_SCALE" not in env, "the time-scale is for the local engine only"
        # Exactly the table's variables for this function: nothing another function needs leaks in (finalize
        # has no VENDOR_SECRETS, only intake has STATE_MACHINE_ARN, only finalize EVENT_BUS_NAME, ...).
        expected = {var for var, users in table.items() if name in users} | PII_GUARDS
        assert set(env) == expected, f"{name}: extra {set(env) - expected}, missing {expected - set(env)}"


def test_environment_values(synth):
    bucket_id, _ = synth.archive_bucket()
    key_id, _ = synth.archive_key()
    sm_id, _ = synth.dsr_state_machine()
    expected_secrets = {v: f"dsrflow/dev/vendors/{v}" for v in ("elevate", "bloomreach", "qualifio")}
    for name in HANDLERS:
        env = synth.function(name)[1]["Properties"]["Environment"]["Variables"]
        assert env["ARCHIVE_BUCKET"] == {"Ref": bucket_id}
        assert env["ARCHIVE_KMS_KEY_ID"] == {"Fn::GetAtt": [key_id, "Arn"]}
        assert env["POWERTOOLS_SERVICE_NAME"] == "dsrflow"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "dsrflow"
        assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
        # PII guards: no event logging, no handler responses in X-Ray.
        assert env["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"
        assert env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
        if "VENDOR_SECRETS" in env:
            assert json.loads(env["VENDOR_SECRETS"]) == expected_secrets
        assert ("APPROVAL_MODE" in env) == (name in ("submit", "check", "collect"))
        if "APPROVAL_MODE" in env:
            assert env["APPROVAL_MODE"] == "auto"
    intake = synth.function("intake")[1]["Properties"]["Environment"]["Variables"]
    assert intake["STATE_MACHINE_ARN"] == {"Ref": sm_id}
    finalize = synth.function("finalize")[1]["Properties"]["Environment"]["Variables"]
    assert finalize["EVENT_BUS_NAME"] == "default"
    for name in ("submit", "check", "collect"):
        assert synth.function(name)[1]["Properties"]["Environment"]["Variables"]["SECRETS_MAX_AGE"] == "300"


def test_code_asset_is_the_functions_folder_precompiled(synth):
    """The staged code asset is functions/ (no stray bytecode of the machine that built it) plus one
    unchecked-hash .pyc per module for the Lambda's Python (make functions-asset, infra/code_asset.py)."""
    from infra.config import LAMBDA_PYTHON

    _, fn = synth.function("intake")
    asset = synth.outdir / f"asset.{fn['Properties']['Code']['S3Key'].removesuffix('.zip')}"
    assert asset.is_dir(), f"staged asset {asset} not found"
    staged = {p.relative_to(asset) for p in asset.rglob("*") if p.is_file()}
    tag = f"cpython-{LAMBDA_PYTHON.replace('.', '')}"
    source = {
        p.relative_to(REPO_ROOT / "functions")
        for p in (REPO_ROOT / "functions").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and ".mypy_cache" not in p.parts
    }
    compiled = {p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc" for p in source if p.suffix == ".py"}
    assert Path("templates", "controller.txt") in staged  # the access package's default controller text
    assert staged == source | compiled
    for pyc in compiled:
        flags = int.from_bytes((asset / pyc).read_bytes()[4:8], "little")
        assert flags == 0b01, f"{pyc}: not an unchecked-hash .pyc (flags {flags})"  # hash-based, not checked
    assert all(Path("handlers", f"{h}.py") in staged for h in HANDLERS)


def _role_of(synth, name: str) -> str:
    return synth.function(name)[1]["Properties"]["Role"]["Fn::GetAtt"][0]


def test_only_vendor_tasks_read_secrets_and_only_the_vendor_secrets(synth):
    """core/secrets.py calls GetSecretValue (Powertools get_secret) and nothing else, in the functions that build
    connectors (handlers/runtime.connector_for: submit, check, collect). intake only lists the enabled vendors."""
    secret_refs = sorted(({"Ref": k} for k in synth.resources("AWS::SecretsManager::Secret")), key=str)
    for name in HANDLERS:
        statements = synth.role_statements(_role_of(synth, name))
        reads = [s for s in statements if any(a.startswith("secretsmanager:") for a in synth.actions(s))]
        if name in ("submit", "check", "collect"):
            assert len(reads) == 1, name
            assert synth.actions(reads[0]) == ["secretsmanager:GetSecretValue"], name
            assert sorted(reads[0]["Resource"], key=str) == secret_refs
        else:
            assert reads == [], f"{name} must not read vendor credentials"


def test_key_policy_grants_nothing_to_the_functions(synth):
    """The functions' KMS rights are in their IAM policies only (pinned below), not in the key policy."""
    roles = {_role_of(synth, name) for name in HANDLERS}
    _, key = synth.archive_key()
    for statement in key["Properties"]["KeyPolicy"]["Statement"]:
        principals = statement["Principal"].get("AWS", [])
        principals = principals if isinstance(principals, list) else [principals]
        named = {p["Fn::GetAtt"][0] for p in principals if isinstance(p, dict) and "Fn::GetAtt" in p}
        assert not named & roles, f"key policy statement names function roles: {sorted(named & roles)}"


# KMS on the stack's key, per role: SSE-KMS (bucket key) needs GenerateDataKey to write and Decrypt to read and
# to complete a multipart upload; the vendor secrets use the same key (Decrypt); intake also sends to the
# KMS-encrypted dead-letter queue (GenerateDataKey, Decrypt).
KMS_ACTIONS = {
    "intake": {"kms:Decrypt", "kms:GenerateDataKey"},  # reads request.json, manifests; puts request.json; DLQ
    "submit": {"kms:Decrypt", "kms:GenerateDataKey"},  # reads request.json, outcome.json; submission.json
    "check": {"kms:Decrypt", "kms:GenerateDataKey"},  # reads request.json, its vendor secret; vendor-said
    "collect": {"kms:Decrypt", "kms:GenerateDataKey"},  # multipart archives, outcome.json; vendor secret
    "package": {"kms:Decrypt", "kms:GenerateDataKey"},  # reads the export archives; puts the package (multipart)
    "finalize": {"kms:Decrypt", "kms:GenerateDataKey"},  # puts the manifest copies; reads the last attempt's
    "approval": {"kms:Decrypt"},  # reads the export's outcome an erase depends on (never request.json)
    "record": {"kms:GenerateDataKey"},
    "park": set(),  # no S3: its waiter sits in the ledger's table (only with vendorLimits)
    "callback": set(),  # no S3: the callback item sits in the ledger's table  # puts a failed or denied action's outcome.json; reads nothing
    "sweep": set(),  # no object: only the ledger's kms:Decrypt through DynamoDB (test_infra_watch.py)
    "bulk": {"kms:Decrypt", "kms:GenerateDataKey"},  # reads the batch file, rows; puts the index, result file
    "bulk_item": {"kms:Decrypt", "kms:GenerateDataKey"},  # reads its line, request.json; puts request.json, row
}


def _via_dynamodb(statement: dict) -> bool:
    """The ledger's KMS statement: kms:Decrypt through DynamoDB only (infra/functions.connect_ledger)."""
    via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
    return isinstance(via, dict) and "dynamodb." in json.dumps(via)


@pytest.mark.parametrize("name", HANDLERS)
def test_kms_access_is_exactly_what_the_handler_does(synth, name):
    key_id, _ = synth.archive_key()
    granted: set[str] = set()
    for statement in synth.role_statements(_role_of(synth, name)):
        kms_actions = [a for a in synth.actions(statement) if a.startswith("kms:")]
        if not kms_actions or kms_actions == ["kms:GenerateMac"]:  # bulk intake's HMAC key: test_infra_bulk.py
            continue
        assert statement["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}, f"{name}: KMS beyond the stack's key"
        if _via_dynamodb(statement):
            continue  # the ledger's own grant: pinned in test_infra_ledger.py
        assert "Condition" not in statement, f"{name}: a condition (e.g. kms:ViaService) would break a use"
        granted.update(kms_actions)
    assert granted == KMS_ACTIONS[name]


# What each handler does with the bucket (core/store.py, core/archive_store.py, core/vendor_said.py,
# core/tasks.py), action by action, as exact key patterns. Written out here, not imported from infra/.
REQUEST = "requests/*/request.json"
MANIFEST = "requests/*/manifest.json"
PROOF = "proof/*/manifest.json"
EXPORT_OUTCOME = "requests/*/*/export/outcome.json"
SUBMISSION = "requests/*/*/*/submission*.json"
OUTCOME = "requests/*/*/*/outcome.json"
ATTEMPT = "proof/*/attempts/*/manifest.json"
VENDOR_SAID = "requests/*/*/*/vendor-said/*"
EXPORT_FOLDER = "requests/*/*/export/*"
ERASE_FOLDER = "requests/*/*/erase/*"
PACKAGE = "requests/*/package/*"
S3_OBJECT_ACTIONS = {
    # POST /requests: request.json; GET: the manifests; retry: the last attempt's manifest; cancel: outcomes and
    # submission records read, the cancelled manifest's copies written; GET .../package: the package HEADed and
    # a presigned GET to it signed (the link is this role's).
    "intake": {
        "s3:GetObject": {REQUEST, MANIFEST, PROOF, ATTEMPT, OUTCOME, SUBMISSION, PACKAGE},
        "s3:PutObject": {REQUEST, MANIFEST, PROOF, ATTEMPT, "bulk/api/*"},  # POST /requests/bulk: the body
    },
    "submit": {"s3:GetObject": {REQUEST, EXPORT_OUTCOME, SUBMISSION}, "s3:PutObject": {SUBMISSION, VENDOR_SAID}},
    "check": {"s3:GetObject": {REQUEST}, "s3:PutObject": {VENDOR_SAID}},
    "collect": {
        "s3:GetObject": {REQUEST, EXPORT_FOLDER, ERASE_FOLDER},
        "s3:PutObject": {EXPORT_FOLDER, ERASE_FOLDER},
        "s3:AbortMultipartUpload": {EXPORT_FOLDER, ERASE_FOLDER},
    },
    # The access package: export archives read (ranged), the earlier attempt's manifest, the zip written.
    "package": {
        "s3:GetObject": {EXPORT_FOLDER, MANIFEST, PROOF, ATTEMPT},
        "s3:PutObject": {PACKAGE},
        "s3:AbortMultipartUpload": {PACKAGE},
    },
    "finalize": {"s3:GetObject": {MANIFEST, PROOF, ATTEMPT}, "s3:PutObject": {MANIFEST, PROOF, ATTEMPT}},
    "approval": {"s3:GetObject": {EXPORT_OUTCOME}},
    "record": {"s3:PutObject": {OUTCOME}},
    "park": {},
    "callback": {},
    "sweep": {},  # the deadline watch reads the ledger only
    # Bulk intake (core/bulk.py): the coordinator never touches requests/; one line does what POST /requests does.
    "bulk": {
        "s3:GetObject": {"bulk/incoming/*", "bulk/api/*", "bulk/work/*/index.json", "bulk/work/*/rows/*"},
        "s3:PutObject": {"bulk/work/*/index.json", "bulk/results/*"},
    },
    "bulk_item": {
        "s3:GetObject": {"bulk/incoming/*", "bulk/api/*", REQUEST},
        "s3:PutObject": {REQUEST, "bulk/work/*/rows/*"},
    },
}
# s3:ListBucket: None = on the bucket without condition (a missing object must answer 404, which the code relies
# on); a set = only those prefixes (s3:prefix), for a function that lists and reads nothing.
LIST_BUCKET: dict[str, set[str] | None] = {
    "intake": None,
    "submit": None,
    "check": None,
    "collect": None,
    "package": None,
    "finalize": {"requests/*/*/*/vendor-said/"},
    "approval": None,
    "record": {"requests/*/*/*/vendor-said/"},
    "bulk": {"bulk/work/*/rows/"},
    "bulk_item": None,
}


def _object_pattern(bucket_id: str, resource) -> str:
    """'requests/*/request.json' from {"Fn::Join": ["", [<bucket ARN>, "/requests/*/request.json"]]}."""
    parts = resource["Fn::Join"][1]
    assert resource["Fn::Join"][0] == "" and parts[0] == {"Fn::GetAtt": [bucket_id, "Arn"]}, resource
    assert len(parts) == 2 and parts[1].startswith("/"), resource
    return parts[1][1:]


def _s3_grants(synth, name: str) -> tuple[dict[str, set[str]], list[dict]]:
    bucket_id, _ = synth.archive_bucket()
    granted: dict[str, set[str]] = {}
    lists = []
    for statement in synth.role_statements(_role_of(synth, name)):
        s3_actions = [a for a in synth.actions(statement) if a.startswith("s3:")]
        if not s3_actions:
            continue
        if "s3:ListBucket" in s3_actions:
            assert s3_actions == ["s3:ListBucket"], f"{name}: ListBucket merged with {s3_actions}"
            assert statement["Resource"] == {"Fn::GetAtt": [bucket_id, "Arn"]}
            lists.append(statement)
            continue
        assert "Condition" not in statement, name
        # CDK merges statements that share their actions or resources: one statement may name several of each.
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in s3_actions:
            granted.setdefault(action, set()).update(_object_pattern(bucket_id, r) for r in resources)
    return granted, lists


@pytest.mark.parametrize("name", HANDLERS)
def test_s3_access_is_exactly_what_the_handler_does(synth, name):
    granted, lists = _s3_grants(synth, name)
    assert granted == S3_OBJECT_ACTIONS[name]
    if not S3_OBJECT_ACTIONS[name]:  # no S3 at all, not even ListBucket
        assert lists == [], name
        return
    assert len(lists) == 1, f"{name}: expected one ListBucket statement"
    expected = LIST_BUCKET[name]
    if expected is None:
        assert "Condition" not in lists[0], f"{name}: GetObject of a missing key needs ListBucket unconditioned"
    else:
        prefixes = lists[0]["Condition"]["StringLike"]["s3:prefix"]
        assert set(prefixes if isinstance(prefixes, list) else [prefixes]) == expected
        assert set(lists[0]["Condition"]) == {"StringLike"}


def test_no_function_may_delete_or_reconfigure_the_bucket(synth):
    allowed = {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket"}
    for name in HANDLERS:
        actions = {a for s in synth.role_statements(_role_of(synth, name)) for a in synth.actions(s)}
        assert {a for a in actions if a.startswith("s3:")} <= allowed, name


def test_the_keys_the_code_writes_and_reads_match_the_granted_patterns():
    """The patterns above against the real key functions (core/store.py, core/vendor_said.py), with IAM's
    wildcard (fnmatch: "*" spans "/" too): what each handler touches is granted, its neighbours are not."""
    from fnmatch import fnmatchcase

    from connectors.base import Action
    from core import vendor_said
    from core.store import archive_key, manifest_key, outcome_key, proof_key, request_key, submission_key

    def may(name: str, action: str, key: str) -> bool:
        return any(fnmatchcase(key, p) for p in S3_OBJECT_ACTIONS[name].get(action, set()))

    rid, vendor = "dsr-2026_01", "qualifio"
    said = f"{vendor_said.prefix(rid, vendor, 'erase')}check-20261124T100000000000Z.json"
    assert {a.value for a in Action} == {"export", "erase"}  # the action folders granted to collect
    for action in Action:
        a = action.value
        assert may("submit", "s3:GetObject", submission_key(rid, vendor, a))
        assert may("submit", "s3:PutObject", submission_key(rid, vendor, a))
        assert may("collect", "s3:GetObject", outcome_key(rid, vendor, a))
        assert may("collect", "s3:GetObject", submission_key(rid, vendor, a))
        for key in (archive_key(rid, vendor, a, "export.zip"), outcome_key(rid, vendor, a)):
            assert may("collect", "s3:PutObject", key) and may("collect", "s3:GetObject", key)
        assert may("collect", "s3:AbortMultipartUpload", archive_key(rid, vendor, a, "export.zip"))
        assert not may("submit", "s3:PutObject", outcome_key(rid, vendor, a))
    for name in ("submit", "check", "collect"):
        assert may(name, "s3:GetObject", request_key(rid)) and not may(name, "s3:PutObject", request_key(rid))
        assert may(name, "s3:PutObject", said)
        assert not may(name, "s3:PutObject", manifest_key(rid)) and not may(name, "s3:PutObject", proof_key(rid))
    assert may("submit", "s3:GetObject", outcome_key(rid, vendor, "export"))
    assert not may("submit", "s3:GetObject", archive_key(rid, vendor, "export", "export.zip"))
    assert not may("check", "s3:GetObject", outcome_key(rid, vendor, "export"))
    assert may("intake", "s3:PutObject", request_key(rid))
    assert may("record", "s3:PutObject", outcome_key(rid, vendor, "erase"))
    assert not may("record", "s3:PutObject", archive_key(rid, vendor, "export", "export.zip"))
    for key in (request_key(rid), manifest_key(rid), proof_key(rid)):
        assert may("intake", "s3:GetObject", key)
    assert not may("intake", "s3:GetObject", archive_key(rid, vendor, "export", "export.zip"))
    for key in (manifest_key(rid), proof_key(rid)):
        assert may("finalize", "s3:PutObject", key)
    assert not may("finalize", "s3:PutObject", request_key(rid))
    assert not may("finalize", "s3:GetObject", request_key(rid))
    (listed,) = LIST_BUCKET["finalize"] or set()
    assert fnmatchcase(vendor_said.prefix(rid, vendor, "export"), listed)


def test_state_machine_access_of_intake(synth):
    sm_id, _ = synth.dsr_state_machine()
    statements = synth.role_statements(_role_of(synth, "intake"))
    by_action: dict[str, Any] = {}
    for s in statements:
        for a in synth.actions(s):
            if a.startswith("states:"):
                found = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
                by_action[a] = [*by_action.get(a, []), *found]
    by_action = {a: r[0] if len(r) == 1 else r for a, r in by_action.items()}
    assert set(by_action) == {
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
    }
    # The DSR workflow, and the bulk state machine by name (POST /requests/bulk: test_infra_bulk.py).
    starts = by_action["states:StartExecution"]
    assert len(starts) == 2 and {"Ref": sm_id} in starts
    assert "stateMachine:dsrflow-dev-bulk" in json.dumps(starts)
    assert by_action["states:SendTaskSuccess"] == by_action["states:SendTaskFailure"] == {"Ref": sm_id}
    assert by_action["states:StopExecution"] == by_action["states:DescribeExecution"]
    # Only intake answers the approval gate or stops executions; the bulk parts only start them; park and
    # callback wake a branch waiting on a vendor's callback (core/callbacks.py), on this state machine only.
    for name in HANDLERS:
        if name != "intake":
            statements = synth.role_statements(_role_of(synth, name))
            states = {a for s in statements for a in synth.actions(s) if a.startswith("states:")}
            allowed = (
                {"states:SendTaskSuccess"}
                if name in ("park", "callback")
                else {"states:StartExecution"}
                if name in ("bulk", "bulk_item")
                else set()
            )
            assert states == allowed, name
            for s in statements:
                if "states:SendTaskSuccess" in synth.actions(s):
                    assert s["Resource"]["Fn::Join"][1][-1] == ":stateMachine:dsrflow-dev"
    parts = by_action["states:DescribeExecution"]["Fn::Join"][1]
    assert ":execution:" in parts and {"Fn::GetAtt": [sm_id, "Name"]} in parts and parts[-1] == ":*"


def test_lifecycle_events_go_to_the_configured_bus_only(synth):
    for name in ("intake", "approval", "finalize"):
        puts = [s for s in synth.role_statements(_role_of(synth, name)) if "events:PutEvents" in synth.actions(s)]
        assert len(puts) == 1, name
        assert puts[0]["Resource"]["Fn::Join"][1][-1] == ":event-bus/default"
    for name in ("submit", "check", "collect", "record"):
        assert not [s for s in synth.role_statements(_role_of(synth, name)) if "events:PutEvents" in synth.actions(s)]
