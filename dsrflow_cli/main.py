"""dsrflow: the operator's command line for the dsrflow API (a deployed stage, or `python -m local serve`).

    dsrflow --api http://127.0.0.1:8080 submit --email ada@example.com --actions export,erase
    dsrflow --stack dsrflow-prod list --status awaiting_approval
    dsrflow status dsr-1001            (DSRFLOW_API=... in the environment)
    dsrflow approve dsr-1001 --vendor bloomreach --action erase --reason "identity checked"
    dsrflow watch dsr-1001
    dsrflow package dsr-1001 --out ./dsr-1001

Every command is one or more calls to the API's routes (docs/openapi.json); nothing is read from the stack's
resources directly. Calls to a deployed API are SigV4-signed with your AWS credentials (boto3's chain:
AWS_PROFILE, SSO, environment); a loopback URL is the local server, which checks no signature.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dsrflow_cli.api import Api, ApiError, CliError, stack_api_url

PACKAGE_NAME = "dsrflow-access-{request_id}.zip"

EXIT_CODES = """exit codes:
  0    done (watch: the request finished, whatever its status; read it from the output)
  1    the API refused the call (4xx: its message is printed) or failed (5xx)
  2    bad command line, or a file that cannot be read
  3    the API cannot be reached, or no valid AWS credentials to sign with (a one-line hint is printed)
  4    watch --timeout passed before the request finished
  5    package: the download was refused or broke off, or did not match the size and sha256 the API stated
       (nothing is left in DIR)
  130  interrupted (Ctrl-C)"""

STATUSES = ("received", "running", "awaiting_approval", "completed", "partially_failed", "failed", "cancelled")
FINISHED = ("completed", "partially_failed", "failed", "cancelled")
PAGE = 100  # the API's largest page


# --- output -------------------------------------------------------------------------------------------------


def _out(line: str = "") -> None:
    print(line, flush=True)


def _json_out(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False), flush=True)


def _time(value: Any) -> str:
    """ "2026-12-02T03:54:06.667482Z" as "2026-12-02 03:54:06Z"; anything else as it is (or "-")."""
    if not value:
        return "-"
    text = str(value)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return text
    return parsed.strftime("%Y-%m-%d %H:%M:%SZ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) if c not in (None, "") else "-" for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return lines


def _note(action: dict[str, Any]) -> str:
    parts = []
    if action.get("vendor_status"):
        parts.append(f"vendor: {action['vendor_status']}")
    if action.get("by"):
        parts.append(f"by {action['by']}")
    if action.get("reason"):
        parts.append(str(action["reason"]))
    elif action.get("error"):
        parts.append(str(action["error"]))
    return "; ".join(parts)


def render_status(view: dict[str, Any]) -> list[str]:
    ledger = view.get("ledger") or {}
    execution = view.get("execution") or {}
    days = view.get("days_left")
    lines = [
        f"Request {view.get('request_id')}: {view.get('status')}",
        f"  deadline   {_time(view.get('deadline'))}" + (f" ({days} days left)" if days is not None else ""),
    ]
    if ledger.get("extended_days"):
        lines.append(f"  extended   {ledger['extended_days']} days (original {_time(ledger.get('original_deadline'))})")
    if execution:
        lines.append(f"  execution  {execution.get('status')} (attempt {ledger.get('attempt') or 1})")
    if ledger.get("finished_at"):
        lines.append(f"  finished   {_time(ledger.get('finished_at'))}")
    actions = ledger.get("actions") or []
    if actions:
        lines.append("")
        rows = [
            (
                a.get("vendor"),
                a.get("action"),
                a.get("state"),
                _time(a.get("since")),
                _time(a.get("next_check_at")),
                _note(a),
            )
            for a in actions
        ]
        lines += table(("vendor", "action", "state", "since", "next look", "note"), rows)
    manifest = view.get("manifest")
    if isinstance(manifest, dict) and manifest.get("counts"):
        counts = ", ".join(f"{n} {k}" for k, n in manifest["counts"].items() if n)
        lines += ["", f"  manifest: {counts or 'nothing to do'}"]
    return lines


# --- commands -----------------------------------------------------------------------------------------------


def _ids(values: list[str]) -> dict[str, str]:
    ids = {}
    for item in values:
        id_type, sep, value = item.partition("=")
        if not sep or not id_type or not value:
            raise CliError(f"--customer-id wants TYPE=VALUE (e.g. registered=crm-1001), got {item!r}", 2)
        ids[id_type] = value
    return ids


def _split(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /requests body: the file's object (if any), the flags' fields over it."""
    request: dict[str, Any] = {}
    if args.file:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
            loaded = json.loads(text)
        except (OSError, ValueError) as exc:
            raise CliError(f"{args.file}: {exc}", 2) from None
        if not isinstance(loaded, dict):
            raise CliError(f"{args.file}: want a JSON object (the request, docs/openapi.json DsrRequest)", 2)
        request = loaded
    subject = dict(request.get("subject") or {}) if isinstance(request.get("subject"), dict) else None
    flags_subject = {k: v for k, v in (("email", args.email), ("customer_key", args.customer_key)) if v is not None}
    if args.customer_id:
        flags_subject["customer_ids"] = _ids(args.customer_id)
    if flags_subject:
        request["subject"] = {**(subject or {}), **flags_subject}
    if args.actions:
        request["actions"] = _split(args.actions)
    elif not args.file:
        request["actions"] = ["export"]
    if args.vendors:
        request["vendors"] = _split(args.vendors)
    if args.request_id:
        request["request_id"] = args.request_id
    if args.justification:
        request["justification"] = args.justification
    if args.dry_run:
        request["dry_run"] = True
    return request


