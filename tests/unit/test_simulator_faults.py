"""The simulators' fault settings do what base.py says, over real loopback HTTP, and nothing when unset."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests

from local.simulators.base import LOGIN_PAGE, Faults, Response
from local.simulators.bloomreach import BloomreachSimulator
from local.simulators.data import CUSTOMERS, SAMPLE
from local.simulators.elevate import ElevateSimulator
from local.simulators.qualifio import QualifioSimulator

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
EL = "/api/v2/event-data/"
EL_KEY = {"Api-Key": "sim-elevate-key"}
BR = "/data/v2/projects/sim-project/customers/"
BR_AUTH = ("sim-key-id", "sim-secret")
QF_TOKEN = {"x-api-token": "sim-qualifio-token"}
QF_CLIENT = {"clientId": "4242"}


@pytest.fixture
def elevate():
    with ElevateSimulator(vendor_start=T0) as sim:
        yield sim


@pytest.fixture
def bloomreach():
    with BloomreachSimulator() as sim:
        yield sim


@pytest.fixture
def qualifio():
    with QualifioSimulator() as sim:
        yield sim


# --- helpers -------------------------------------------------------------------------------------------------


def el_create(sim: ElevateSimulator, kind: str = "export", key: str = SAMPLE.customer_key, **kw) -> requests.Response:
    return requests.post(
        sim.base_url + EL + f"create-{kind}-customer-job",
        params={"customerKey": key},
        headers=EL_KEY,
        timeout=kw.pop("timeout", 5),
        **kw,
    )


def el_done_export(sim: ElevateSimulator) -> str:
    """A done export job's jid (created directly, so the test's calls start clean)."""
    jid = el_create(sim).json()["jid"]
    sim.clock.advance(timedelta(days=6))
    assert sim.status_of(jid) == "done"
    return jid


def el_download(sim: ElevateSimulator, jid: str, **kw) -> requests.Response:
    return requests.get(
        sim.base_url + EL + "export-customer-job-result", params={"jid": jid}, headers=EL_KEY, timeout=5, **kw
    )


def br_anonymize(sim: BloomreachSimulator, ids: dict | None = None, **kw) -> requests.Response:
    body = {"customer_ids": ids or {"registered": SAMPLE.registered}}
    return requests.post(sim.base_url + BR + "anonymize", json=body, auth=kw.pop("auth", BR_AUTH), timeout=5, **kw)


def qf_rule_body(sim: QualifioSimulator, kind: str = "GDPR_ForgottenRight", test: bool | None = False) -> dict:
    body = {
        "ruleType": kind,
        "clientId": sim.client_id,
        "ruleTypePayload": {"profiles": [p["id"] for p in sim.profiles_of(SAMPLE.email)]},
        "justification": "GDPR request dsr-1",
        "userId": sim.dpo_user_id,
    }
    if test is not None:
        body["test"] = test
    return body


def qf_create(sim: QualifioSimulator, endpoint: str = "forgottenRight", body: dict | None = None) -> requests.Response:
    kind = {"forgottenRight": "GDPR_ForgottenRight", "exportData": "GDPR_ExportData"}[endpoint]
    return requests.post(
        sim.base_url + f"/v1/gdpr/rules/{endpoint}",
        params=QF_CLIENT,
        headers=QF_TOKEN,
        json=body if body is not None else qf_rule_body(sim, kind),
        timeout=5,
    )


def connect(sim) -> socket.socket:
    parts = urlsplit(sim.base_url)
    return socket.create_connection((parts.hostname, parts.port), timeout=5)


def raw_request(sim, target: str, headers: dict[str, str], method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: sim", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The status line and headers, and whatever body bytes arrived with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the headers ended"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def header(head: bytes, name: str) -> str | None:
    for line in head.decode().split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


# --- no faults: as before ----------------------------------------------------------------------------------


def test_faults_default_to_off_and_old_settings_keep_their_defaults_and_order():
    f = Faults()
    assert [x.name for x in fields(Faults)][:8] == [
        "rate_limit",
        "retry_after",
        "server_errors",
        "server_error_status",
        "delay",
        "cut_download_after",
        "cut_downloads",
        "path_pattern",
    ]
    assert (f.rate_limit, f.retry_after, f.server_errors, f.server_error_status, f.delay) == (0, 1.0, 0, 503, 0.0)
    assert (f.cut_download_after, f.cut_downloads, f.path_pattern) == (None, 1, None)
    assert (f.reject, f.reject_status, f.reject_body, f.reject_content_type) == (0, 400, None, "application/json")
    assert (f.redirect_to, f.redirects, f.drop_after_acting) == (None, 1, 0)
    assert (f.slow_after_acting, f.slow_after_acting_count, f.rewrite, f.rewrites) == (0.0, 1, None, 1)
    assert (f.html_instead, f.short_length, f.short_lengths, f.drip, f.drip_headers) == (0, None, 1, None, False)


def test_without_faults_elevate_answers_as_documented_on_one_kept_alive_connection(elevate):
    with requests.Session() as s:
        s.headers.update(EL_KEY)
        created = s.post(
            elevate.base_url + EL + "create-export-customer-job", params={"customerKey": SAMPLE.customer_key}
        )
        jid = created.json()["jid"]
        status = s.get(elevate.base_url + EL + "job-status", params={"jid": jid})
        elevate.clock.advance(timedelta(days=6))
        archive = s.get(elevate.base_url + EL + "export-customer-job-result", params={"jid": jid})
        gone = s.get(elevate.base_url + EL + "export-customer-job-result", params={"jid": jid})
    assert (created.status_code, created.json()["status"]) == (200, "created")
    assert created.headers["Content-Type"] == "application/json"
    assert int(created.headers["Content-Length"]) == len(created.content)
    assert status.json() == {"jid": jid, "status": "created"}
    assert archive.headers["Content-Type"] == "application/zip"
    assert int(archive.headers["Content-Length"]) == len(archive.content) and archive.content[:2] == b"PK"
    assert (gone.status_code, gone.json()) == (200, {"jid": jid, "status": "not_found"})
    assert [(c.status, c.faults) for c in elevate.calls] == [(200, [])] * 4
    assert [c.acted for c in elevate.calls] == [True, False, False, False]
    assert elevate.calls[0].body == b""


def test_without_faults_bloomreach_and_qualifio_answer_as_documented(bloomreach, qualifio):
    one = requests.post(
        bloomreach.base_url + BR + "export-one",
        json={"customer_ids": {"registered": SAMPLE.registered}},
        auth=BR_AUTH,
        timeout=5,
    )
    assert one.status_code == 200 and one.json()["properties"]["email"] == SAMPLE.email
    assert int(one.headers["Content-Length"]) == len(one.content)
    csv_export = requests.post(bloomreach.base_url + BR + "export", json={"format": "csv"}, auth=BR_AUTH, timeout=5)
    assert csv_export.headers.get("Transfer-Encoding") == "chunked" and csv_export.text.startswith("registered,")

    rule = qf_create(qualifio, "exportData")
    assert rule.status_code == 201 and rule.json()["ruleStatus"]["status"] == "NEW"
    assert [(c.status, c.faults, c.acted) for c in qualifio.calls] == [(201, [], True)]


def test_every_download_completes_before_the_client_can_ask_again(elevate):
    # on_complete (Elevate forgets the job) runs before the last byte leaves: no race with the next call.
    jids = [el_create(elevate).json()["jid"] for _ in range(15)]
    elevate.clock.advance(timedelta(days=6))
    for jid in jids:
        assert el_download(elevate, jid).content[:2] == b"PK"
        assert elevate.status_of(jid) == "not_found"


def test_auth_and_route_decide_before_pre_action_faults(elevate):
    elevate.faults.rate_limit, elevate.faults.reject = 1, 1
    refused = requests.post(
        elevate.base_url + EL + "create-remove-customer-job",
        params={"customerKey": SAMPLE.customer_key},
        headers={"Api-Key": "wrong"},
        timeout=5,
    )
    unknown = requests.get(elevate.base_url + "/api/v2/no-such-call", headers=EL_KEY, timeout=5)
    assert (refused.status_code, unknown.status_code) == (403, 404)
    assert (elevate.faults.rate_limit, elevate.faults.reject) == (1, 1)  # not consumed

    assert el_create(elevate).status_code == 429
    assert el_create(elevate).status_code == 400  # the reject
    assert el_create(elevate).status_code == 200
    assert [c.faults for c in elevate.calls] == [[], [], ["rate_limit"], ["reject"], []]


# --- pre-action faults -------------------------------------------------------------------------------------


def test_reject_answers_the_given_status_and_body_built_from_the_request_without_acting(elevate):
    key = "7d3f0c2e-5b1a-4c8e-9f00-00000000abcd"
    elevate.faults.reject = 1
    elevate.faults.reject_body = lambda req: json.dumps(
        {"message": f"no customer {req.query['customerKey'].upper()}"}
    ).encode()
    answer = el_create(elevate, "remove", key=key)
    assert answer.status_code == 400
    assert answer.json() == {"message": f"no customer {key.upper()}"}
    assert answer.headers["Content-Type"] == "application/json"
    assert elevate.jobs == {} and elevate.jobs_created() == 0
    assert len(elevate.destructive_calls()) == 1 and elevate.destructive_acted() == 0

    assert el_create(elevate, "remove", key=key).status_code == 200  # one reject was asked for
    assert elevate.jobs_created("remove") == 1 and elevate.destructive_acted() == 1


def test_reject_with_fixed_bytes_status_and_content_type(qualifio):
    f = qualifio.faults
    f.reject, f.reject_status, f.reject_body, f.reject_content_type = 2, 422, b"<error>nope</error>", "text/xml"
    f.path_pattern = r"/rules/forgottenRight$"
    first, second = qf_create(qualifio), qf_create(qualifio)
    assert [(r.status_code, r.content, r.headers["Content-Type"]) for r in (first, second)] == [
        (422, b"<error>nope</error>", "text/xml")
    ] * 2
    assert qualifio.rules == {} and qualifio.jobs_created() == 0
    assert qf_create(qualifio, "exportData").status_code == 201  # path_pattern: other calls untouched
    assert qf_create(qualifio).status_code == 201


def test_default_reject_body_is_a_json_message(bloomreach):
    bloomreach.faults.reject = 1
    answer = br_anonymize(bloomreach)
    assert (answer.status_code, answer.json()) == (400, {"message": "Request rejected (injected)"})
    assert bloomreach.record_of(SAMPLE)["anonymized"] is False and bloomreach.received == []


def test_redirect_answers_307_to_the_same_path_and_query_elsewhere_without_acting(elevate):
    elevate.faults.redirect_to = "http://169.254.169.254/"
    answer = el_create(elevate, "remove", allow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["Location"] == (
        f"http://169.254.169.254/api/v2/event-data/create-remove-customer-job?customerKey={SAMPLE.customer_key}"
    )
    assert elevate.jobs_created() == 0 and elevate.destructive_acted() == 0
    assert elevate.calls[-1].faults == ["redirect"]
    assert el_create(elevate, "remove", allow_redirects=False).status_code == 200  # redirects=1 by default


def test_redirect_without_query_and_counted(bloomreach):
    bloomreach.faults.redirect_to, bloomreach.faults.redirects = "https://eu.example.invalid", 2
    answers = [br_anonymize(bloomreach, allow_redirects=False) for _ in range(3)]
    assert [a.status_code for a in answers] == [307, 307, 200]
    assert answers[0].headers["Location"] == "https://eu.example.invalid" + BR + "anonymize"
    assert bloomreach.customers_anonymized() == 1


# --- post-action faults ------------------------------------------------------------------------------------


def test_drop_after_acting_closes_without_an_answer_but_the_elevate_job_exists(elevate):
    elevate.faults.drop_after_acting = 1
    with pytest.raises(requests.exceptions.ConnectionError):
        el_create(elevate, "remove")
    assert elevate.jobs_created("remove") == 1
    [job] = elevate.jobs.values()
    assert job.kind == "remove" and job.customer_key == SAMPLE.customer_key
    call = elevate.calls[-1]
    assert (call.status, call.faults, call.acted) == (0, ["drop_after_acting"], True)
    assert elevate.destructive_acted() == 1 and elevate.faults.drop_after_acting == 0
    assert el_create(elevate).status_code == 200  # only one was dropped


def test_drop_after_acting_bloomreach_customer_is_anonymized(bloomreach):
    bloomreach.faults.drop_after_acting = 1
    with pytest.raises(requests.exceptions.ConnectionError):
        br_anonymize(bloomreach)
    assert bloomreach.record_of(SAMPLE)["anonymized"] is True
    assert bloomreach.jobs_created() == 1 and bloomreach.destructive_acted() == 1


def test_drop_after_acting_is_seen_at_the_socket_as_a_close_after_the_request(elevate):
    elevate.faults.drop_after_acting = 1
    with connect(elevate) as sock:
        sock.sendall(
            raw_request(
                elevate,
                f"{EL}create-export-customer-job?customerKey={SAMPLE.customer_key}",
                {**EL_KEY, "Content-Length": "0"},
                "POST",
            )
        )
        assert read_until_closed(sock) == b""
    assert elevate.jobs_created() == 1


def test_slow_after_acting_is_a_read_timeout_after_the_vendor_acted(elevate):
    elevate.faults.slow_after_acting = 1.5
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        el_create(elevate, "remove", timeout=(2, 0.3))
    assert time.monotonic() - started < 1.2
    assert elevate.jobs_created("remove") == 1 and elevate.destructive_acted() == 1
    assert elevate.calls[-1].faults == ["slow_after_acting"]
    assert el_create(elevate, timeout=(2, 0.3)).status_code == 200  # slow_after_acting_count=1 by default


def test_slow_after_acting_answers_late_when_the_client_waits(bloomreach):
    bloomreach.faults.slow_after_acting, bloomreach.faults.slow_after_acting_count = 0.3, 2
    started = time.monotonic()
    answers = [br_anonymize(bloomreach, {"registered": c.registered}) for c in CUSTOMERS[:3]]
    assert [a.json() for a in answers] == [{"success": True}] * 3
    assert 0.6 <= time.monotonic() - started < 1.5
    assert [c.faults for c in bloomreach.calls] == [["slow_after_acting"]] * 2 + [[]]


def test_rewrite_sees_what_the_handler_answered_and_replaces_it_after_acting(elevate):
    seen = []

    def huge_status(req, resp):
        seen.append((req.path, resp.status, json.loads(resp.body)))
        return Response.json({"jid": req.query["jid"], "status": "x" * 300_000})

    jid = el_create(elevate, "remove").json()["jid"]
    elevate.faults.rewrite, elevate.faults.path_pattern = huge_status, r"/job-status$"
    status = requests.get(elevate.base_url + EL + "job-status", params={"jid": jid}, headers=EL_KEY, timeout=5)
    assert status.json() == {"jid": jid, "status": "x" * 300_000}
    assert seen == [(EL + "job-status", 200, {"jid": jid, "status": "started"})]
    again = requests.get(elevate.base_url + EL + "job-status", params={"jid": jid}, headers=EL_KEY, timeout=5)
    assert again.json()["status"] == "started"  # rewrites=1 by default


def test_rewrite_of_a_create_keeps_what_the_vendor_did(qualifio):
    qualifio.faults.rewrite = lambda req, resp: Response.json({"message": "Internal error"}, 500)
    assert qf_create(qualifio).status_code == 500
    assert qualifio.jobs_created("forgottenRight") == 1 and qualifio.destructive_acted() == 1


def test_rewrite_can_stream_an_endless_json_answer(elevate):
    produced = []

    def endless(req, resp):
        def body():
            yield b'{"jid": "' + b"9" * 10
            while True:
                produced.append(1)
                yield b"9" * 65536

        return Response(body=body())

    elevate.faults.rewrite = endless
    answer = el_create(elevate, stream=True)
    assert answer.headers["Transfer-Encoding"] == "chunked"
    received = 0
    for chunk in answer.iter_content(1 << 20):
        received += len(chunk)
        if received > 5_000_000:
            break
    answer.close()
    assert elevate.jobs_created() == 1


def test_rewrite_can_point_a_qualifio_archive_elsewhere_and_archive_url_does_it_for_all(qualifio):
    rule = qf_create(qualifio, "exportData").json()
    qualifio.approve(rule["_id"])
    qualifio.clock.advance(timedelta(minutes=31))
    archive_id = qualifio.rule(rule["_id"])["archive"]
    where = qualifio.base_url + f"/v1/gdpr/rules/{rule['_id']}/archive/{archive_id}"
    own = requests.get(where, params=QF_CLIENT, headers=QF_TOKEN, timeout=5).json()["url"]
    assert own.startswith(qualifio.base_url + "/archives/")

    qualifio.archive_url = "http://169.254.169.254/latest/meta-data/"
    assert requests.get(where, params=QF_CLIENT, headers=QF_TOKEN, timeout=5).json()["url"] == qualifio.archive_url
    qualifio.archive_url = None
    assert requests.get(where, params=QF_CLIENT, headers=QF_TOKEN, timeout=5).json()["url"] == own


# --- sending faults ----------------------------------------------------------------------------------------


def test_html_instead_answers_a_login_page_and_keeps_the_elevate_job(elevate):
    jid = el_done_export(elevate)
    elevate.faults.html_instead = 1
    page = el_download(elevate, jid)
    assert (page.status_code, page.headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert page.content == LOGIN_PAGE == b"<html><body>Please log in</body></html>"
    assert elevate.status_of(jid) == "done"  # on_complete did not run
    archive = el_download(elevate, jid)
    assert archive.headers["Content-Type"] == "application/zip" and archive.content[:2] == b"PK"
    assert elevate.status_of(jid) == "not_found"
    assert [c.faults for c in elevate.calls_to("job-result")] == [["html_instead"], []]


def test_html_instead_only_touches_downloads(elevate):
    elevate.faults.html_instead = 1
    created = el_create(elevate)
    assert created.headers["Content-Type"] == "application/json" and elevate.faults.html_instead == 1


def test_short_length_announces_less_than_it_sends(elevate):
    jid = el_done_export(elevate)
    archive = elevate._archive(SAMPLE.customer_key)
    elevate.faults.short_length = 100
    with connect(elevate) as sock:
        sock.sendall(raw_request(elevate, f"{EL}export-customer-job-result?jid={jid}", EL_KEY))
        head, rest = read_head(sock)
        body = rest + read_until_closed(sock)
    assert header(head, "Content-Length") == "100" and header(head, "Connection") == "close"
    assert len(body) == len(archive) > 100 and body == archive
    assert elevate.calls[-1].faults == ["short_length"]


def test_short_length_reaches_a_client_as_a_short_body_and_is_counted(bloomreach):
    bloomreach.faults.short_length, bloomreach.faults.short_lengths = 50, 1
    url = bloomreach.base_url + BR + "export-one"
    body = {"customer_ids": {"registered": SAMPLE.registered}}
    short = requests.post(url, json=body, auth=BR_AUTH, timeout=5)
    whole = requests.post(url, json=body, auth=BR_AUTH, timeout=5)
    assert len(short.content) == 50 and short.content == whole.content[:50]
    assert int(whole.headers["Content-Length"]) == len(whole.content) > 50


def test_drip_sends_the_headers_then_one_byte_at_a_time(elevate):
    jid = el_create(elevate).json()["jid"]
    elevate.faults.drip = 0.03
    with connect(elevate) as sock:
        sock.sendall(raw_request(elevate, f"{EL}job-status?jid={jid}", EL_KEY))
        head, rest = read_head(sock)
        assert header(head, "Content-Type") == "application/json" and len(rest) <= 1
        started, body = time.monotonic(), rest
        while len(body) < 10:
            chunk = sock.recv(100)
            assert len(chunk) <= 2
            body += chunk
        assert time.monotonic() - started >= 8 * 0.03
    assert body == b'{"jid": "' + jid[:1].encode()
    assert elevate.calls[-1].faults == ["drip"]


def test_drip_headers_drips_the_status_line_too(elevate):
    elevate.faults.drip, elevate.faults.drip_headers = 0.03, True
    with connect(elevate) as sock:
        sock.sendall(raw_request(elevate, f"{EL}job-status?jid=x", EL_KEY))
        started, data = time.monotonic(), b""
        while len(data) < 12:
            data += sock.recv(100)
        assert data.startswith(b"HTTP/1.1 200") and time.monotonic() - started >= 10 * 0.03


def test_drip_stops_when_the_client_disconnects(elevate):
    produced = []

    def endless(req, resp):
        def body():
            while True:
                produced.append(1)
                yield b"x"

        return Response(body=body(), length=10**9, download=True)

    elevate.faults.rewrite, elevate.faults.drip = endless, 0.01
    with connect(elevate) as sock:
        sock.sendall(raw_request(elevate, f"{EL}job-status?jid=x", EL_KEY))
        read_head(sock)
        sock.recv(10)
    time.sleep(0.3)
    settled = len(produced)
    time.sleep(0.3)
    assert len(produced) == settled  # the server gave up writing


def test_drip_handler_gives_up_when_the_simulator_stops():
    sim = ElevateSimulator(vendor_start=T0, faults=Faults(drip=0.5)).start()
    before = set(threading.enumerate())
    with connect(sim) as sock:
        sock.sendall(raw_request(sim, f"{EL}job-status?jid=x", EL_KEY))
        read_head(sock)
        [handler] = [t for t in set(threading.enumerate()) - before if "process_request" in t.name]
        sim.stop()
        handler.join(timeout=1)
        assert not handler.is_alive()


def test_cut_download_still_cuts_and_keeps_the_job(elevate):
    jid = el_done_export(elevate)
    elevate.faults.cut_download_after = 100
    with connect(elevate) as sock:
        sock.sendall(raw_request(elevate, f"{EL}export-customer-job-result?jid={jid}", EL_KEY))
        head, rest = read_head(sock)
        body = rest + read_until_closed(sock)
    assert int(header(head, "Content-Length") or 0) > 100 and len(body) == 100
    assert elevate.status_of(jid) == "done"


def test_download_override_serves_the_given_bytes_single_shot(elevate):
    jid = el_done_export(elevate)
    elevate.download_override = b"PK\x03\x04 not really a zip"
    got = el_download(elevate, jid)
    assert got.content == b"PK\x03\x04 not really a zip" and got.headers["Content-Type"] == "application/zip"
    assert elevate.status_of(jid) == "not_found"


def test_force_status_answers_any_word(elevate):
    jid = el_create(elevate).json()["jid"]
    elevate.force_status(jid, "queued_behind_42_jobs")
    status = requests.get(elevate.base_url + EL + "job-status", params={"jid": jid}, headers=EL_KEY, timeout=5)
    assert status.json() == {"jid": jid, "status": "queued_behind_42_jobs"}


def test_rewrite_can_keep_an_elevate_job_after_a_short_download(elevate):
    jid = el_done_export(elevate)
    elevate.faults.short_length = 10
    elevate.faults.rewrite = lambda req, resp: replace(resp, on_complete=None)
    assert len(el_download(elevate, jid).content) == 10
    assert elevate.status_of(jid) == "done"


# --- counting vendor-side effects --------------------------------------------------------------------------


def test_elevate_counts_jobs_ever_created_and_destructive_calls(elevate):
    export = el_create(elevate).json()["jid"]
    el_create(elevate, "remove")
    requests.post(  # refused by auth: still a destructive call that was sent
        elevate.base_url + EL + "create-remove-customer-job",
        params={"customerKey": SAMPLE.customer_key},
        headers={"Api-Key": "wrong"},
        timeout=5,
    )
    el_create(elevate, "remove", key="not-a-key")  # 400
    elevate.faults.rate_limit = 1
    el_create(elevate, "remove")  # 429
    elevate.clock.advance(timedelta(days=6))
    el_download(elevate, export)  # forgets the export job

    assert export not in elevate.jobs
    assert (elevate.jobs_created(), elevate.jobs_created("export"), elevate.jobs_created("remove")) == (2, 1, 1)
    assert [c.status for c in elevate.destructive_calls()] == [200, 403, 400, 429]
    assert all(c.path.endswith("create-remove-customer-job") for c in elevate.destructive_calls())
    assert elevate.destructive_acted() == 1


def test_bloomreach_counts_accepted_anonymize_calls_and_destructive_calls(bloomreach):
    br_anonymize(bloomreach)  # accepted
    br_anonymize(bloomreach, {"registered": "crm-9999"})  # 404: nobody
    bulk = requests.post(
        bloomreach.base_url + BR + "anonymize_bulk",
        json={"customers": [{"customer_ids": {"registered": c.registered}} for c in CUSTOMERS[1:3]]},
        auth=BR_AUTH,
        timeout=5,
    )
    bloomreach.fail_next("anonymize")
    failed = br_anonymize(bloomreach, {"registered": CUSTOMERS[3].registered})
    br_anonymize(bloomreach, auth=("sim-key-id", "wrong"))  # 403
    requests.post(
        bloomreach.base_url + BR + "export-one", json={"customer_ids": {"registered": "x"}}, auth=BR_AUTH, timeout=5
    )  # not destructive

    assert bulk.json()["success"] is True and failed.json()["success"] is False
    assert [c.status for c in bloomreach.destructive_calls()] == [200, 404, 200, 200, 403]
    assert bloomreach.destructive_acted() == 2
    assert (bloomreach.jobs_created(), bloomreach.jobs_created("anonymize_bulk")) == (2, 1)
    assert bloomreach.customers_anonymized() == 3
    assert bloomreach.record_of(CUSTOMERS[3])["anonymized"] is False


def test_qualifio_counts_rules_and_only_real_erasures_as_destructive(qualifio):
    assert qf_create(qualifio, body=qf_rule_body(qualifio, test=True)).status_code == 201  # dry run
    assert qf_create(qualifio, body=qf_rule_body(qualifio, test=None)).status_code == 201  # real
    assert qf_create(qualifio, "exportData").status_code == 201
    assert qf_create(qualifio, body={"ruleType": "GDPR_ForgottenRight"}).status_code == 400  # invalid, sent
    qualifio.faults.server_errors = 1
    assert qf_create(qualifio).status_code == 503

    assert (qualifio.jobs_created(), qualifio.jobs_created("forgottenRight"), qualifio.jobs_created("exportData")) == (
        3,
        2,
        1,
    )
    assert [c.status for c in qualifio.destructive_calls()] == [201, 400, 503]
    assert qualifio.destructive_acted() == 1


def test_qualifio_deny_reports_any_status_word(qualifio):
    rule_id = qf_create(qualifio).json()["_id"]
    qualifio.deny(rule_id, "ON_HOLD_LEGAL")
    got = requests.get(qualifio.base_url + f"/v1/gdpr/rules/{rule_id}", params=QF_CLIENT, headers=QF_TOKEN, timeout=5)
    assert got.json()["ruleStatus"]["status"] == "ON_HOLD_LEGAL"
