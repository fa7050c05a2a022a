"""`python -m local serve`: the embedded local cloud, its API on loopback HTTP.

    python -m local serve [--port 8080] [--vendors-file F | --vendors bloomreach,qualifio] [--time-scale 3600]
        [--approval none|erase|all]

It starts the vendor simulators (or uses --vendors-file) and a LocalCloud, then answers HTTP on 127.0.0.1 with
the intake function itself: each HTTP request becomes the API Gateway REST proxy event the deployed API hands it
(`local.engine.api_gateway_event`) and goes through `LocalCloud.invoke("intake", ...)`, i.e. the same Powertools
resolver, validation and answers as deployed. The `dsrflow` operator CLI (dsrflow_cli/) talks to it with
`--api http://127.0.0.1:<port>`, exactly as it talks to a deployed stage.

What the local server checks, and what it does not:
- **Loopback only.** It binds 127.0.0.1, ::1 or localhost and refuses any other address, so only processes of
  this machine reach it (and they could call LocalCloud directly anyway).
- **No SigV4 check.** Who calls is the `X-Dsrflow-Principal` header when given (an IAM ARN, recorded as `by` in
  the ledger), else LOCAL_PRINCIPAL; a signed request is accepted and its signature ignored. In AWS, API
  Gateway's IAM authorization verifies the signature and puts the caller's ARN in the request context before
  intake runs; here there is no IAM to check against.
- **Presigned links are relayed.** S3 is moto, inside this process: the link `GET /requests/{id}/package`
  mints (`https://<bucket>.s3.<region>.amazonaws.com/<key>?X-Amz-...`) reaches nothing from another process.
  So a 200 answer of that route has its `url` rewritten to `<server url>/local-s3/<host>/<key>?<query>`, and
  `GET /local-s3/<host>/...` fetches the original link inside this process (moto's mock intercepts `requests`
  calls to AWS hosts: nothing leaves the machine) and streams the body back with its Content-Length, status
  and headers as moto answered. Only GET, only S3 hosts under `.amazonaws.com`; anything else is a 404. moto
  checks neither the link's signature nor its expiry: a deployed stage's S3 does both.

The data is the simulators' seeded customers in a moto account that disappears when the server stops.

Ctrl-C (SIGINT, or SIGTERM) stops it: the HTTP server, then the local cloud, then the simulators.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import json
import re
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local.simulators import SIMULATORS
from local.simulators.data import SAMPLE

LOCAL_PRINCIPAL = "arn:aws:iam::123456789012:user/local"
PRINCIPAL_HEADER = "X-Dsrflow-Principal"
DEFAULT_PORT = 8080
# One vendor hour per real second: Elevate's 5-day export window takes 2 minutes, and an approval gate (it holds
# until the request's 30-day deadline) stays open 12 minutes, time enough to answer it by hand.
SERVE_TIME_SCALE = 3600.0
# API Gateway takes up to 10 MB; intake refuses a body over 64 KiB with its own 400. Above this, not even read.
MAX_BODY_BYTES = 1024 * 1024
MAX_PRINCIPAL_CHARS = 2048
# The presigned-link relay (see the module doc).
RELAY_PREFIX = "/local-s3/"
_PACKAGE_ROUTE = re.compile(r"/requests/[^/]+/package")
# An S3 endpoint as moto intercepts it: <bucket>.s3.<region>.amazonaws.com, s3.<region>.amazonaws.com, ...
_S3_HOST = re.compile(r"(?:[a-z0-9][a-z0-9-]*\.)*s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com")
RELAY_CHUNK = 256 * 1024
RELAY_TIMEOUT = (5.0, 60.0)


def is_loopback(host: str) -> bool:
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalApi(ThreadingHTTPServer):
    """HTTP on loopback in front of `cloud`'s intake function. Calls are handled one at a time: Powertools'
    resolver keeps the current event on its (module-level) app, as one Lambda execution environment does."""

    daemon_threads = True

    def __init__(self, cloud: Any, host: str = "127.0.0.1", port: int = 0, log: bool = True):
        if not is_loopback(host):
            raise ValueError(f"the local API binds loopback only (127.0.0.1, ::1 or localhost), not {host!r}")
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        self.cloud, self.log = cloud, log
        self.lock = threading.Lock()
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[0], self.server_address[1]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def answer(self, method: str, target: str, body: bytes, principal: str) -> tuple[int, dict[str, str], bytes]:
        """The intake function's answer to one HTTP request: (status, headers, body)."""
        from local.engine import api_gateway_event

        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        text, encoded = None, False
        if body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:  # as API Gateway hands a binary body: base64 (intake answers its 400)
                text, encoded = base64.b64encode(body).decode(), True
        event = api_gateway_event(
            method, parts.path or "/", text, base64_encoded=encoded, query=query or None, principal=principal
        )
        with self.lock:
            try:
                out = self.cloud.invoke("intake", event)
            except Exception as exc:  # an unhandled error in the function (Lambda's FunctionError), or moto's
                return _problem(502, "internal error", f"the intake function failed: {type(exc).__name__}: {exc}")
        headers = {str(k): str(v) for k, v in (out.get("headers") or {}).items()}
        for name, values in (out.get("multiValueHeaders") or {}).items():
            if values:
                headers.setdefault(str(name), str(values[-1]))
        raw = out.get("body") or ""
        data = base64.b64decode(raw) if out.get("isBase64Encoded") else str(raw).encode()
        status = int(out.get("statusCode") or 502)
        if method == "GET" and status == 200 and _PACKAGE_ROUTE.fullmatch(parts.path or ""):
            data = self._relayed_link(data)
        return status, headers, data

    def _relayed_link(self, data: bytes) -> bytes:
        """The package route's answer with its presigned `url` pointed at this server's relay."""
        try:
            answer = json.loads(data)
        except ValueError:
            return data
        link = urlsplit(answer.get("url") or "") if isinstance(answer, dict) else None
        if link is None or link.scheme != "https" or not _S3_HOST.fullmatch(link.hostname or ""):
            return data
        answer["url"] = f"{self.url}{RELAY_PREFIX}{link.hostname}{link.path}" + (f"?{link.query}" if link.query else "")
        return json.dumps(answer).encode()

    @staticmethod
    def relay_target(target: str) -> str | None:
        """The presigned link a `/local-s3/<host>/<path>?<query>` target stands for; None if it is not one."""
        parts = urlsplit(target)
        if not parts.path.startswith(RELAY_PREFIX):
            return None
        host, _, path = parts.path[len(RELAY_PREFIX) :].partition("/")
        if not _S3_HOST.fullmatch(host) or not path:
            return None
        return f"https://{host}/{path}" + (f"?{parts.query}" if parts.query else "")


