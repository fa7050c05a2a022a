"""The shared vendor HTTP client against real servers on loopback: retries, Retry-After, allow-listed
messages, redirects refused, at most one vendor job per call, the JSON size cap.

`RawServer` (also used by test_http_deadline / test_http_download) is a plain TCP server whose answer
function decides how, or whether, a hostile vendor answers.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import requests

from core.errors import VendorAuthError, VendorError, VendorTransientError
from core.http import RetryPolicy, VendorHttp, parse_retry_after
from local.simulators.base import Faults, Request, Response, Simulator, chunked

# --- a hostile vendor on loopback ---------------------------------------------------------------------------


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


Answer = Callable[[socket.socket, RawRequest], None]


class RawServer:
    """A TCP server on 127.0.0.1: reads each request (head and Content-Length body), records it, then lets
    `answer(conn, request)` write whatever it likes (or nothing). One request per connection.

    `listen=False` reserves the port without listening (connections are refused) until `start()`."""

    def __init__(self, answer: Answer, *, tls: ssl.SSLContext | None = None, listen: bool = True):
        self.answer = answer
        self.tls = tls
        self.requests: list[RawRequest] = []
        self.connections = 0
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        if listen:
            self.start()

    def start(self) -> None:
        self._sock.listen(32)
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stopped.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
                head, _, body = data.partition(b"\r\n\r\n")
                first, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = first.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
                while len(body) < int(headers.get("content-length") or 0):
                    body += conn.recv(65536)
                request = RawRequest(method, path, headers, body)
                with self._lock:
                    self.requests.append(request)
                self.answer(conn, request)
        except (OSError, ssl.SSLError, ValueError):
            pass


def response_bytes(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close"}
    head.update(headers or {})
    lines = [f"HTTP/1.1 {status} Whatever"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reply(status: int, body: bytes | dict | list = b"", headers: dict[str, str] | None = None) -> Answer:
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body

    def answer(conn: socket.socket, req: RawRequest) -> None:
        conn.sendall(response_bytes(status, data, headers))

    return answer


def in_turn(*answers: Answer) -> Answer:
    """Answer the n-th request with the n-th answer (the last one repeats)."""
    count = iter(range(10**9))

    def answer(conn: socket.socket, req: RawRequest) -> None:
        answers[min(next(count), len(answers) - 1)](conn, req)

    return answer


def silent(conn: socket.socket, req: RawRequest) -> None:
    """Read the request, then drop the connection without a word."""


def client(attempts: int = 3, sleep: Callable[[float], None] = lambda s: None, **kw) -> VendorHttp:
    kw.setdefault("timeout", (1.0, 2.0))
    return VendorHttp("acme", retry=RetryPolicy(attempts=attempts, sleep=sleep), **kw)


# --- the simulator-based basics (kept from before) ----------------------------------------------------------


class EchoSimulator(Simulator):
    name = "echo"

    def routes(self):
        return [
            ("GET", r"/ok", lambda req: Response.json({"ok": True})),
            ("GET", r"/forbidden", lambda req: Response.json({"message": "invalid secret"}, 403)),
            ("GET", r"/bad", lambda req: Response.json({"error": "customerKey is missing"}, 400)),
            ("GET", r"/file", self.file),
        ]

    def file(self, req: Request) -> Response:
        data = b"x" * 200_000
        return Response(body=chunked(data, 10_000), content_type="application/zip", length=len(data), download=True)


@pytest.fixture
def sim():
    with EchoSimulator() as s:
        yield s


def test_ok_passes_through(sim, vendor_http):
    assert vendor_http("echo").json("GET", sim.base_url + "/ok") == {"ok": True}


def test_429_is_retried_honouring_retry_after(sim, vendor_http, sleeps):
    sim.faults.rate_limit, sim.faults.retry_after = 2, 7
    assert vendor_http("echo").json("GET", sim.base_url + "/ok") == {"ok": True}
    assert sleeps.delays == [7.0, 7.0]
    assert [c.status for c in sim.calls] == [429, 429, 200]


def test_5xx_retried_then_transient_error_names_the_call_not_the_path_or_query(sim, vendor_http):
    sim.faults.server_errors = 10
    with pytest.raises(VendorTransientError) as err:
        vendor_http("echo", attempts=3).json("GET", sim.base_url + "/ok?customerKey=secret-key", call="status")
    assert str(err.value) == "echo: status answered HTTP 503 after 3 tries"
    assert err.value.ambiguous is False
    assert "Service unavailable" in err.value.detail
    assert len(sim.calls) == 3


def test_without_a_call_name_the_method_names_it(sim, vendor_http):
    sim.faults.server_errors = 10
    with pytest.raises(VendorTransientError, match=r"^echo: GET call answered HTTP 503 after 2 tries$"):
        vendor_http("echo", attempts=2).json("GET", sim.base_url + "/ok")


def test_connection_refused_is_transient(vendor_http):
    with pytest.raises(VendorTransientError, match="connection failed after 2 tries"):
        vendor_http("echo", attempts=2).request("GET", "http://127.0.0.1:9/nothing")


def test_403_fails_at_once_as_auth_error_with_the_vendor_words_in_detail_only(sim, vendor_http):
    with pytest.raises(VendorAuthError) as err:
        vendor_http("echo").json("GET", sim.base_url + "/forbidden", call="job status")
    assert str(err.value) == "echo: job status was refused with HTTP 403; check the vendor credentials"
    assert err.value.status_code == 403 and err.value.detail == "invalid secret"
    assert len(sim.calls) == 1


def test_400_fails_at_once_with_the_vendor_words_in_detail_only(sim, vendor_http):
    with pytest.raises(VendorError) as err:
        vendor_http("echo").json("GET", sim.base_url + "/bad", call="lookup")
    assert str(err.value) == "echo: lookup answered HTTP 400"
    assert err.value.detail == "customerKey is missing"
    assert len(sim.calls) == 1


def test_cut_download_is_visible_to_the_reader(vendor_http):
    with EchoSimulator(faults=Faults(cut_download_after=50_000)) as sim:
        response = vendor_http("echo").request("GET", sim.base_url + "/file", stream=True)
        assert response.headers["Content-Length"] == "200000"
        with pytest.raises(requests.exceptions.RequestException):
            b"".join(response.iter_content(8192))
        # the second download is whole: only one was configured to break
        response = vendor_http("echo").request("GET", sim.base_url + "/file", stream=True)
        assert len(b"".join(response.iter_content(8192))) == 200_000


def test_retry_after_parses_seconds_and_dates():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_retry_after_that_is_not_a_number_is_ignored():
    assert parse_retry_after("nan") is None and parse_retry_after("inf") is None


def test_redacted_fragments_never_reach_errors_details_or_logs(sim, vendor_http, caplog):
    http = vendor_http("echo", attempts=2)
    http.redact["/forbidden"] = "/{token}"
    sim.faults.server_errors = 1
    with caplog.at_level("WARNING"), pytest.raises(VendorAuthError) as err:
        http.json("GET", sim.base_url + "/forbidden")
    assert str(err.value) == "echo: GET call was refused with HTTP 403; check the vendor credentials"
    assert caplog.records and all("/forbidden" not in str(r.__dict__) for r in caplog.records)


def test_echoed_values_are_masked_in_the_detail(sim, vendor_http):
    with pytest.raises(VendorError) as err:
        vendor_http("echo").json("GET", sim.base_url + "/bad", hide=("customerKey",))
    assert err.value.detail == "*** is missing"


def test_retry_after_longer_than_the_budget_hands_over_to_the_workflow(sim, sleeps):
    sim.faults.rate_limit, sim.faults.retry_after = 5, 60
    http = VendorHttp("echo", retry=RetryPolicy(attempts=5, budget=90, sleep=sleeps))
    with pytest.raises(VendorTransientError, match="the workflow retries later"):
        http.json("GET", sim.base_url + "/ok")
    assert sleeps.delays == [60.0]  # a second minute would outlast the budget
    assert len(sim.calls) == 2


def test_a_destructive_call_is_refused_in_a_dry_run_before_sending():
    from core.errors import DryRunViolation

    with RawServer(reply(200, {})) as server:
        http = client()
        http.dry_run = True
        with pytest.raises(DryRunViolation, match="acme: erase is destructive and this request is a dry run"):
            http.json("POST", server.url + "/erase", call="erase", destructive=True)
        assert server.requests == []


# --- 1. allow-listed messages -------------------------------------------------------------------------------

EMAIL = "zoë.o'neil+dsr@example.com"
KEY = "ck-7f3a9e"
# The forms a vendor echoes them in: as is, upper-cased, URL-encoded, JSON-escaped.
ECHOES = {
    "email": EMAIL,
    "upper-cased key": KEY.upper(),
    "url-encoded email": quote(EMAIL, safe=""),
    "json-escaped email": json.dumps(EMAIL)[1:-1],
}
# What the vendor answers: every form at once, as JSON (400) or as text.
SAID = (
    f"no profile for {EMAIL} (key {KEY.upper()}, query {ECHOES['url-encoded email']}, "
    f'json "{ECHOES["json-escaped email"]}")'
)
BODIES = {
    400: ("application/json", json.dumps({"message": SAID}).encode()),
    404: ("text/plain", SAID.encode()),
    422: ("text/plain; charset=utf-8", SAID.encode()),
    503: ("text/plain", SAID.encode()),
}


@pytest.mark.parametrize("status", sorted(BODIES))
@pytest.mark.parametrize("hidden", [True, False])
def test_messages_never_quote_the_vendor_the_path_or_the_query(status, hidden):
    content_type, body = BODIES[status]
    with RawServer(reply(status, body, {"Content-Type": content_type})) as server:
        url = f"{server.url}/v1/customers/{KEY}/profile?email={quote(EMAIL, safe='')}"
        with pytest.raises((VendorError, VendorTransientError)) as err:
            client(attempts=2).json("GET", url, call="profile lookup", hide=(EMAIL, KEY) if hidden else ())
    exc = err.value
    expected = (
        "acme: profile lookup answered HTTP 503 after 2 tries"
        if status == 503
        else (f"acme: profile lookup answered HTTP {status}")
    )
    assert str(exc) == exc.message == expected
    for form in (*ECHOES.values(), "/v1/customers", "email=", KEY, "no profile"):
        assert form.casefold() not in exc.message.casefold()
    if hidden:
        assert exc.detail.count("***") == 4 and exc.detail.startswith("no profile for *** (key ***")
        assert all(form.casefold() not in exc.detail.casefold() for form in ECHOES.values())
    else:
        assert exc.detail == SAID


def test_retry_log_lines_carry_only_call_status_attempt_and_delay(caplog):
    body = json.dumps({"message": f"overloaded while handling {EMAIL}"}).encode()
    with RawServer(reply(503, body)) as server, caplog.at_level("WARNING"), pytest.raises(VendorTransientError):
        client(attempts=3).json("GET", f"{server.url}/x?email={quote(EMAIL)}", call="lookup")
    records = [r for r in caplog.records if r.getMessage() == "vendor call will be retried"]
    assert len(records) == 2
    for record in records:
        assert (record.call, record.status, record.vendor) == ("lookup", 503, "acme")
        assert record.attempt in (1, 2) and record.delay_s >= 0
        assert "overloaded" not in str(record.__dict__) and "example.com" not in str(record.__dict__)


# --- 2. no redirects for API calls --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_redirect_is_never_followed(status, method):
    with RawServer(reply(200, {"landed": True})) as elsewhere:
        location = elsewhere.url.replace("127.0.0.1", "localhost") + "/landing?token=abc"
        with RawServer(reply(status, b"", {"Location": location})) as vendor, pytest.raises(VendorError) as err:
            client().json(
                method, vendor.url + "/jobs", call="job creation", json={"a": 1}, headers={"x-api-token": "t-1"}
            )
        assert len(vendor.requests) == 1
        assert elsewhere.requests == [] and elsewhere.connections == 0
    assert str(err.value) == (
        f"acme: job creation answered a redirect (HTTP {status}), not followed so nothing leaves the vendor's "
        "host; check base_url"
    )
    assert err.value.status_code == status
    assert err.value.detail == location


def test_a_caller_cannot_switch_redirects_back_on():
    with RawServer(reply(200, {"landed": True})) as elsewhere:
        with RawServer(reply(302, b"", {"Location": elsewhere.url + "/x"})) as vendor:
            with pytest.raises(VendorError, match=r"answered a redirect \(HTTP 302\)"):
                client().request("GET", vendor.url, allow_redirects=True)
        assert elsewhere.requests == []


# --- 4. at most one vendor job per call ---------------------------------------------------------------------


def ambiguous_job_creation(server: RawServer, **kw) -> VendorTransientError:
    with pytest.raises(VendorTransientError) as err:
        client(attempts=4, **kw).json("POST", server.url + "/jobs", call="job creation", creates_job=True, json={})
    return err.value


def test_a_connection_dropped_after_the_request_is_not_repeated():
    with RawServer(silent) as server:
        exc = ambiguous_job_creation(server)
        assert len(server.requests) == 1
    assert exc.ambiguous is True
    assert str(exc) == (
        "acme: job creation failed after the request was sent (the connection dropped); the vendor may have "
        "acted without answering, so it is not repeated here"
    )


def test_a_read_timeout_after_the_request_is_not_repeated():
    def slow(conn, req):
        time.sleep(1.0)

    with RawServer(slow) as server:
        exc = ambiguous_job_creation(server, timeout=(1.0, 0.3))
        assert len(server.requests) == 1
    assert exc.ambiguous is True and "(no answer in time)" in str(exc)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_gateway_failure_on_job_creation_is_not_repeated(status):
    with RawServer(reply(status, {"message": "upstream timeout"})) as server:
        exc = ambiguous_job_creation(server)
        assert len(server.requests) == 1
    assert exc.ambiguous is True and f"(HTTP {status})" in str(exc)
    assert exc.detail == "upstream timeout"


@pytest.mark.parametrize("status", [429, 503])
def test_job_creation_is_retried_when_the_vendor_refused_before_acting(status):
    answers = in_turn(reply(status, {}, {"Retry-After": "0"}), reply(status, {}), reply(201, {"id": "j-1"}))
    with RawServer(answers) as server:
        out = client(attempts=4).json("POST", server.url + "/jobs", call="job creation", creates_job=True, json={})
        assert len(server.requests) == 3
    assert out == {"id": "j-1"}


def test_job_creation_is_retried_when_the_connection_was_refused():
    server = RawServer(reply(201, {"id": "j-1"}), listen=False)  # port reserved, connections refused
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            server.start()  # the vendor comes up before the third try

    try:
        out = client(attempts=4, sleep=sleep).json(
            "POST", server.url + "/jobs", call="job creation", creates_job=True, json={}
        )
        assert out == {"id": "j-1"} and len(sleeps) == 2 and len(server.requests) == 1
    finally:
        server.close()


def test_job_creation_refused_every_time_is_transient_but_not_ambiguous():
    server = RawServer(reply(201, {}), listen=False)
    try:
        exc = ambiguous_job_creation(server)
    finally:
        server.close()
    assert exc.ambiguous is False and str(exc) == "acme: job creation connection failed after 4 tries"


def test_a_body_broken_off_after_a_2xx_is_ambiguous_for_job_creation():
    def half(conn, req):
        conn.sendall(response_bytes(201, b'{"id": "j-1", "pad": "' + b"x" * 100)[:-50])

    with RawServer(half) as server:
        exc = ambiguous_job_creation(server)
        assert len(server.requests) == 1
    assert exc.ambiguous is True and "(its answer broke off)" in str(exc)


def test_other_calls_keep_retrying_a_dropped_connection():
    with RawServer(silent) as server:
        with pytest.raises(VendorTransientError) as err:
            client(attempts=3).json("GET", server.url + "/status", call="job status")
        assert len(server.requests) == 3
    assert err.value.ambiguous is False and str(err.value) == "acme: job status connection failed after 3 tries"


@pytest.mark.parametrize("status", [502, 504])
def test_other_calls_keep_retrying_gateway_errors(status):
    with RawServer(in_turn(reply(status), reply(200, {"ok": 1}))) as server:
        assert client().json("GET", server.url + "/status") == {"ok": 1}
        assert len(server.requests) == 2


# --- 7. the JSON size cap -----------------------------------------------------------------------------------


def streamed(total: int, piece: bytes, headers: dict[str, str] | None = None, head: bytes = b"[") -> Answer:
    """A chunked answer of about `total` bytes, generated as it is sent."""

    def answer(conn: socket.socket, req: RawRequest) -> None:
        lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Transfer-Encoding: chunked"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunk = head + piece
        sent = 0
        while sent < total:
            conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
            chunk = piece
        conn.sendall(b"0\r\n\r\n")

    return answer


def test_a_huge_json_answer_is_refused_quickly_in_bounded_memory():
    with RawServer(streamed(200 * 1024 * 1024, b"1," * 32 * 1024)) as server:
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(VendorError) as err:
                client().json("GET", server.url + "/export", call="export")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        elapsed = time.monotonic() - started
    assert str(err.value) == "acme: export answered more than 1024 KiB of JSON; refused"
    assert err.value.status_code == 200
    assert elapsed < 3 and peak < 5 * 1024 * 1024


def test_a_compressed_json_bomb_is_refused_in_bounded_memory():
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    bomb = b"".join(packer.compress(b" " * (1024 * 1024)) for _ in range(64)) + packer.flush()
    assert len(bomb) < 200 * 1024
    with RawServer(reply(200, bomb, {"Content-Encoding": "gzip"})) as server:
        tracemalloc.start()
        try:
            with pytest.raises(VendorError, match="more than 1024 KiB of JSON"):
                client().json("GET", server.url + "/export", call="export")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_an_announced_length_over_the_cap_is_refused_before_reading():
    def announce(conn, req):
        conn.sendall(response_bytes(200, b"", {"Content-Length": str(200 * 1024 * 1024)}))
        time.sleep(3)

    with RawServer(announce) as server:
        started = time.monotonic()
        with pytest.raises(VendorError, match=r"^acme: export answered more than 4 KiB of JSON; refused$"):
            client(json_limit=4096).json("GET", server.url + "/export", call="export")
        assert time.monotonic() - started < 1


def test_json_at_the_cap_is_accepted():
    doc = {"pad": "x" * (4096 - 11)}
    assert len(json.dumps(doc)) == 4096
    with RawServer(reply(200, doc)) as server:
        assert client(json_limit=4096).json("GET", server.url) == doc


def test_a_body_that_is_not_json_keeps_2_kib_of_it_in_detail_only():
    body = b"<html>" + f"oops for {EMAIL} ".encode() * 500
    with RawServer(reply(200, body, {"Content-Type": "text/html"})) as server, pytest.raises(VendorError) as err:
        client().json("GET", server.url, call="rule status", hide=(EMAIL,))
    assert str(err.value) == "acme: rule status answered HTTP 200 with a body that is not JSON"
    assert err.value.detail.startswith("<html>oops for *** ")
    assert len(err.value.detail) <= 2048 and EMAIL not in err.value.detail


def test_masking_covers_a_body_in_another_encoding():
    latin1 = f"no profile for {EMAIL}".encode("latin-1")
    with RawServer(reply(404, latin1, {"Content-Type": "text/plain; charset=iso-8859-1"})) as server:
        with pytest.raises(VendorError) as err:
            client().json("GET", server.url, call="lookup", hide=(EMAIL,))
    assert err.value.detail == "no profile for ***"
    # and text someone already decoded the wrong way
    assert client().mask(EMAIL.encode().decode("latin-1") + " / " + EMAIL.upper(), [EMAIL]) == "*** / ***"
