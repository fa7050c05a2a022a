"""`python -m local`: run a data-subject request end to end on the embedded local cloud.

    python -m local run --email ada.lovelace@example.com --actions export,erase [--vendors-file FILE]
        [--approval none|erase|all] [--answer ask|approve|deny]
    python -m local demo [--approval erase] [--answer ask|approve|deny]
    python -m local simulator elevate --port 8081
    python -m local serve [--port 8080] [--approval none|erase|all]   (the API on loopback HTTP: local/serve.py)
    python -m local openapi [--check]         (docs/openapi.json from handlers/intake.py's routes)

Without --vendors-file the bundled simulators are started and used, at the demo's time scale (one vendor day
per real second) unless --time-scale says otherwise. With --vendors-file the default is 1, and a file naming a
real vendor refuses any other: a compressed deadline would give up on a job still running at the vendor. Only
a file whose every `base_url` is on loopback (simulators) may compress time. The JSON `python -m local
simulator NAME` prints is a --vendors-file as it stands. --approval puts the deployment's approval gate
(REQUIRE_APPROVAL) in front of every erasure, or of every action: each one waits before anything is sent, and
the CLI answers it through the API as an operator would (POST /requests/{id}/approve or /deny), by asking on
the terminal (--answer ask, the default when stdin is one) or at once (approve, or deny). Exit code 0 only
when the request completed (a denied action is not a failure); 1 when it partially failed or failed (reasons
printed); 2 for a bad command line or request (an unknown vendor is refused with the known ones listed); 3 when
the request was still running at --timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from local.simulators import SIMULATORS, simulator_class
from local.simulators.data import SAMPLE

DEMO_TIME_SCALE = 86400.0  # one vendor day per real second: Elevate's 5-day window takes 5 s
EXIT_TIMEOUT = 3  # the request was still running when --timeout passed
# Who answers the approval gates from this CLI, and why when it denies on its own.
OPERATOR = "arn:aws:iam::123456789012:user/local"
APPROVAL_REASON = "approved by the local CLI"
DENIAL_REASON = "denied by the local CLI"


def _parse_ids(values: list[str]) -> dict[str, str]:
    ids = {}
    for item in values:
        id_type, sep, value = item.partition("=")
        if not sep or not id_type or not value:
            raise argparse.ArgumentTypeError(f"--customer-id wants TYPE=VALUE (e.g. registered=crm-1001), got {item!r}")
        ids[id_type] = value
    return ids


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    subject: dict[str, Any] = {}
    if args.email:
        subject["email"] = args.email
    if args.customer_key:
        subject["customer_key"] = args.customer_key
    if args.customer_id:
        subject["customer_ids"] = _parse_ids(args.customer_id)
    request: dict[str, Any] = {
        "actions": [a.strip() for a in args.actions.split(",") if a.strip()],
        "subject": subject,
    }
    if args.vendors:
        request["vendors"] = [v.strip() for v in args.vendors.split(",") if v.strip()]
    for field in ("request_id", "justification"):
        if getattr(args, field):
            request[field] = getattr(args, field)
    if args.dry_run:
        request["dry_run"] = True
    return request


@contextlib.contextmanager
def vendor_credentials(
    args: argparse.Namespace, wanted: list[str] | None, *, real_time_only: bool = False
) -> Iterator[dict[str, Any]]:
    """The vendors' credentials JSON: from --vendors-file, or from simulators started for this run.

    `real_time_only`: refuse a time scale other than 1 when the file names a vendor not on loopback."""
    if args.vendors_file:
        try:
            creds = json.loads(Path(args.vendors_file).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(_usage(f"--vendors-file {args.vendors_file}: {exc}")) from None
        if not isinstance(creds, dict) or not creds:
            raise SystemExit(_usage("--vendors-file must hold a JSON object {vendor: credentials, ...}"))
        unknown = sorted(set(creds) - set(SIMULATORS))
        if unknown:
            raise SystemExit(
                _usage(
                    f"--vendors-file {args.vendors_file}: {', '.join(map(repr, unknown))} is not a known vendor "
                    f"(known: {', '.join(sorted(SIMULATORS))})"
                )
            )
        real = real_vendors(creds)
        if real and real_time_only and args.time_scale != 1:
            raise SystemExit(
                _usage(
                    f"--time-scale {args.time_scale:g} with --vendors-file naming a real vendor ({', '.join(real)}): "
                    "a real vendor's jobs run in real time, and a compressed deadline would give up on a job still "
                    "running there, orphaning it. Drop --time-scale (1 is the default with --vendors-file); "
                    "compressed time is for simulators on loopback only"
                )
            )
        yield creds
        return
    # A name no simulator has: start them all, so that intake refuses it (400) with the known vendors listed.
    if wanted is not None and not set(wanted) <= set(SIMULATORS):
        wanted = None
    names = [n for n in SIMULATORS if wanted is None or n in wanted]
    with contextlib.ExitStack() as stack:
        sims = {n: stack.enter_context(simulator_class(n)(time_scale=args.time_scale)) for n in names}
        print(
            f"Started vendor simulators ({args.time_scale:g}x time): "
            + ", ".join(f"{n} {s.base_url}" for n, s in sims.items())
        )
        yield {n: s.credentials() for n, s in sims.items()}


def real_vendors(creds: dict[str, Any]) -> list[str]:
    """The vendors of a --vendors-file that are not simulators on this machine: a `base_url` whose host is not
    a loopback address (or no readable `base_url`)."""
    from urllib.parse import urlsplit

    from local.serve import is_loopback

    real = []
    for name, value in creds.items():
        base_url = value.get("base_url") if isinstance(value, dict) else None
        try:
            host = urlsplit(base_url).hostname if isinstance(base_url, str) else None
        except ValueError:
            host = None
        if not host or not is_loopback(host):
            real.append(name)
    return sorted(real)


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


class ProgressPrinter:
    """Turns execution-history events into one line per vendor step."""

    def __init__(self, time_scale: float):
        self.t0 = time.monotonic()
        self.time_scale = time_scale

    def __call__(self, event: dict[str, Any]) -> None:
        line = self.describe(event)
        if line:
            self.say(line)

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {line}", flush=True)

    def describe(self, event: dict[str, Any]) -> str | None:
        if event["type"] == "TaskSucceeded":
            out = json.loads(event["taskSucceededEventDetails"]["output"]).get("Payload")
        elif event["type"] == "PassStateExited" and event["stateExitedEventDetails"]["name"].startswith("Record"):
            out = json.loads(event["stateExitedEventDetails"]["output"])
        else:
            return None
        if not isinstance(out, dict) or "vendor" not in out:
            return None  # also "Await approval" answered: the decision is in the approve/deny call's output
        who = f"{out['vendor']:<11} {out['action']:<7}"
        if event["type"] == "PassStateExited" and out.get("status") == "denied":
            return None  # "Record denial": "Record outcome" follows with the reason (who denied, why)
        if "status" in out:  # an outcome: collected or recorded
            if out["status"] == "completed":
                archives = out.get("archives") or []
                size = sum(a["bytes"] for a in archives)
                note = f" ({out['reason']})" if out.get("reason") else ""
                return f"{who} completed: {len(archives)} archive(s), {size:,} bytes{note}"
            if out["status"] == "planned":  # a dry run: nothing destructive was sent
                return f"{who} planned (dry run): {out.get('planned_call') or out.get('reason') or ''}"
            if out["status"] in ("denied", "cancelled"):  # a person's decision, not a failure
                return f"{who} {out['status']}: {out.get('reason') or '-'}; nothing was sent to the vendor"
            reason = out.get("reason") or _cause(out.get("error"))
            return f"{who} FAILED: {reason}"
        job, progress = out.get("job") or {}, out.get("progress")
        gate = out.get("approval_wait")
        if not job and isinstance(gate, dict):  # "Ask for approval": the gate opens next ("Await approval")
            return (
                f"{who} needs approval before anything is sent; the gate holds until {gate.get('until')}"
                f"{self._vendor_wait(gate, 'until')}"
            )
        job_id = job.get("job_id") or "-"
        if progress is None:
            return f"{who} submitted (job {job_id}); first look at {out.get('next_check_at')}{self._vendor_wait(out)}"
        status = progress["status"]
        if status in ("pending", "needs_approval"):
            wait = f"next look at {out.get('next_check_at')}{self._vendor_wait(out)}"
            return f"{who} {status}: {progress.get('reason')}; {wait}"
        return f"{who} {status}{': ' + progress['reason'] if progress.get('reason') else ''}"

    def _vendor_wait(self, out: dict[str, Any], key: str = "next_check_at") -> str:
        from datetime import datetime

        try:  # "...T10:00:00Z" or with microseconds ("...T10:00:00.123456Z")
            until = datetime.fromisoformat(out[key].replace("Z", "+00:00")).astimezone(UTC)
        except (KeyError, TypeError, ValueError, AttributeError):
            return ""
        real = max((until - datetime.now(UTC)).total_seconds(), 0.0)
        if real < 1:
            return ""
        if self.time_scale == 1:
            return f" (in {real:.0f}s)"
        return f" (in {real:.0f}s, {real * self.time_scale / 86400:.1f} vendor days)"


class Gatekeeper:
    """Answers a request's approval gates as they open, through the API as deployed (POST
    /requests/{id}/approve or /deny, as OPERATOR): by asking on the terminal, or at once."""

    def __init__(
        self,
        cloud: Any,
        request_id: str,
        answer: str,
        say: Callable[[str], None],
        ask: Callable[[str], str] = input,
    ):
        self.cloud, self.request_id, self.answer, self.say, self.ask = cloud, request_id, answer, say, ask
        self.answered: set[str] = set()  # the gates' task tokens: a retry's gate is a new one

    def poll(self) -> float:
        """Answer every gate opened since the last call; returns the seconds spent waiting on a person."""
        waited = 0.0
        for gate in self.cloud.ledger().open_approvals(self.request_id):
            token = str(gate.get("token"))
            if token in self.answered:
                continue
            self.answered.add(token)
            vendor, action = gate["vendor"], gate["action"]
            self.say(f"{vendor} {action}: awaiting approval (POST /requests/{self.request_id}/approve or /deny)")
            started = time.monotonic()
            approve, reason = self._decision(vendor, action)
            waited += time.monotonic() - started
            route = "approve" if approve else "deny"
            status, body = self.cloud.api(
                "POST",
                f"/requests/{self.request_id}/{route}",
                {"vendor": vendor, "action": action, "reason": reason},
                principal=OPERATOR,
            )
            body = body if isinstance(body, dict) else {}
            if status != 200:
                self.say(f"{vendor} {action}: {route} refused (HTTP {status}): {body.get('message')}")
            elif not body.get("actions"):
                self.say(f"{vendor} {action}: no longer awaiting approval (the gate timed out); not {route}d")
            else:
                decision = "approved" if approve else "denied"
                self.say(f"{vendor} {action}: {decision} by {body.get('by')}; reason: {reason}")
        return waited

    def _decision(self, vendor: str, action: str) -> tuple[bool, str]:
        if self.answer == "approve":
            return True, APPROVAL_REASON
        if self.answer == "deny":
            return False, DENIAL_REASON
        try:
            said = self.ask(f"{vendor} {action}: approve? [y/N/reason to deny] ").strip()
        except EOFError:
            said = ""
        if said.casefold() in ("y", "yes"):
            return True, APPROVAL_REASON
        if said.casefold() in ("", "n", "no"):
            return False, DENIAL_REASON
        return False, said


def follow(
    cloud: Any,
    request_id: str,
    timeout: float,
    printer: ProgressPrinter,
    gates: Gatekeeper | None,
    poll: float = 0.2,
) -> dict[str, Any]:
    """LocalCloud.wait with the approval gates answered as they open; the time spent waiting on a person at
    the prompt does not count against `timeout`."""
    return cloud.wait(
        request_id, timeout=timeout, on_event=printer, poll=poll, between=gates.poll if gates is not None else None
    )


def _cause(error: Any) -> str:
    if isinstance(error, dict):
        try:
            cause = json.loads(error.get("Cause") or "{}")
            return f"{cause.get('errorType', error.get('Error'))}: {cause.get('errorMessage')}"
        except ValueError:
            return f"{error.get('Error')}: {error.get('Cause')}"
    return str(error)


def run(args: argparse.Namespace) -> int:
    from local.engine import LocalCloud

    request = build_request(args)
    out_dir = Path(args.out) if args.out else None
    with (
        vendor_credentials(args, request.get("vendors"), real_time_only=True) as creds,
        LocalCloud(creds, time_scale=args.time_scale, require_approval=args.approval) as cloud,
    ):
        status, body = cloud.api("POST", "/requests", request)
        if status not in (200, 202):
            print(f"Request rejected (HTTP {status}):", file=sys.stderr)
            if (body or {}).get("message"):  # a 409 conflict, or an internal error
                print(f"  {body['message']}", file=sys.stderr)
            for f in (body or {}).get("fields", []):
                print(f"  {f['field']}: {f['message']}", file=sys.stderr)
            return 2
        request_id = body["request_id"]
        print(f"Request {request_id} accepted; GDPR deadline {body['deadline']}")
        for s in body["skipped"]:
            print(f"  skipped {s['vendor']}{' ' + s['action'] if s.get('action') else ''}: {s['reason']}")
        printer = ProgressPrinter(args.time_scale)
        gates = None
        if args.approval != "none":
            answer = args.answer or ("ask" if sys.stdin.isatty() else "approve")
            gates = Gatekeeper(cloud, request_id, answer, say=printer.say)
            print(f"Approval gate: {args.approval} ({'asking here' if answer == 'ask' else answer + ' at once'})")
        try:
            execution = follow(cloud, request_id, args.timeout, printer, gates)
        except TimeoutError:
            print(
                f"Timed out: request {request_id} was still running after {args.timeout:g}s (--timeout). The local "
                "cloud stops with this command, so the request goes no further here"
                + (
                    "; a vendor job already submitted keeps running at the vendor"
                    if args.vendors_file
                    else "; raise --timeout or --time-scale to let it finish"
                ),
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        history = cloud.history(request_id)
        transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
        if execution["status"] != "SUCCEEDED":
            print(
                f"Execution {execution['status']}: {execution.get('error')} {execution.get('cause')}", file=sys.stderr
            )
            return 1
        summary = json.loads(execution["output"])
        print()
        print(
            f"Request {request_id}: {summary['status']} ({_counts(summary['counts'])}), "
            f"{transitions} state transitions ({len(history)} history events), "
            f"within deadline: {summary['within_deadline']}"
        )
        if summary.get("dry_run"):
            print("  DRY RUN: nothing destructive was sent to any vendor")
        if summary["counts"].get("denied"):
            print(f"  DENIED at the approval gate: {summary['counts']['denied']} action(s), nothing sent for them")
        for o in summary["outcomes"]:
            line = f"  {o['vendor']:<11} {o['action']:<7} {o['status']:<10}"
            if o["status"] != "completed" or o.get("reason"):
                line += f" {o.get('reason') or ''}"
            print(line)
            if o.get("planned_call"):
                print(f"      would send: {o['planned_call']}")
            if o.get("possible_duplicate"):
                print(
                    f"      possible duplicate vendor job; ids returned: {', '.join(o.get('job_ids') or []) or 'none'}"
                )
            for a in o["archives"]:
                print(f"      s3://{cloud.bucket}/{a['key']}  {a['bytes']:,} bytes  sha256 {a['sha256'][:16]}…")
        print(f"  manifest: s3://{cloud.bucket}/{summary['manifest_key']}")
        package = summary.get("package") or {}
        if package.get("status") == "built":
            print(
                f"  access package for the subject: s3://{cloud.bucket}/{package['key']}  "
                f"{package['files']} files, {package['bytes']:,} bytes  sha256 {package['sha256'][:16]}…"
            )
        elif package:
            print(f"  access package: {package['status']}: {package.get('reason') or package.get('error')}")
        if out_dir is not None:
            files = cloud.download(request_id, out_dir)
            print(f"\nCopied {len(files)} object(s) out of the local bucket into {out_dir.resolve()}:")
            for f in files:
                print(f"  {f}")
        return 0 if summary["status"] == "completed" else 1


def simulator(args: argparse.Namespace) -> int:
    sim = simulator_class(args.name)(time_scale=args.time_scale, port=args.port)
    with sim:
        # The JSON alone on stdout, then the banner on stderr: `... simulator elevate > vendors.json` is a
        # --vendors-file as it stands ({"elevate": {...}}); merge several into one object for more vendors.
        print(json.dumps({args.name: sim.credentials()}, indent=2), flush=True)
        print(
            f"{args.name} simulator on {sim.base_url} ({args.time_scale:g}x time); the JSON on stdout is its "
            "--vendors-file",
            file=sys.stderr,
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m local", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def request_flags(sp: argparse.ArgumentParser, demo: bool) -> None:
        sp.add_argument("--email", default=SAMPLE.email if demo else None)
        sp.add_argument("--customer-key", default=SAMPLE.customer_key if demo else None)
        sp.add_argument(
            "--customer-id",
            action="append",
            default=[f"registered={SAMPLE.registered}"] if demo else [],
            metavar="TYPE=VALUE",
            help="repeatable, e.g. registered=crm-1001",
        )
        sp.add_argument("--actions", default="export,erase" if demo else "export", help="export, erase or export,erase")
        sp.add_argument("--vendors", help="comma-separated; default: every configured vendor")
        sp.add_argument("--request-id")
        sp.add_argument("--justification")
        sp.add_argument(
            "--dry-run",
            action="store_true",
            help="dry run: nothing destructive reaches any vendor; erasures are planned, not sent",
        )
        sp.add_argument("--vendors-file", help='JSON {"elevate": {...}, "bloomreach": {...}, "qualifio": {...}}')
        sp.add_argument(
            "--time-scale",
            type=float,
            default=None,
            help=f"vendor seconds per real second (simulators and schedules); default: {DEMO_TIME_SCALE:g} with "
            "the bundled simulators, 1 with --vendors-file (which refuses any other)",
        )
        sp.add_argument("--out", default="dsr-out" if demo else None, help="copy archives + manifest here")
        sp.add_argument("--timeout", type=float, default=600.0, help="give up after this many real seconds")
        sp.add_argument(
            "--approval",
            choices=("none", "erase", "all"),
            default="none",
            help="the approval gate (REQUIRE_APPROVAL): which vendor actions wait for a person before anything is sent",
        )
        sp.add_argument(
            "--answer",
            choices=("ask", "approve", "deny"),
            default=None,
            help=f"how the gates are answered: ask here, approve, or deny ({DENIAL_REASON!r}); "
            "default: ask when stdin is a terminal, else approve",
        )

    request_flags(sub.add_parser("run", help="run one request"), demo=False)
    request_flags(sub.add_parser("demo", help="export + erase for a sample subject across all simulators"), demo=True)
    from local import smoke  # a dry-run request against a deployed stage (local/smoke.py)

    smoke.add_arguments(sub.add_parser("smoke", help="dry-run smoke test of a deployed stage (AWS credentials)"))
    from local import serve  # the API on loopback HTTP, for the dsrflow CLI (local/serve.py)

    serve.add_arguments(sub.add_parser("serve", help="serve the local cloud's API on loopback HTTP (dsrflow --api)"))
    sp = sub.add_parser("openapi", help="write docs/openapi.json from the API's routes (handlers/intake.py)")
    sp.add_argument("--check", action="store_true", help="only compare: exit 1 when the committed file differs")
    sp = sub.add_parser("simulator", help="run one vendor simulator by hand")
    sp.add_argument("name", choices=sorted(SIMULATORS))
    sp.add_argument("--port", type=int, default=0)
    sp.add_argument("--time-scale", type=float, default=1.0)
    return p


OPENAPI_DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def openapi(check: bool = False, path: Path = OPENAPI_DOCUMENT) -> int:
    """Write (or with `check`, compare) the OpenAPI document generated from the API's declaration."""
    import local.engine  # noqa: F401  # puts functions/ on sys.path
    from handlers.openapi import render

    text = render()
    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} differs from the API's routes: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "smoke":
        from local import smoke

        return smoke.run_args(args)
    if args.command == "simulator":
        return simulator(args)
    if args.command == "serve":
        from local import serve

        return serve.run_args(args)
    if args.command == "openapi":
        return openapi(check=args.check)
    if args.time_scale is None:
        args.time_scale = 1.0 if args.vendors_file else DEMO_TIME_SCALE
    if args.time_scale <= 0:
        return _usage("--time-scale must be positive")
    try:
        return run(args)
    except argparse.ArgumentTypeError as exc:
        return _usage(str(exc))


def _counts(counts: dict[str, int]) -> str:
    """ "6 completed, 1 failed": the statuses that occurred, in the manifest's order."""
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "nothing to do"
