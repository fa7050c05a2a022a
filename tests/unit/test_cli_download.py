"""`dsrflow package ID --out DIR` against a stand-in API (its answer) and a real HTTP server on loopback (the
presigned link): the download is verified before it gets its name, a mismatch is exit 5 with nothing left
behind, and the link gets none of the API's headers (no SigV4, no principal)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from dsrflow_cli import main as cli
from dsrflow_cli.api import Api, DownloadFailed

BODY = b"PK\x05\x06" + b"\x00" * 18 + b"zip bytes " * 5000
SHA = hashlib.sha256(BODY).hexdigest()
DEPLOYED = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"


class Link(ThreadingHTTPServer):
    """Serves `body` with `status` at any path; records each request's headers."""

    daemon_threads = True

    def __init__(self) -> None:
        self.body, self.status, self.length = BODY, 200, None
        self.seen: list[dict[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Serve)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/bucket/requests/r-1/package/x.zip?X-Amz-Expires=3600"


class _Serve(BaseHTTPRequestHandler):
    server: Link
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers.items()))
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(self.server.length or len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def link() -> Iterator[Link]:
    server = Link()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class _Answer:
    def __init__(self, body: Any, status: int = 200) -> None:
        self.status_code, self.reason = status, "OK"
        self.content = json.dumps(body).encode()
        self.text = self.content.decode()
        self._body = body

    def json(self) -> Any:
        return self._body


class _Session:
    region_name = "eu-west-1"

    def get_credentials(self) -> Credentials:
        return Credentials("AKIDEXAMPLE", "secret", "token")


def _api(link: Link, answer: dict[str, Any] | None = None, status: int = 200) -> tuple[Api, list[dict[str, Any]]]:
    """A deployed (SigV4-signing) API answering GET /requests/r-1/package with `answer`."""
    calls: list[dict[str, Any]] = []
    given = answer or {
        "request_id": "r-1",
        "url": link.url,
        "expires_at": "2026-12-02T11:00:00Z",
        "bytes": len(BODY),
        "sha256": SHA,
        "files": 4,
    }

    def send(method: str, url: str, **kwargs: Any) -> _Answer:
        calls.append({"method": method, "url": url, **kwargs})
        return _Answer(given, status)

    return Api(DEPLOYED, principal="arn:aws:iam::123456789012:role/dpo", session_factory=_Session, send=send), calls


def _run(api: Api, out: Path, *extra: str) -> int:
    args = cli.parser().parse_args(["--api", DEPLOYED, "package", "r-1", "--out", str(out), *extra])
    return cli.cmd_package(api, args)


def test_the_download_is_verified_then_named_and_gets_no_api_headers(link, tmp_path, capsys):
    api, calls = _api(link)
    out = tmp_path / "new" / "dir"
    assert _run(api, out) == 0
    printed = capsys.readouterr().out
    final = out / "dsrflow-access-r-1.zip"
    assert final.read_bytes() == BODY and sorted(p.name for p in out.iterdir()) == [final.name]
    assert "verified" in printed and str(final) in printed and SHA in printed and str(len(BODY)) in printed
    assert "X-Amz-Expires" not in printed and link.url not in printed, "the link is never printed"
    # The API call was signed; the link got nothing of it.
    assert calls[0]["url"] == DEPLOYED + "/requests/r-1/package"
    assert calls[0]["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256")
    sent = {k.casefold() for k in link.seen[0]}
    assert not sent & {"authorization", "x-amz-date", "x-amz-security-token", "x-dsrflow-principal"}, sent


def test_json_is_the_answer_without_the_link(link, tmp_path, capsys):
    api, _ = _api(link)
    assert _run(api, tmp_path, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert "url" not in printed and printed["verified"] is True and printed["sha256"] == SHA
    assert printed["path"] == str(tmp_path / "dsrflow-access-r-1.zip")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sha256": "0" * 64}, "the download's sha256 is " + SHA),
        ({"bytes": len(BODY) + 1}, f"the download holds {len(BODY)} bytes, the API stated {len(BODY) + 1}"),
        ({"bytes": len(BODY) - 1}, f"more than the {len(BODY) - 1} bytes the API stated"),
    ],
)
def test_a_mismatch_is_exit_5_and_leaves_nothing(link, tmp_path, change, message):
    answer = {"request_id": "r-1", "url": link.url, "bytes": len(BODY), "sha256": SHA, **change}
    api, _ = _api(link, answer)
    (tmp_path / "dsrflow-access-r-1.zip").write_bytes(b"an earlier verified download")
    with pytest.raises(DownloadFailed) as failed:
        _run(api, tmp_path)
    assert failed.value.code == 5 and message in failed.value.message
    # The earlier file is untouched, and no partial file is left.
    assert [p.name for p in tmp_path.iterdir()] == ["dsrflow-access-r-1.zip"]
    assert (tmp_path / "dsrflow-access-r-1.zip").read_bytes() == b"an earlier verified download"


def test_a_download_that_breaks_off_is_exit_5(link, tmp_path):
    link.length = len(BODY) * 2  # announces more than it sends, then closes
    api, _ = _api(link)
    with pytest.raises(DownloadFailed) as failed:
        _run(api, tmp_path)
    assert failed.value.code == 5 and "broke off" in failed.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_refused_link_names_s3_s_code_and_what_to_do(link, tmp_path):
    link.status, link.body = 403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    api, _ = _api(link)
    with pytest.raises(DownloadFailed) as failed:
        _run(api, tmp_path)
    assert (
        "refused (HTTP 403, AccessDenied)" in failed.value.message and "run the command again" in failed.value.message
    )
    assert list(tmp_path.iterdir()) == []


def test_a_plain_http_link_off_loopback_is_refused(link, tmp_path):
    answer = {"request_id": "r-1", "url": "http://bucket.s3.amazonaws.com/k", "bytes": 1, "sha256": SHA}
    api, _ = _api(link, answer)
    with pytest.raises(DownloadFailed, match="not https"):
        _run(api, tmp_path)
    assert not link.seen


def test_the_api_s_refusal_is_exit_1_through_main(tmp_path, capsys, monkeypatch):
    def send(method: str, url: str, **kwargs: Any) -> _Answer:
        return _Answer({"error": "conflict", "message": "request r-1 is still running: ..."}, 409)

    monkeypatch.setattr(cli, "api_for", lambda args: Api("http://127.0.0.1:9", send=send))
    rc = cli.main(["--api", "http://127.0.0.1:9", "package", "r-1", "--out", str(tmp_path)])
    assert rc == 1 and "still running" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