def cmd_submit(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", "/requests", build_request(args))
    if args.json:
        _json_out(body)
        return 0
    state = "accepted" if body.get("status") == "accepted" else "already known (a duplicate: nothing new started)"
    _out(f"Request {body.get('request_id')} {state}; GDPR deadline {_time(body.get('deadline'))}")
    for s in body.get("skipped") or []:
        _out(f"  skipped {s.get('vendor')}{' ' + s['action'] if s.get('action') else ''}: {s.get('reason')}")
    return 0


def _pages(api: Api, path: str, key: str, query: dict[str, str | int]) -> dict[str, Any]:
    """Every page of a paged route, as one answer."""
    items: list[Any] = []
    answer: dict[str, Any] = {}
    token: str | None = None
    while True:
        answer = api.call("GET", path, query={**query, **({"next_token": token} if token else {})})
        items += answer.get(key) or []
        token = answer.get("next_token")
        if not token:
            return {**answer, key: items, "next_token": None}


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    query: dict[str, str | int] = {"limit": PAGE}
    if args.status:
        query["status"] = args.status
    if args.due_within is not None:
        due = datetime.now(UTC) + timedelta(days=args.due_within)
        query["due_before"] = due.strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = _pages(api, "/requests", "requests", query)
    if args.json:
        _json_out(answer)
        return 0
    found = answer["requests"]
    what = f"in status {args.status}" if args.status else "open"
    if args.due_within is not None:
        what += f", due within {args.due_within:g} days"
    if not found:
        _out(f"No requests {what}.")
        return 0
    rows = [
        (
            r.get("request_id"),
            r.get("status"),
            _time(r.get("deadline")),
            r.get("days_left"),
            "yes" if r.get("dry_run") else "",
            r.get("attempt"),
            _time(r.get("received_at")),
        )
        for r in found
    ]
    for line in table(("request", "status", "deadline", "days left", "dry run", "attempt", "received"), rows):
        _out(line)
    _out(f"{len(found)} request(s) {what}.")
    return 0


def _path(request_id: str, action: str = "") -> str:
    from urllib.parse import quote

    return f"/requests/{quote(request_id, safe='')}" + (f"/{action}" if action else "")


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    view = api.call("GET", _path(args.request_id))
    if args.json:
        _json_out(view)
    else:
        for line in render_status(view):
            _out(line)
    return 0


def _decision(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("vendor", args.vendor), ("action", args.action), ("reason", args.reason)) if v}