def _relayed_headers(upstream: Any) -> dict[str, str]:
    kept = ("Content-Type", "Content-Disposition", "ETag", "Last-Modified")
    return {name: str(upstream.headers[name]) for name in kept if name in upstream.headers}


def _problem(status: int, error: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": error, "message": message}).encode()
    return status, {"Content-Type": "application/json"}, body


class _Handler(BaseHTTPRequestHandler):
    server: LocalApi
    protocol_version = "HTTP/1.1"
    server_version = "dsrflow-local"

    def _serve(self) -> None:
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            size = -1
        if size < 0 or size > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(*_problem(413 if size > 0 else 400, "invalid request", "a bad or too large Content-Length"))
            return
        body = self.rfile.read(size) if size else b""
        # The Authorization header (a SigV4 signature) is ignored: see the module docstring.
        principal = (self.headers.get(PRINCIPAL_HEADER) or "").strip() or LOCAL_PRINCIPAL
        if len(principal) > MAX_PRINCIPAL_CHARS:
            self._send(*_problem(400, "invalid request", f"{PRINCIPAL_HEADER} is too long"))
            return
        if self.path.startswith(RELAY_PREFIX):
            self._relay()
            return
        self._send(*self.server.answer(self.command, self.path, body, principal))

    def _relay(self) -> None:
        """GET /local-s3/<host>/...: the presigned link fetched in this process (moto), streamed back."""
        import requests

        target = self.server.relay_target(self.path) if self.command == "GET" else None
        if target is None:
            self._send(*_problem(404, "not found", "only GET of a relayed S3 link (/local-s3/<s3 host>/...)"))
            return
        try:
            upstream = requests.get(target, stream=True, timeout=RELAY_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            self._send(*_problem(502, "bad gateway", f"the relayed link failed: {type(exc).__name__}"))
            return
        with upstream:
            length = upstream.headers.get("Content-Length")
            if length is None or not length.isdigit():  # moto always says; read it whole if not
                self._send(upstream.status_code, _relayed_headers(upstream), upstream.raw.read(decode_content=False))
                return
            self.send_response(upstream.status_code)
            for name, value in _relayed_headers(upstream).items():
                self.send_header(name, value)
            self.send_header("Content-Length", length)
            self.end_headers()
            sent = 0
            for chunk in upstream.raw.stream(RELAY_CHUNK, decode_content=False):
                self.wfile.write(chunk)
                sent += len(chunk)
            if sent != int(length):  # the client sees a short body: end the connection, never reuse it
                self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.casefold() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log:
            sys.stderr.write(f"[{self.log_date_time_string()}] {format % args}\n")


# --- the command ----------------------------------------------------------------------------------------------


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--host", default="127.0.0.1", help="a loopback address (anything else is refused)")
    sp.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    sp.add_argument("--vendors-file", help='JSON {"elevate": {...}, "bloomreach": {...}, "qualifio": {...}}')
    sp.add_argument(
        "--vendors", help=f"comma-separated simulators to start (default: all of {', '.join(sorted(SIMULATORS))})"
    )
    sp.add_argument(
        "--time-scale",
        type=float,
        default=SERVE_TIME_SCALE,
        help=f"vendor seconds per real second (simulators and schedules; default {SERVE_TIME_SCALE:g})",
    )
    sp.add_argument(
        "--approval",
        choices=("none", "erase", "all"),
        default="none",
        help="the approval gate (REQUIRE_APPROVAL): which vendor actions wait for `dsrflow approve`",
    )
    sp.add_argument("--quiet", action="store_true", help="no access log on stderr")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM both raise KeyboardInterrupt, for the same clean stop; SIGINT too, as a shell
    starting the server in the background (`&`) may have set it to be ignored."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_args(args: argparse.Namespace) -> int:
    from local.cli import _usage, vendor_credentials
    from local.engine import LocalCloud

    if args.time_scale <= 0:
        return _usage("--time-scale must be positive")
    if not is_loopback(args.host):
        return _usage(f"--host {args.host}: the local API binds loopback only (it checks no SigV4 signature)")
    if not 0 <= args.port <= 65535:
        return _usage("--port must be 0-65535")
    wanted = [v.strip() for v in args.vendors.split(",") if v.strip()] if args.vendors else None
    unknown = sorted(set(wanted or ()) - set(SIMULATORS))
    if unknown:
        return _usage(f"--vendors: no simulator named {', '.join(unknown)} (known: {', '.join(sorted(SIMULATORS))})")
    # Powertools warns on every API call that the (disabled) metrics had nothing to publish.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    server: LocalApi | None = None
    with _stop_on_signals():
        try:
            with (
                vendor_credentials(args, wanted) as creds,
                LocalCloud(creds, time_scale=args.time_scale, require_approval=args.approval) as cloud,
            ):
                try:
                    server = LocalApi(cloud, args.host, args.port, log=not args.quiet)
                except OSError as exc:
                    return _usage(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
                _banner(server.url, sorted(creds), args)
                try:
                    server.serve_forever(poll_interval=0.2)
                finally:
                    server.server_close()
        except KeyboardInterrupt:
            pass
    print("Stopped: HTTP server, local cloud and simulators.", flush=True)
    return 0


def _banner(url: str, vendors: list[str], args: argparse.Namespace) -> None:
    sample = {
        "email": SAMPLE.email,
        "customer_key": SAMPLE.customer_key,
        "customer_ids": {"registered": SAMPLE.registered},
    }
    print(
        f"dsrflow local API on {url} (vendors: {', '.join(vendors)}; approval gate: {args.approval}; "
        f"{args.time_scale:g}x time)"
    )
    print("No SigV4 check on loopback: callers are X-Dsrflow-Principal, or " + LOCAL_PRINCIPAL)
    print(f"Sample subject (seeded at every simulator): {json.dumps(sample)}")
    print("Try:")
    print(f"  export DSRFLOW_API={url}")
    print(
        f"  dsrflow submit --email {SAMPLE.email} --customer-id registered={SAMPLE.registered} --actions export,erase"
    )
    print("  dsrflow list")
    print("  dsrflow status <request id>; dsrflow watch <request id>")
    print("Ctrl-C stops it.", flush=True)
