r"""The access package as an operator gets it: a whole request through the `dsrflow` CLI against the local API
server (LocalApi over a LocalCloud with the Bloomreach simulator, in this process), with the approval gate on
the erase: submit, status, approve, watch, `package ID --out DIR` (through the server's presigned-link relay),
audit. And the relay's limits: only GET, only S3 hosts.

`dsrflow package` runs in a process of its own, as it does for an operator: in this process moto's mock
answers every `requests` call to a URL holding `.amazonaws.com` (its catch-all `https?://.+\.amazonaws.com/.*`
matches the relay's `/local-s3/<host>/...` URL too), which is what the relay is for. The relay's limits are
probed with http.client, which moto does not patch."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsrflow_cli.main import main as dsrflow
from local.serve import RELAY_PREFIX, LocalApi
from local.simulators.data import SAMPLE
from tests.workflow.conftest import local_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DPO = "arn:aws:iam::123456789012:role/dpo"
# One vendor day per second (as tests/workflow/test_serve_and_cli.py): the gate holds until the 30-day
# deadline, 30 s here, ample time to answer it; Bloomreach answers at once, so nothing else waits.
GATE_SCALE = 86400.0


@pytest.fixture(scope="module")
def server() -> Iterator[LocalApi]:
    with local_run(time_scale=GATE_SCALE, vendors=("bloomreach",), require_approval="erase") as (cloud, _):
        api = LocalApi(cloud, log=False)
        threading.Thread(target=api.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        try:
            yield api
        finally:
            api.shutdown()
            api.server_close()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = dsrflow(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def package(server: LocalApi, *args: str) -> subprocess.CompletedProcess[str]:
    """`dsrflow package ...` in its own process (see the module doc)."""
    return subprocess.run(
        [sys.executable, "-m", "dsrflow_cli", "--api", server.url, "package", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def _status(capsys: pytest.CaptureFixture[str], api: tuple[str, ...], request_id: str) -> dict[str, Any]:
    rc, out, err = cli(capsys, *api, "status", request_id, "--json")
    assert rc == 0, err
    view: dict[str, Any] = json.loads(out)
    return view


def test_a_request_s_access_package_through_the_cli(server, capsys, tmp_path):
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
    rc, out, err = cli(capsys, *api, "submit", str(request), "--request-id", "pkg-1")
    assert rc == 0, err
    assert out.startswith("Request pkg-1 accepted")

    end = time.monotonic() + 30
    while _status(capsys, api, "pkg-1")["status"] != "awaiting_approval":
        assert time.monotonic() < end, "the erase never reached the gate"
        time.sleep(0.2)
    rc, out, _ = cli(capsys, *api, "status", "pkg-1")
    assert rc == 0 and "Request pkg-1: awaiting_approval" in out

    # Still running: there is no package to hand out yet (409, exit 1), and nothing lands in DIR.
    early = tmp_path / "early"
    rc, out, err = cli(capsys, *api, "package", "pkg-1", "--out", str(early))
    assert rc == 1 and "pkg-1 is still running" in err and "HTTP 409" in err, err
    assert not early.exists() or not any(early.iterdir())

    rc, out, err = cli(capsys, *api, "--principal", DPO, "approve", "pkg-1", "--reason", "identity checked")
    assert rc == 0, err
    rc, out, err = cli(capsys, *api, "watch", "pkg-1", "--interval", "0.2", "--timeout", "60")
    assert rc == 0, out + err
    assert "Request pkg-1: completed" in out, out

    manifest = _status(capsys, api, "pkg-1")["manifest"]
    recorded = manifest.get("package") or {}
    assert recorded.get("status") == "built", manifest

    out_dir = tmp_path / "out"
    done = package(server, "--principal", DPO, "pkg-1", "--out", str(out_dir), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert "url" not in answer and answer["verified"] is True
    path = Path(answer["path"])
    assert path == out_dir / "dsrflow-access-pkg-1.zip" and [p.name for p in out_dir.iterdir()] == [path.name]
    data = path.read_bytes()
    assert len(data) == answer["bytes"] == recorded["bytes"]
    assert hashlib.sha256(data).hexdigest() == answer["sha256"] == recorded["sha256"]
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
    assert {"index.html", "manifest.json"} <= set(names), names
    assert answer["files"] == len(names)

    # The human form, again (a second link: each call mints and audits its own).
    again = package(server, "pkg-1", "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "verified" in again.stdout and str(tmp_path / "again" / "dsrflow-access-pkg-1.zip") in again.stdout
    assert answer["sha256"] in again.stdout and "X-Amz-" not in again.stdout + again.stderr

    rc, out, _ = cli(capsys, *api, "audit", "pkg-1")
    assert rc == 0
    issued = [line for line in out.splitlines() if "package link issued" in line]
    assert len(issued) == 2 and DPO in issued[0], out
    assert "X-Amz-" not in out


def _raw(server: LocalApi, method: str, path: str) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_the_relay_serves_only_get_of_an_s3_link(server):
    for path in (
        f"{RELAY_PREFIX}example.com/x",
        f"{RELAY_PREFIX}sts.amazonaws.com/?Action=GetCallerIdentity",
        f"{RELAY_PREFIX}amazonaws.com.example.org/x",
        f"{RELAY_PREFIX}bucket.s3.eu-west-1.amazonaws.com",
        f"{RELAY_PREFIX}user@bucket.s3.eu-west-1.amazonaws.com/x",
        f"{RELAY_PREFIX}bucket.s3.eu-west-1.amazonaws.com:8443/x",
    ):
        status, body = _raw(server, "GET", path)
        assert status == 404 and b"only GET of a relayed S3 link" in body, path
    s3_link = f"{RELAY_PREFIX}{server.cloud.bucket}.s3.eu-west-1.amazonaws.com/nope"
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        assert _raw(server, method, s3_link)[0] == 404, method
    # An S3 link to nothing: moto's own answer, relayed.
    status, body = _raw(server, "GET", s3_link)
    assert status == 404 and b"NoSuchKey" in body
