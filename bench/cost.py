"""What one request costs on AWS at list prices, from the counts bench_workflow measures (docs/COST.md).

Prices: US East (N. Virginia), us-east-1, on-demand list prices as of 2026-12, without the free tier, from
https://aws.amazon.com/pricing/ (each service's page is named next to its constants). eu-west-1 charges the
same for Step Functions, Lambda and S3 requests; check the pages before quoting another region.

Measured per request (bench_workflow): state transitions, Lambda invocations and how long each ran
in-process, S3 requests by operation, DynamoDB request units, EventBridge events, bytes left in the bucket.
Assumed, and named as such below: CloudWatch Logs bytes; secret reads (an upper bound: every vendor-facing
invocation reads its secret, with a KMS Decrypt behind it); and a conservative floor for each invocation's
billed duration (the local run reaches its vendors and AWS in process, so its durations are shorter than
Lambda's). Figures only: nothing here asserts.
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# --- list prices (USD, us-east-1, as of 2026-12) -----------------------------------------------------------
PRICES_AS_OF = "2026-12"
PRICES_REGION = "us-east-1"
# https://aws.amazon.com/step-functions/pricing/ (standard workflows)
SFN_PER_1K_TRANSITIONS = 0.025
# https://aws.amazon.com/lambda/pricing/
LAMBDA_PER_1M_REQUESTS = 0.20
LAMBDA_PER_GB_SECOND = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
# https://aws.amazon.com/s3/pricing/ (S3 Standard)
S3_PER_1K_TIER1 = 0.005  # PUT, COPY, POST, LIST (and the multipart calls: Create, UploadPart, Complete)
S3_PER_1K_TIER2 = 0.0004  # GET, HEAD and the others (DELETE and AbortMultipartUpload are free)
S3_PER_GB_MONTH = 0.023
# https://aws.amazon.com/dynamodb/pricing/on-demand/
# On-demand prices since AWS halved them in November 2024.
DDB_PER_1M_WRITE_UNITS = 0.625
DDB_PER_1M_READ_UNITS = 0.125
# https://aws.amazon.com/kms/pricing/
KMS_PER_10K_REQUESTS = 0.03
# https://aws.amazon.com/eventbridge/pricing/ (custom events, per 64 KB chunk)
EVENTBRIDGE_PER_1M_EVENTS = 1.00
# https://aws.amazon.com/cloudwatch/pricing/ (Logs, standard ingestion)
LOGS_PER_GB_INGESTED = 0.50
# https://aws.amazon.com/api-gateway/pricing/ (REST API, first 333 million a month)
APIGW_PER_1M_REST_CALLS = 3.50
# https://aws.amazon.com/secrets-manager/pricing/ (API calls; the $0.40 per secret-month is fixed, not counted)
SECRETS_PER_10K_CALLS = 0.05

PER = 10_000  # the second column: requests

S3_TIER1_OPS = frozenset(
    {"PutObject", "CopyObject", "PostObject", "ListObjectsV2", "ListObjects", "CreateMultipartUpload", "UploadPart"}
    | {"CompleteMultipartUpload", "ListMultipartUploads", "ListParts", "UploadPartCopy"}
)
S3_FREE_OPS = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})

# --- assumptions (not measured by the local engine) ---------------------------------------------------------
# Lambda: a floor per invocation's billed duration for the conservative total: a cold start's init (billed
# since 2025) plus real round trips to the vendor, S3 and DynamoDB. The measured figure is the in-process time.
CONSERVATIVE_SECONDS = 2.0
# CloudWatch Logs: Lambda's START/END/REPORT lines and a few Powertools JSON lines per invocation, and one
# Step Functions log entry per history event (the state machine logs ALL, without execution data).
LOG_BYTES_PER_INVOCATION = 2048
LOG_BYTES_PER_HISTORY_EVENT = 600
VENDOR_FACING = ("submit", "check", "collect")  # read their vendor's secret (cached 300 s per container)
GB = 1024**3


@dataclass(frozen=True)
class Usage:
    """One request's measured counts."""

    transitions: int
    history_events: int
    invocations: tuple[tuple[str, float], ...]  # (function role, seconds it ran), workflow and API alike
    s3_calls: Counter[str]
    ddb_write_units: float
    ddb_read_units: float
    events: int  # EventBridge PutEvents entries
    api_calls: int  # API Gateway calls to intake (the request, approvals)
    stored_bytes: int  # what the request leaves in the bucket


