"""`python -m local serve` and the `dsrflow` operator CLI: a whole request driven over real HTTP on loopback,
through the intake function's own resolver (submit, status, list, approve, watch, the access package through
the server's relay of its presigned link, audit); the CLI's errors as exit codes; its SigV4 signing."""

from __future__ import annotations

import hashlib
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from dsrflow_cli.api import Api, CliError, Unreachable
from dsrflow_cli.main import main as dsrflow
from local.simulators.data import SAMPLE

ROOT = Path(__file__).resolve().parents[2]
DPO = "arn:aws:iam::123456789012:role/dpo"
# One vendor day per second: the gate holds until the 30-day deadline, 30 s here, ample time to answer it.
GATE_SCALE = "86400"


class Server:
    """`python -m local serve` in a subprocess; `url` once it printed its banner."""

    def __init__(self, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "local", "serve", "--port", "0", "--vendors", "bloomreach"]
            + ["--approval", "erase", "--time-scale", GATE_SCALE],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for("dsrflow local API on ").split(" on ", 1)[1].split()[0]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _wait_for(self, text: str, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the server exited ({self.proc.returncode}): {self.log.name}") from None
                continue
            if text in line:
                return line
        raise AssertionError(f"no {text!r} from the server within {timeout:.0f}s")

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit code and what it printed meanwhile."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        time.sleep(0.1)  # the reader thread drains the last lines
        said = []
        while not self.lines.empty():
            said.append(self.lines.get())
        self.log.close()
        return rc, "\n".join(said)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("serve") / "serve.log")
    yield running
    if running.proc.poll() is None:
        running.interrupt()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """dsrflow in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = dsrflow(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_a_request_through_the_local_api_submit_status_approve_watch_audit(server, capsys, tmp_path):
    api = ("--api", server.url)
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "actions": ["export", "erase"],
                "subject": {"email": SAMPLE.email, "customer_ids": {"registered": SAMPLE.registered}},
                "vendors": ["bloomreach"],
            }
        )
    )
    rc, out, err = cli(capsys, *api, "submit", str(request), "--request-id", "cli-1")
    assert rc == 0, err
    assert out.startswith("Request cli-1 accepted; GDPR deadline 20")

    # The erase waits at the gate.
    end = time.monotonic() + 20
    while True:
        rc, out, err = cli(capsys, "status", "cli-1", "--json", *api)
        assert rc == 0, err
        if json.loads(out)["status"] == "awaiting_approval":
            break
        assert time.monotonic() < end, out
        time.sleep(0.2)
    rc, out, _ = cli(capsys, *api, "status", "cli-1")
    assert rc == 0
    assert "Request cli-1: awaiting_approval" in out
    assert "VENDOR      ACTION  STATE              SINCE" in out and "NEXT LOOK" in out
    assert any(line.split()[:3] == ["bloomreach", "erase", "awaiting_approval"] for line in out.splitlines()), out
    rc, out, _ = cli(capsys, *api, "list", "--status", "awaiting_approval")
    assert rc == 0 and any(line.split()[:2] == ["cli-1", "awaiting_approval"] for line in out.splitlines()), out
    rc, out, _ = cli(capsys, *api, "list", "--due-within", "31", "--json")
    assert "cli-1" in [r["request_id"] for r in json.loads(out)["requests"]]
    # Still running: no access package to hand out yet (409, exit 1), and nothing lands in DIR.
    early = tmp_path / "early"
    rc, out, err = cli(capsys, *api, "package", "cli-1", "--out", str(early))
    assert rc == 1 and "cli-1 is still running" in err and "HTTP 409" in err, err
    assert not early.exists() or not any(early.iterdir())

    rc, out, err = cli(
        capsys, *api, "--principal", DPO, "approve", "cli-1", "--vendor", "bloomreach", "--action", "erase",
        "--reason", "identity checked by phone",
    )  # fmt: skip
    assert rc == 0, err
    assert out.strip() == f"Request cli-1: approved by {DPO}: bloomreach erase"

    rc, out, err = cli(capsys, *api, "watch", "cli-1", "--interval", "0.2", "--timeout", "30")
    assert rc == 0, out + err
    assert "request completed" in out and "Request cli-1: completed" in out

    # The access package, through the server's relay of its presigned link, verified before it is kept.
    recorded = json.loads(cli(capsys, *api, "status", "cli-1", "--json")[1])["manifest"]["package"]
    assert recorded["status"] == "built", recorded
    out_dir = tmp_path / "out"
    rc, out, err = cli(capsys, *api, "--principal", DPO, "package", "cli-1", "--out", str(out_dir), "--json")
    assert rc == 0, err
    answer = json.loads(out)
    assert "url" not in answer and answer["verified"] is True
    path = Path(answer["path"])
    assert path == out_dir / "dsrflow-access-cli-1.zip" and [p.name for p in out_dir.iterdir()] == [path.name]
    data = path.read_bytes()
    assert len(data) == answer["bytes"] == recorded["bytes"]
    assert hashlib.sha256(data).hexdigest() == answer["sha256"] == recorded["sha256"]
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None and {"index.html", "manifest.json"} <= set(zf.namelist())
        assert answer["files"] == len(zf.namelist())
    # The human form: a second link (each call mints and audits its own), never printed.
    rc, out, err = cli(capsys, *api, "package", "cli-1", "--out", str(tmp_path / "again"))
    assert rc == 0 and "verified" in out and answer["sha256"] in out, err
    assert "X-Amz-" not in out + err

    rc, out, _ = cli(capsys, *api, "audit", "cli-1")
    assert rc == 0
    approved = [line for line in out.splitlines() if " approved " in line]
    assert len(approved) == 1 and DPO in approved[0] and "identity checked by phone" in approved[0], out
    issued = [line for line in out.splitlines() if "package link issued" in line]
    assert len(issued) == 2 and DPO in issued[0] and "X-Amz-" not in out, out
    rc, out, _ = cli(capsys, *api, "audit", "cli-1", "--json")
    events = [e["event"] for e in json.loads(out)["events"]]
    assert events.index("approval requested") < events.index("approved") < events.index("manifest written")

    # Nothing awaits approval any more: the API's 409, its message, exit 1.
    rc, out, err = cli(capsys, *api, "approve", "cli-1")
    assert rc == 1 and "has no action awaiting approval" in err and "HTTP 409" in err


@pytest.mark.slow
def test_an_unknown_request_is_exit_1_with_the_api_message_and_no_traceback(server):
    result = subprocess.run(
        [sys.executable, "-m", "dsrflow_cli", "status", "nobody"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "DSRFLOW_API": server.url},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == "error: no request with id nobody (HTTP 404, not found)"
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow
def test_a_bad_body_is_exit_1_with_the_fields_the_api_names(server, capsys):
    rc, out, err = cli(capsys, "--api", server.url, "submit", "--email", "not-an-email", "--vendors", "bloomreach")
    assert rc == 1 and out == ""
    assert err.splitlines()[0] == "error: invalid request (HTTP 400)"
    assert "  subject.email: is not an email address" in err.splitlines()
    assert "not-an-email" not in err, "the API names the field, never its value"
    rc, out, err = cli(capsys, "--api", server.url, "extend", "nobody", "--days", "90", "--reason", "x", "--json")
    assert rc == 1 and "days" in err and json.loads(out)["error"] == "invalid request"


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly(server):
    rc, said = server.interrupt()
    assert rc == 0, said
    assert "Stopped: HTTP server, local cloud and simulators." in said


# --- without a server ---------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_server_is_exit_3_in_one_line(capsys):
    rc, out, err = cli(capsys, "--api", f"http://127.0.0.1:{_closed_port()}", "list")
    assert rc == 3 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: cannot reach http://127.0.0.1:")


def test_no_target_and_bad_flags_are_usage_errors(capsys, monkeypatch):
    monkeypatch.delenv("DSRFLOW_API", raising=False)
    rc, _, err = cli(capsys, "status", "x")
    assert rc == 2 and "--api" in err
    with pytest.raises(SystemExit) as exited:
        dsrflow(["--api", "http://127.0.0.1:1", "deny", "x"])  # --reason is required
    assert exited.value.code == 2


def test_the_local_server_refuses_a_non_loopback_address():
    from local.cli import main as local_main
    from local.serve import LocalApi

    with pytest.raises(ValueError, match="loopback only"):
        LocalApi(cloud=None, host="0.0.0.0")
    assert local_main(["serve", "--host", "192.168.1.10"]) == 2


class _Session:
    region_name = "eu-central-1"

    def __init__(self, credentials: Credentials | None):
        self.credentials = credentials

    def get_credentials(self) -> Credentials | None:
        return self.credentials


def _never() -> Any:
    raise AssertionError("no AWS session for a loopback URL")


def test_calls_to_a_deployed_api_are_sigv4_signed_and_loopback_calls_are_not():
    sent: list[dict[str, Any]] = []

    class Answer:
        status_code, content, text, reason = 200, b"{}", "{}", "OK"

        def json(self) -> Any:
            return {}

    def send(method: str, url: str, **kwargs: Any) -> Any:
        sent.append({"method": method, "url": url, **kwargs})
        return Answer()

    deployed = Api(
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/",
        session_factory=lambda: _Session(Credentials("AKIDEXAMPLE", "secret", "token")),
        send=send,
    )
    deployed.call("GET", "/requests", query={"status": "awaiting_approval", "due_before": "2027-01-15T00:00:00Z"})
    headers = sent[-1]["headers"]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]  # the region of the URL
    assert headers["X-Amz-Security-Token"] == "token" and "X-Amz-Date" in headers
    # Signed as sent: the query RFC 3986-encoded, in order.
    assert sent[-1]["url"] == (
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/requests"
        "?due_before=2027-01-15T00%3A00%3A00Z&status=awaiting_approval"
    )

    local = Api("http://127.0.0.1:8080", principal=DPO, session_factory=_never, send=send)
    local.call("POST", "/requests/x/approve", {"reason": "ok"})
    headers = sent[-1]["headers"]
    assert "Authorization" not in headers and not any(k.startswith("X-Amz") for k in headers)
    assert headers["X-Dsrflow-Principal"] == DPO
    assert "Authorization" not in Api("http://localhost:9", session_factory=_never).headers("GET", "x", None)


def test_missing_credentials_are_a_one_line_hint_and_plain_http_is_loopback_only():
    api = Api("https://abc123.execute-api.eu-west-1.amazonaws.com/prod", session_factory=lambda: _Session(None))
    with pytest.raises(Unreachable) as raised:
        api.headers("GET", api.url("/requests"), None)
    assert raised.value.code == 3 and "no AWS credentials" in raised.value.message
    assert "\n" not in raised.value.message
    with pytest.raises(CliError) as refused:
        Api("http://abc123.execute-api.eu-west-1.amazonaws.com/prod")
    assert refused.value.code == 2