def _decided(body: dict[str, Any]) -> str:
    done = ", ".join(f"{a.get('vendor')} {a.get('action')}" for a in body.get("actions") or []) or "nothing"
    return f"{body.get('decision')} by {body.get('by')}: {done}"


def cmd_approve(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", _path(args.request_id, "approve"), _decision(args))
    _json_out(body) if args.json else _out(f"Request {args.request_id}: {_decided(body)}")
    return 0


def cmd_deny(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", _path(args.request_id, "deny"), _decision(args))
    _json_out(body) if args.json else _out(f"Request {args.request_id}: {_decided(body)}")
    return 0


def cmd_retry(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", _path(args.request_id, "retry"), {"vendors": args.vendor} if args.vendor else {})
    if args.json:
        _json_out(body)
        return 0
    actions = ", ".join(body.get("actions") or []) or "-"
    _out(f"Request {args.request_id}: attempt {body.get('attempt')} started ({actions})")
    _out(f"  execution {body.get('execution_arn')}")
    return 0


def cmd_cancel(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", _path(args.request_id, "cancel"), {"reason": args.reason} if args.reason else {})
    if args.json:
        _json_out(body)
        return 0
    manifest = body.get("manifest") or {}
    _out(f"Request {args.request_id}: {body.get('status')} by {manifest.get('cancelled_by') or '-'}")
    for o in manifest.get("outcomes") or []:
        jobs = f" (vendor jobs: {', '.join(o['job_ids'])})" if o.get("job_ids") else ""
        _out(f"  {o.get('vendor'):<11} {o.get('action'):<7} {o.get('status'):<10} {o.get('reason') or ''}{jobs}")
    if body.get("event") is False:
        _out("  the CRM event could not be delivered: tell the CRM by hand")
    return 0


def cmd_extend(api: Api, args: argparse.Namespace) -> int:
    body = api.call("POST", _path(args.request_id, "extend"), {"days": args.days, "reason": args.reason})
    if args.json:
        _json_out(body)
        return 0
    _out(
        f"Request {args.request_id}: deadline {_time(body.get('deadline'))} "
        f"(original {_time(body.get('original_deadline'))}, {body.get('extended_days')} days extended in all)"
    )
    if body.get("event") is False:
        _out("  the CRM event could not be delivered: tell the CRM by hand (it must inform the subject)")
    return 0


_AUDIT_SHOWN = ("at", "event", "vendor", "action", "by", "reason", "request_id")


def cmd_audit(api: Api, args: argparse.Namespace) -> int:
    answer = _pages(api, _path(args.request_id, "audit"), "events", {"limit": PAGE})
    if args.json:
        _json_out(answer)
        return 0
    rows = []
    for e in answer["events"]:
        rest = ", ".join(f"{k}={v}" for k, v in e.items() if k not in _AUDIT_SHOWN and v not in (None, "", [], {}))
        detail = "; ".join(p for p in (str(e.get("reason") or ""), rest) if p)
        rows.append((_time(e.get("at")), e.get("event"), e.get("vendor"), e.get("action"), e.get("by"), detail))
    for line in table(("at", "event", "vendor", "action", "by", "detail"), rows):
        _out(line)
    return 0


def cmd_package(api: Api, args: argparse.Namespace) -> int:
    link = api.call("GET", _path(args.request_id, "package"))
    if not isinstance(link, dict) or not (
        isinstance(link.get("url"), str) and isinstance(link.get("bytes"), int) and isinstance(link.get("sha256"), str)
    ):
        raise CliError("the API's answer holds no link with its size and sha256 (url, bytes, sha256)", 1)
    path = api.download(
        link["url"],
        Path(args.out),
        PACKAGE_NAME.format(request_id=args.request_id),
        size=link["bytes"],
        sha256=link["sha256"],
    )
    # The link is a bearer credential until it expires: used here, never printed.
    if args.json:
        _json_out({**{k: v for k, v in link.items() if k != "url"}, "path": str(path), "verified": True})
        return 0
    _out(f"Request {args.request_id}: access package downloaded, verified (size and sha256 as the API recorded)")
    _out(f"  path     {path}")
    _out(f"  bytes    {link['bytes']}")
    _out(f"  sha256   {link['sha256']}")
    if link.get("files") is not None:
        _out(f"  files    {link['files']} (index.html and manifest.json included)")
    _out(f"  link     valid until {_time(link.get('expires_at'))}, recorded in the audit trail; not shown")
    return 0


def _changes(before: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """What moved between two GET /requests/{id} answers, one line each."""
    lines = []
    if before is None or before.get("status") != now.get("status"):
        lines.append(f"request {now.get('status')}")
    if before is not None and before.get("deadline") != now.get("deadline"):
        lines.append(f"deadline now {_time(now.get('deadline'))}")
    old = {(a.get("vendor"), a.get("action")): a for a in ((before or {}).get("ledger") or {}).get("actions") or []}
    for a in (now.get("ledger") or {}).get("actions") or []:
        was = old.get((a.get("vendor"), a.get("action")))
        keys = ("state", "vendor_status", "next_check_at")
        if was is not None and all(was.get(k) == a.get(k) for k in keys):
            continue
        line = f"{a.get('vendor'):<11} {a.get('action'):<7} {a.get('state')}"
        if a.get("next_check_at"):
            line += f", next look {_time(a['next_check_at'])}"
        note = _note(a)
        lines.append(line + (f" ({note})" if note else ""))
    return lines


def cmd_watch(
    api: Api,
    args: argparse.Namespace,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    before: dict[str, Any] | None = None
    deadline = clock() + args.timeout if args.timeout else None
    while True:
        view = api.call("GET", _path(args.request_id))
        if args.json:
            if before is None or _changes(before, view):
                print(json.dumps(view), flush=True)  # JSON Lines: one answer per change
        else:
            for line in _changes(before, view):
                _out(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {line}")
        before = view
        if view.get("status") in FINISHED:
            if not args.json:
                for line in render_status(view):
                    _out(line)
            return 0
        if deadline is not None and clock() >= deadline:
            print(
                f"error: request {args.request_id} still {view.get('status')} after {args.timeout:g}s",
                file=sys.stderr,
            )
            return 4
        sleep(args.interval)


COMMANDS: dict[str, Callable[[Api, argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "list": cmd_list,
    "status": cmd_status,
    "approve": cmd_approve,
    "deny": cmd_deny,
    "retry": cmd_retry,
    "cancel": cmd_cancel,
    "extend": cmd_extend,
    "audit": cmd_audit,
    "watch": cmd_watch,
    "package": cmd_package,
}


# --- the command line ---------------------------------------------------------------------------------------


def _target_options(p: argparse.ArgumentParser, top: bool) -> None:
    """The target and output options: before the command (top) or after it. After it, an option that is not
    given must not undo the one given before (SUPPRESS leaves the top level's value alone)."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    g = p.add_argument_group("target and output")
    g.add_argument(
        "--api",
        default=default(os.environ.get("DSRFLOW_API")),
        metavar="URL",
        help="the API base URL: a stage's ApiUrl, or http://127.0.0.1:8080 (python -m local serve); "
        "default $DSRFLOW_API",
    )
    g.add_argument(
        "--stack", default=default(None), metavar="NAME", help="read the API URL from the stack's ApiUrl output"
    )
    g.add_argument("--profile", default=default(None), help="AWS profile (default: boto3's chain)")
    g.add_argument("--region", default=default(None), help="AWS region of --stack (default: the profile's)")
    g.add_argument(
        "--principal",
        default=default(None),
        metavar="ARN",
        help="local server only: who you are (X-Dsrflow-Principal); a deployed API takes it from your signature",
    )
    g.add_argument("--json", action="store_true", default=default(False), help="print the API's JSON answer")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dsrflow",
        description=__doc__.split("\n\n")[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _target_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name, help=help, description=help, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _target_options(sp, top=False)
        return sp

    sp = command("submit", "submit a data-subject request (a JSON file, flags, or both: the flags win)")
    sp.add_argument("file", nargs="?", help="the request as JSON (docs/openapi.json DsrRequest); - reads stdin")
    sp.add_argument("--email")
    sp.add_argument("--customer-key")
    sp.add_argument("--customer-id", action="append", default=[], metavar="TYPE=VALUE", help="repeatable")
    sp.add_argument("--actions", help="export, erase or export,erase (default without a file: export)")
    sp.add_argument("--vendors", help="comma-separated; default: every configured vendor")
    sp.add_argument("--request-id")
    sp.add_argument("--justification")
    sp.add_argument("--dry-run", action="store_true", help="nothing destructive reaches any vendor")

    sp = command("list", "list requests: the open ones by deadline, or those in one status (newest first)")
    sp.add_argument("--status", choices=STATUSES)
    sp.add_argument("--due-within", type=float, metavar="DAYS", help="only those due within DAYS days from now")

    sp = command("status", "a request's status, with a table of its vendor actions")
    sp.add_argument("request_id", metavar="ID")

    for name, help in (
        ("approve", "approve what awaits approval (all, or the vendor/action named)"),
        ("deny", "deny what awaits approval (all, or the vendor/action named); --reason is required"),
    ):
        sp = command(name, help)
        sp.add_argument("request_id", metavar="ID")
        sp.add_argument("--vendor", metavar="V")
        sp.add_argument("--action", choices=("export", "erase"))
        sp.add_argument("--reason", metavar="R", required=name == "deny", help="kept for years: no subject data")

    sp = command("retry", "re-run what failed, was withheld or denied (all, or the vendors named)")
    sp.add_argument("request_id", metavar="ID")
    sp.add_argument("--vendor", action="append", metavar="V", help="repeatable")

    sp = command("cancel", "cancel a request that has not finished")
    sp.add_argument("request_id", metavar="ID")
    sp.add_argument("--reason", metavar="R")

    sp = command("extend", "extend the deadline (GDPR Art. 12(3): at most 60 days in all)")
    sp.add_argument("request_id", metavar="ID")
    sp.add_argument("--days", type=int, required=True, metavar="N")
    sp.add_argument("--reason", required=True, metavar="R")

    sp = command("audit", "a request's audit trail, oldest first")
    sp.add_argument("request_id", metavar="ID")

    sp = command("watch", "follow a request until it finishes, printing each change")
    sp.add_argument("request_id", metavar="ID")
    sp.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between looks (default 2)")
    sp.add_argument("--timeout", type=float, default=0.0, metavar="S", help="give up after S seconds (exit 4)")

    sp = command(
        "package",
        "download a finished request's access package (one zip), verified against the size and sha256 the API "
        "recorded; each call mints a new link, recorded in the audit trail (--json: the API's answer without "
        "the link, with path and verified)",
    )
    sp.add_argument("request_id", metavar="ID")
    sp.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help=f"where {PACKAGE_NAME.format(request_id='ID')} goes (created if missing; default: here); a file of "
        "that name is replaced only by a verified download",
    )
    return p


def api_for(args: argparse.Namespace) -> Api:
    if args.api and args.stack:
        raise CliError("give --api or --stack, not both", 2)
    url = args.api
    if args.stack:
        url = stack_api_url(args.stack, args.profile, args.region)
    if not url:
        raise CliError("no API: give --api URL, --stack NAME or set DSRFLOW_API (see dsrflow --help)", 2)

    def session() -> Any:
        from dsrflow_cli.api import _session

        return _session(args.profile, args.region)

    return Api(url, principal=args.principal, session_factory=session)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "interval", 1.0) <= 0:
        print("error: --interval must be positive", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](api_for(args), args)
    except ApiError as exc:
        if args.json and exc.body is not None:
            _json_out(exc.body)
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
