"""The shared vendor HTTP client against a tiny simulator on loopback: retries, Retry-After, 4xx, cut-offs."""

from __future__ import annotations

import pytest
import requests

from core.errors import VendorAuthError, VendorError, VendorTransientError
from core.http import parse_retry_after
from local.simulators.base import Faults, Request, Response, Simulator, chunked


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


def test_5xx_retried_then_transient_error_names_the_call_not_the_query(sim, vendor_http):
    sim.faults.server_errors = 10
    with pytest.raises(VendorTransientError) as err:
        vendor_http("echo", attempts=3).json("GET", sim.base_url + "/ok?customerKey=secret-key")
    assert "echo: GET /ok answered HTTP 503" in str(err.value)
    assert "secret-key" not in str(err.value)
    assert len(sim.calls) == 3


def test_connection_refused_is_transient(vendor_http):
    with pytest.raises(VendorTransientError, match="connection failed after 2 tries"):
        vendor_http("echo", attempts=2).request("GET", "http://127.0.0.1:9/nothing")


def test_403_fails_at_once_with_vendor_message(sim, vendor_http):
    with pytest.raises(VendorAuthError, match=r"HTTP 403 \(invalid secret\); check the vendor credentials"):
        vendor_http("echo").json("GET", sim.base_url + "/forbidden")
    assert len(sim.calls) == 1


def test_400_fails_at_once_with_vendor_message(sim, vendor_http):
    with pytest.raises(VendorError, match=r"HTTP 400 \(customerKey is missing\)"):
        vendor_http("echo").json("GET", sim.base_url + "/bad")
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


def test_redacted_path_fragments_never_reach_errors_or_logs(sim, vendor_http, caplog):
    http = vendor_http("echo", attempts=2)
    http.redact["/forbidden"] = "/{token}"
    sim.faults.server_errors = 1
    with caplog.at_level("WARNING"), pytest.raises(VendorAuthError) as err:
        http.json("GET", sim.base_url + "/forbidden")
    assert "GET /{token} was refused" in str(err.value)
    assert "/forbidden" not in str(err.value)
    assert caplog.records and all("/forbidden" not in str(r.__dict__) for r in caplog.records)


class RedirectingSimulator(Simulator):
    """Answers every GET with a redirect to `target` (another host), as a download link might."""

    name = "redirector"
    target = ""

    def routes(self):
        return [("GET", r"/.*", lambda req: Response(status=302, headers={"Location": self.target + "/landing"}))]


class RecordingSimulator(Simulator):
    name = "landing"

    def __init__(self):
        super().__init__()
        self.headers: list[dict[str, str]] = []

    def routes(self):
        return [("GET", r"/landing", self.land)]

    def land(self, req: Request) -> Response:
        self.headers.append(req.headers)
        return Response.json({"landed": True})


def test_a_redirect_to_another_host_carries_no_credential_header(vendor_http):
    with RecordingSimulator() as landing, RedirectingSimulator() as redirector:
        redirector.target = landing.base_url.replace("127.0.0.1", "localhost")  # another host name
        out = vendor_http("echo").json(
            "GET", redirector.base_url + "/start", headers={"Api-Key": "k-1", "x-api-token": "t-1"}, auth=("u", "p")
        )
    assert out == {"landed": True}
    (seen,) = landing.headers
    assert not {"api-key", "x-api-token", "authorization"} & set(seen)


def test_echoed_values_are_masked_in_errors(sim, vendor_http):
    sim.faults.server_errors = 0
    with pytest.raises(VendorError) as err:
        vendor_http("echo").json("GET", sim.base_url + "/bad", hide=("customerKey",))
    assert "customerKey" not in str(err.value) and "*** is missing" in str(err.value)


def test_retry_after_longer_than_the_budget_hands_over_to_the_workflow(sim, sleeps):
    from core.http import RetryPolicy, VendorHttp

    sim.faults.rate_limit, sim.faults.retry_after = 5, 60
    http = VendorHttp("echo", retry=RetryPolicy(attempts=5, budget=90, sleep=sleeps))
    with pytest.raises(VendorTransientError, match="the workflow retries later"):
        http.json("GET", sim.base_url + "/ok")
    assert sleeps.delays == [60.0]  # a second minute would outlast the budget
    assert len(sim.calls) == 2


def test_retry_after_that_is_not_a_number_is_ignored():
    assert parse_retry_after("nan") is None and parse_retry_after("inf") is None