def memory_mb() -> dict[str, int]:
    """Each function's memory as deployed: infra/functions.py SIZING, read from its source (importing it would
    start aws-cdk's jsii runtime)."""
    tree = ast.parse((ROOT / "infra" / "functions.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "SIZING":
            if not isinstance(node.value, ast.Dict):
                break
            return {
                ast.literal_eval(k): ast.literal_eval(v.args[0])
                for k, v in zip(node.value.keys, node.value.values, strict=True)
                if k is not None and isinstance(v, ast.Call)
            }
    raise LookupError("infra/functions.py has no SIZING: update bench/cost.py")


def architecture() -> str:
    """arm64 or x86_64, from infra/config.py's LAMBDA_ARCH (read from its source, as above)."""
    for node in ast.parse((ROOT / "infra" / "config.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "LAMBDA_ARCH" for t in node.targets
        ):
            return "arm64" if ast.literal_eval(node.value) == "aarch64" else "x86_64"
    raise LookupError("infra/config.py has no LAMBDA_ARCH: update bench/cost.py")


def gb_seconds(invocations: Iterable[tuple[str, float]], floor: float = 0.0) -> float:
    """Memory (GB) x billed duration (rounded up to the millisecond, at least `floor` seconds), summed."""
    memory = memory_mb()
    return sum(memory[role] / 1024 * max(floor, math.ceil(seconds * 1000) / 1000) for role, seconds in invocations)


def s3_requests(calls: Counter[str]) -> tuple[int, int]:
    """(tier-1, tier-2) request counts: PUT/COPY/POST/LIST-priced and GET-priced."""
    tier1 = sum(n for op, n in calls.items() if op in S3_TIER1_OPS)
    tier2 = sum(n for op, n in calls.items() if op not in S3_TIER1_OPS and op not in S3_FREE_OPS)
    return tier1, tier2


def lines(u: Usage, floor: float = 0.0) -> list[tuple[str, str, float]]:
    """(service, quantity per request, USD per request) for every service counted."""
    tier1, tier2 = s3_requests(u.s3_calls)
    invocations = len(u.invocations)
    gbs = gb_seconds(u.invocations, floor)
    secret_reads = sum(1 for role, _ in u.invocations if role in VENDOR_FACING)  # upper bound: no cache hit
    # KMS: one Decrypt per secret read (the secrets are encrypted with the stack's key). The S3 bucket key and
    # DynamoDB's cached table key spread their KMS calls over every request in a period: not counted per request.
    kms = secret_reads
    log_bytes = invocations * LOG_BYTES_PER_INVOCATION + u.history_events * LOG_BYTES_PER_HISTORY_EVENT
    arch = architecture()
    return [
        ("Step Functions transitions", f"{u.transitions}", u.transitions * SFN_PER_1K_TRANSITIONS / 1000),
        ("Lambda requests", f"{invocations}", invocations * LAMBDA_PER_1M_REQUESTS / 1e6),
        (f"Lambda duration ({arch})", f"{gbs:.3f} GB-s", gbs * LAMBDA_PER_GB_SECOND[arch]),
        ("S3 PUT/COPY/POST/LIST", f"{tier1}", tier1 * S3_PER_1K_TIER1 / 1000),
        ("S3 GET and other", f"{tier2}", tier2 * S3_PER_1K_TIER2 / 1000),
        ("DynamoDB write units", f"{u.ddb_write_units:g}", u.ddb_write_units * DDB_PER_1M_WRITE_UNITS / 1e6),
        ("DynamoDB read units", f"{u.ddb_read_units:g}", u.ddb_read_units * DDB_PER_1M_READ_UNITS / 1e6),
        ("API Gateway REST calls", f"{u.api_calls}", u.api_calls * APIGW_PER_1M_REST_CALLS / 1e6),
        ("EventBridge events", f"{u.events}", u.events * EVENTBRIDGE_PER_1M_EVENTS / 1e6),
        ("KMS (secret decrypts, bound)", f"{kms}", kms * KMS_PER_10K_REQUESTS / 10_000),
        ("Secrets Manager (upper bound)", f"{secret_reads}", secret_reads * SECRETS_PER_10K_CALLS / 10_000),
        ("CloudWatch Logs (assumed)", f"{log_bytes / 1024:.0f} KiB", log_bytes / GB * LOGS_PER_GB_INGESTED),
    ]


def total(u: Usage, floor: float = 0.0) -> float:
    return sum(usd for _, _, usd in lines(u, floor))


def report(u: Usage, label: str) -> list[str]:
    """The cost table for one request, per request and per PER requests, with each service's share."""
    rows = lines(u)
    whole = sum(usd for _, _, usd in rows)
    out = [
        f"cost at list prices ({PRICES_REGION}, as of {PRICES_AS_OF}, no free tier): {label}",
        f"  {'service':<30} {'per request':>14} {'USD/request':>12} {f'USD/{PER:,}':>11} {'share':>6}",
    ]
    for name, quantity, usd in rows:
        out.append(f"  {name:<30} {quantity:>14} {usd:>12.7f} {usd * PER:>11.4f} {usd / whole:>6.1%}")
    out.append(f"  {'total':<30} {'':>14} {whole:>12.7f} {whole * PER:>11.4f} {1:>6.0%}")
    invoked = len(u.invocations)
    measured = sum(s for _, s in u.invocations)
    careful = total(u, CONSERVATIVE_SECONDS)
    out.append(
        f"  Lambda time measured in process: {measured:.2f} s over {invoked} invocations "
        f"(mean {measured / max(invoked, 1) * 1000:.0f} ms); billed at least {CONSERVATIVE_SECONDS:g} s each "
        f"(assumed: cold start, real round trips): {gb_seconds(u.invocations, CONSERVATIVE_SECONDS):.1f} GB-s, "
        f"total {careful:.6f} USD/request = {careful * PER:.2f} USD/{PER:,} ({careful / whole:.2f}x)"
    )
    stored = u.stored_bytes / GB * S3_PER_GB_MONTH
    out.append(
        f"  and each month it is kept: {u.stored_bytes:,} bytes in S3 = {stored:.9f} USD/request, "
        f"{stored * PER:.6f} USD/{PER:,} (the simulators' archives are tiny: real archive months are not counted)"
    )
    return out


__all__ = ["PER", "Usage", "gb_seconds", "lines", "report", "s3_requests", "total"]
