"""Bloomreach connector against the Bloomreach simulator over real loopback HTTP (VENDORS.md section 2)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from connectors import registry
from connectors.base import Action, JobContext, Subject
from connectors.bloomreach import (
    ERASE_ACCEPTED_EARLIER,
    BloomreachConnector,
    BulkExportOptions,
    IdAttribute,
    PropertyAttribute,
    SegmentFilter,
    SomeAttributes,
)
from core.errors import ArchiveTransferError, VendorAuthError, VendorError
from local.simulators.base import Faults
from local.simulators.bloomreach import SEGMENTATION_ID, BloomreachSimulator
from local.simulators.data import CUSTOMERS, SAMPLE


@pytest.fixture(autouse=True)
def _real_time_scale(monkeypatch):
    monkeypatch.setenv("DSRFLOW_TIME_SCALE", "1")


@pytest.fixture
def sim():
    with BloomreachSimulator() as s:
        yield s


def connector_for(sim: BloomreachSimulator, vendor_http, **override) -> BloomreachConnector:
    return registry.build("bloomreach", {**sim.credentials(), **override}, http=vendor_http("bloomreach"))


def ctx_for(subject: Subject) -> JobContext:
    return JobContext(request_id="req-1", subject=subject)


def read(archive) -> bytes:
    with archive:
        return b"".join(archive.chunks)


SAMPLE_SUBJECT = Subject(email=SAMPLE.email, customer_ids={"registered": SAMPLE.registered})


# --- export-one -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [{"registered": SAMPLE.registered}, {"cookie": SAMPLE.cookie}])
def test_export_one_delivers_the_customer_as_one_json_archive(sim, vendor_http, ids):
    connector = connector_for(sim, vendor_http)
    subject = Subject(customer_ids=ids)
    ctx = ctx_for(subject)

    job = connector.submit(Action.EXPORT, subject, ctx)
    assert sim.calls == []  # nothing fetched at submission: the answer must not ride in the Job
    assert job.next_check_at == job.submitted_at
    assert connector.check(job, ctx).status == "ready"

    [archive] = connector.collect(job, ctx)
    assert (archive.name, archive.content_type) == ("bloomreach-export-one.json", "application/json")
    data = read(archive)
    assert archive.length == len(data)
    body = json.loads(data)
    assert body["success"] is True
    assert body["ids"]["registered"] == SAMPLE.registered
    assert body["properties"]["email"] == SAMPLE.email
    assert body["properties"]["last_name"] == SAMPLE.last_name
    assert [e["type"] for e in body["events"]] == [e["type"] for e in SAMPLE.events]
    assert [e["properties"]["product_id"] for e in body["events"]] == [e["product_id"] for e in SAMPLE.events]
    assert sim.received == [("export-one", {"customer_ids": ids})]

    history = job.model_dump_json()
    for pii in (SAMPLE.email, SAMPLE.registered, SAMPLE.cookie, SAMPLE.first_name):
        assert pii not in history


def test_unknown_customer_means_no_data_held(sim, vendor_http):
    connector = connector_for(sim, vendor_http)
    subject = Subject(customer_ids={"registered": "crm-does-not-exist"})
    ctx = ctx_for(subject)
    job = connector.submit(Action.EXPORT, subject, ctx)
    assert connector.collect(job, ctx) == []
    assert [c.status for c in sim.calls_to(r"/export-one$")] == [404]


def test_unknown_project_is_a_vendor_error_not_no_data(sim, vendor_http):
    connector = connector_for(sim, vendor_http, project_token="someone-elses-project")
    ctx = ctx_for(SAMPLE_SUBJECT)
    job = connector.submit(Action.EXPORT, SAMPLE_SUBJECT, ctx)
    with pytest.raises(VendorError) as err:
        connector.collect(job, ctx)
    assert err.value.status_code == 404
    assert str(err.value) == "bloomreach: export-one answered HTTP 404"  # the call's name, never its path
    assert "Project not found" in err.value.detail  # the vendor's words, kept privately
    assert "someone-elses-project" not in str(err.value) and "someone-elses-project" not in err.value.detail


def test_export_one_http_200_with_success_false_is_a_vendor_error(sim, vendor_http):
    sim.fail_next("export-one", errors=["Export of customer data is temporarily disabled"])
    connector = connector_for(sim, vendor_http)
    ctx = ctx_for(SAMPLE_SUBJECT)
    job = connector.submit(Action.EXPORT, SAMPLE_SUBJECT, ctx)
    with pytest.raises(VendorError) as err:
        connector.collect(job, ctx)
    # The vendor's words are kept privately (detail), never in the message.
    assert str(err.value) == "bloomreach: export-one answered HTTP 200 with success false"
    assert err.value.detail == "Export of customer data is temporarily disabled"
    assert err.value.status_code == 200
    # the next call is answered normally
    assert json.loads(read(connector.collect(job, ctx)[0]))["success"] is True


def test_export_one_cut_off_is_an_archive_transfer_error(vendor_http):
    with BloomreachSimulator(faults=Faults(cut_download_after=100)) as sim:
        connector = connector_for(sim, vendor_http)
        ctx = ctx_for(SAMPLE_SUBJECT)
        job = connector.submit(Action.EXPORT, SAMPLE_SUBJECT, ctx)
        with pytest.raises(ArchiveTransferError, match=r"export-one answer broke off after \d+ bytes \(\w+\); nothing"):
            connector.collect(job, ctx)
        # the workflow retries; the second answer is whole
        assert json.loads(read(connector.collect(job, ctx)[0]))["ids"]["registered"] == SAMPLE.registered


def test_export_one_larger_than_the_memory_spool_arrives_whole(sim, vendor_http):
    connector = connector_for(sim, vendor_http)
    connector.spool_memory_bytes = 64  # force the spool onto disk
    ctx = ctx_for(SAMPLE_SUBJECT)
    [archive] = connector.collect(connector.submit(Action.EXPORT, SAMPLE_SUBJECT, ctx), ctx)
    with archive:
        chunks = list(archive.chunks)
    assert json.loads(b"".join(chunks))["properties"]["email"] == SAMPLE.email


def test_429_is_retried_honouring_retry_after(sim, vendor_http, sleeps):
    sim.faults.rate_limit, sim.faults.retry_after = 2, 3
    connector = connector_for(sim, vendor_http)
    ctx = ctx_for(SAMPLE_SUBJECT)
    [archive] = connector.collect(connector.submit(Action.EXPORT, SAMPLE_SUBJECT, ctx), ctx)
    assert json.loads(read(archive))["success"] is True
    assert sleeps.delays == [3.0, 3.0]
    assert [c.status for c in sim.calls] == [429, 429, 200]


# --- credentials ------------------------------------------------------------------------------------------


def test_unknown_key_id_is_an_auth_error_without_credentials_in_it(sim, vendor_http):
    connector = connector_for(sim, vendor_http, api_key_id="retired-key-id")
    ctx = ctx_for(SAMPLE_SUBJECT)
    with pytest.raises(VendorAuthError) as err:
        connector.submit(Action.ERASE, SAMPLE_SUBJECT, ctx)
    message = str(err.value)
    assert message == "bloomreach: anonymize was refused with HTTP 401; check the vendor credentials"
    assert "Access key not found" in err.value.detail and "Access key not found" not in message
    for value in (sim.api_secret, "retired-key-id", sim.project_token, SAMPLE.registered):
        assert value not in message and value not in err.value.detail
    assert len(sim.calls) == 1  # not retried
    assert sim.record_of(SAMPLE)["anonymized"] is False


def test_wrong_secret_is_an_auth_error_without_the_secret(sim, vendor_http):
    connector = connector_for(sim, vendor_http, api_secret="not-the-secret-4711")
    ctx = ctx_for(SAMPLE_SUBJECT)
    job = connector.submit(Action.EXPORT, SAMPLE_SUBJECT, ctx)
    with pytest.raises(VendorAuthError) as err:
        connector.collect(job, ctx)
    message = str(err.value)
    assert err.value.status_code == 403
    assert message == "bloomreach: export-one was refused with HTTP 403; check the vendor credentials"
    assert "invalid secret" in err.value.detail and "invalid secret" not in message
    assert "not-the-secret-4711" not in message and sim.api_secret not in message
    assert "not-the-secret-4711" not in err.value.detail
    assert "Authorization" not in message


def test_invalid_json_body_is_a_400(sim, vendor_http):
    creds = sim.credentials()
    with pytest.raises(VendorError, match=r"^bloomreach: POST call answered HTTP 400$") as err:
        vendor_http("bloomreach").request(
            "POST",
            f"{sim.base_url}/data/v2/projects/{sim.project_token}/customers/export-one",
            data=b'{"customer_ids": ',
            auth=(creds["api_key_id"], creds["api_secret"]),
        )
    assert "Invalid JSON" in err.value.detail


# --- anonymize --------------------------------------------------------------------------------------------


def test_anonymize_is_accepted_and_a_later_export_shows_it(sim, vendor_http):
    connector = connector_for(sim, vendor_http)
    ctx = ctx_for(SAMPLE_SUBJECT)

    job = connector.submit(Action.ERASE, SAMPLE_SUBJECT, ctx)
    assert job.state == {"accepted": True}
    assert sim.received == [("anonymize", {"customer_ids": {"registered": SAMPLE.registered}})]
    progress = connector.check(job, ctx)
    assert progress.status == "ready"
    assert progress.reason == "anonymization accepted by vendor; Bloomreach offers no completion status"
    assert connector.collect(job, ctx) == []

    # External ids are gone, so the old id finds nobody ...
    export = connector.submit(Action.EXPORT, SAMPLE_SUBJECT, ctx)
    assert connector.collect(export, ctx) == []
    # ... and under the new cookie Bloomreach assigned, the PII properties are gone while the rest stays.
    [new_cookie] = sim.record_of(SAMPLE)["ids"]["cookie"]
    assert new_cookie != SAMPLE.cookie
    by_cookie = Subject(customer_ids={"cookie": new_cookie})
    cookie_ctx = ctx_for(by_cookie)
    [archive] = connector.collect(connector.submit(Action.EXPORT, by_cookie, cookie_ctx), cookie_ctx)
    body = json.loads(read(archive))
    assert set(body["ids"]) == {"cookie"}
    assert not {"email", "first_name", "last_name"} & set(body["properties"])
    assert body["properties"]["language"] == "en"
    assert len(body["events"]) == len(SAMPLE.events)
    # other customers are untouched
    assert sim.record_of(CUSTOMERS[1])["properties"]["email"] == CUSTOMERS[1].email


def test_anonymize_unknown_customer_is_nothing_to_erase(sim, vendor_http):
    connector = connector_for(sim, vendor_http)
    subject = Subject(customer_ids={"registered": "crm-does-not-exist"})
    ctx = ctx_for(subject)
    job = connector.submit(Action.ERASE, subject, ctx)
    assert job.state == {"no_customer": True}
    progress = connector.check(job, ctx)
    assert progress.status == "ready" and progress.reason.startswith("no data held")


def test_anonymize_http_200_with_success_false_is_a_vendor_error(sim, vendor_http):
    sim.fail_next("anonymize", errors=["Anonymization queue is full", "retry later"])
    connector = connector_for(sim, vendor_http)
    with pytest.raises(VendorError) as err:
        connector.submit(Action.ERASE, SAMPLE_SUBJECT, ctx_for(SAMPLE_SUBJECT))
    assert str(err.value) == "bloomreach: anonymize answered HTTP 200 with success false"
    assert err.value.detail == "Anonymization queue is full; retry later"
    assert sim.record_of(SAMPLE)["anonymized"] is False


def test_anonymize_without_permission_is_an_auth_error(vendor_http):
    with BloomreachSimulator(permissions={"GDPR > Export customers"}) as sim:
        connector = connector_for(sim, vendor_http)
        with pytest.raises(VendorAuthError, match="^bloomreach: anonymize was refused with HTTP 403") as err:
            connector.submit(Action.ERASE, SAMPLE_SUBJECT, ctx_for(SAMPLE_SUBJECT))
        assert "GDPR > Anonymize customer" in err.value.detail


def test_simulator_anonymize_bulk_caps_at_1000(sim, vendor_http):
    creds = sim.credentials()
    http = vendor_http("bloomreach")
    url = f"{sim.base_url}/data/v2/projects/{sim.project_token}/customers/anonymize_bulk"
    auth = (creds["api_key_id"], creds["api_secret"])
    too_many = [{"customer_ids": {"registered": f"crm-{i}"}} for i in range(1001)]
    with pytest.raises(VendorError, match="HTTP 400") as err:
        http.request("POST", url, json={"customers": too_many}, auth=auth)
    assert "At most 1000 customers" in err.value.detail
    answer = http.json(
        "POST",
        url,
        json={"customers": [{"customer_ids": {"registered": c.registered}} for c in CUSTOMERS[:2]]},
        auth=auth,
    )
    assert answer["success"] is True and sim.bulk_ids[answer["bulk_id"]] == 2
    assert [sim.record_of(c)["anonymized"] for c in CUSTOMERS] == [True, True, False, False, False]


# --- bulk export ------------------------------------------------------------------------------------------


def _last_event_day(customer, at: float, tz: str) -> str | None:
    times = [datetime.fromisoformat(e["timestamp"]) for e in customer.events]
    seen = [t for t in times if t.timestamp() <= at]
    return max(seen).astimezone(ZoneInfo(tz)).date().isoformat() if seen else None


def _did(customer, kind: str, at: float) -> bool:
    return any(e["type"] == kind and datetime.fromisoformat(e["timestamp"]).timestamp() <= at for e in customer.events)


def _purchased_by(customer, at: float) -> bool:
    return _did(customer, "purchase", at)


# The seeded events run from 2026-09-02; evaluated early on 09-03 only some purchases have happened yet.
EARLY = int(datetime(2026, 9, 3, 6, 0, tzinfo=UTC).timestamp())
LATER = int(datetime(2026, 9, 5, 0, 0, tzinfo=UTC).timestamp())
ATTRIBUTES = SomeAttributes(
    items=(
        IdAttribute(id="registered"),
        PropertyAttribute(property="email"),
        PropertyAttribute(property="last_event_day"),
    )
)


def test_bulk_export_csv_honours_attributes_segment_execution_time_and_timezone(sim, vendor_http):
    options = BulkExportOptions(
        format="csv",
        attributes=ATTRIBUTES,
        filter=SegmentFilter(segmentation_id=SEGMENTATION_ID, segment_index=0),
        execution_time=EARLY,
        timezone="America/New_York",
    )
    archive = connector_for(sim, vendor_http).export_all(options)
    assert (archive.name, archive.content_type) == ("bloomreach-export-all.csv", "text/csv")
    rows = list(csv.reader(io.StringIO(read(archive).decode())))

    assert sim.received == [
        (
            "export",
            {
                "format": "csv",
                "attributes": {
                    "type": "some",
                    "list": [
                        {"type": "id", "id": "registered"},
                        {"type": "property", "property": "email"},
                        {"type": "property", "property": "last_event_day"},
                    ],
                },
                "filter": {"type": "segment", "segmentation_id": SEGMENTATION_ID, "segment_index": 0},
                "execution_time": EARLY,
                "timezone": "America/New_York",
            },
        )
    ]
    expected = [
        [c.registered, c.email, _last_event_day(c, EARLY, "America/New_York")]
        for c in CUSTOMERS
        if _purchased_by(c, EARLY)
    ]
    assert rows[0] == ["registered", "email", "last_event_day"]
    assert rows[1:] == expected
    # the evaluation time matters: now, every customer who ever bought is in the segment
    assert 0 < len(expected) < sum(_purchased_by(c, datetime.now().timestamp()) for c in CUSTOMERS)
    # and the time zone does: the last event's calendar day differs between New York and UTC
    assert any(
        _last_event_day(c, EARLY, "America/New_York") != _last_event_day(c, EARLY, "UTC")
        for c in CUSTOMERS
        if _purchased_by(c, EARLY)
    )


def test_bulk_export_table_json_with_defaults_and_a_segment(sim, vendor_http):
    connector = connector_for(sim, vendor_http)

    everything = json.loads(read(connector.export_all(BulkExportOptions(format="table_json"))))
    assert sim.received[-1] == (
        "export",
        {
            "format": "table_json",
            "attributes": {"type": "properties_and_ids"},
            "filter": {"type": "all"},
            "timezone": "UTC",
        },
    )
    fields = everything["fields"]
    assert {"registered", "cookie", "email", "first_name", "last_name"} <= set(fields)
    assert sorted(row[fields.index("email")] for row in everything["data"]) == sorted(c.email for c in CUSTOMERS)

    # segment 1: newsletter readers who bought nothing, as of LATER, with days counted in Tokyo
    options = BulkExportOptions(
        format="table_json",
        attributes=ATTRIBUTES,
        filter=SegmentFilter(segmentation_id=SEGMENTATION_ID, segment_index=1),
        execution_time=LATER,
        timezone="Asia/Tokyo",
    )
    archive = connector.export_all(options)
    assert archive.content_type == "application/json"
    table = json.loads(read(archive))
    assert sim.received[-1] == ("export", options.to_body())
    assert sim.received[-1][1]["execution_time"] == LATER and sim.received[-1][1]["timezone"] == "Asia/Tokyo"
    readers = [c for c in CUSTOMERS if not _purchased_by(c, LATER) and _did(c, "newsletter_open", LATER)]
    assert readers  # the seed holds at least one
    assert table == {
        "fields": ["registered", "email", "last_event_day"],
        "data": [[c.registered, c.email, _last_event_day(c, LATER, "Asia/Tokyo")] for c in readers],
    }
    assert [_last_event_day(c, LATER, "Asia/Tokyo") for c in readers] != [
        _last_event_day(c, LATER, "UTC") for c in readers
    ]


def test_bulk_export_rejected_by_the_vendor_for_a_bad_timezone_or_segmentation(sim, vendor_http):
    connector = connector_for(sim, vendor_http)
    # Shape-valid, but not a real zone: the vendor's 400 comes through, its message kept privately.
    with pytest.raises(VendorError, match=r"^bloomreach: bulk export answered HTTP 400$") as err:
        connector.export_all(BulkExportOptions(format="csv", timezone="Europe/Atlantis"))
    assert "timezone" in err.value.detail
    with pytest.raises(VendorError, match=r"^bloomreach: bulk export answered HTTP 400$") as err:
        connector.export_all(
            BulkExportOptions(format="csv", filter=SegmentFilter(segmentation_id="nope", segment_index=0))
        )
    assert "Segmentation not found" in err.value.detail


def test_bulk_export_http_200_with_success_false_is_detected(sim, vendor_http):
    sim.fail_next("export", errors=["Export is already running for this project"])
    with pytest.raises(VendorError) as err:
        connector_for(sim, vendor_http).export_all(BulkExportOptions(format="table_json"))
    assert str(err.value) == "bloomreach: export answered HTTP 200 with success false"
    assert err.value.detail == "Export is already running for this project"


def test_bulk_export_without_permission_is_an_auth_error(vendor_http):
    with BloomreachSimulator(permissions=set()) as sim:
        with pytest.raises(VendorAuthError, match=r"^bloomreach: bulk export was refused with HTTP 403") as err:
            connector_for(sim, vendor_http).export_all(BulkExportOptions(format="csv"))
        assert "GDPR > Export customers" in err.value.detail


def test_bulk_export_is_streamed_in_chunks(vendor_http):
    pad = 20_000
    with BloomreachSimulator(pad_rows=pad) as sim:
        archive = connector_for(sim, vendor_http).export_all(BulkExportOptions(format="csv"))
        sizes = []
        lines = 0
        with archive:
            for chunk in archive.chunks:
                sizes.append(len(chunk))
                lines += chunk.count(b"\n")
    assert archive.length is None  # chunked transfer: no announced length
    assert len(sizes) > 5 and max(sizes) <= 64 * 1024
    assert lines == 1 + len(CUSTOMERS) + pad


def test_bulk_export_cut_off_is_an_archive_transfer_error(vendor_http):
    with BloomreachSimulator(pad_rows=20_000, faults=Faults(cut_download_after=200_000)) as sim:
        archive = connector_for(sim, vendor_http).export_all(BulkExportOptions(format="table_json"))
        with archive, pytest.raises(ArchiveTransferError, match="broke off after"):
            for _ in archive.chunks:
                pass


def test_registry_builds_the_connector_from_simulator_credentials(sim):
    connector = registry.build("bloomreach", json.dumps(sim.credentials()))
    assert isinstance(connector, BloomreachConnector)
    assert connector.credentials.base_url == sim.base_url


def test_a_customer_gone_after_an_uncertain_attempt_is_anonymized_not_no_data_held(sim, vendor_http):
    # The first anonymize acted, its answer was lost; the workflow's one more attempt meets "Customer does not
    # exist". That is the earlier attempt's doing: the erase is done, and Bloomreach did hold data.
    connector = connector_for(sim, vendor_http)
    subject = Subject(customer_ids={"registered": SAMPLE.registered})
    connector.submit(Action.ERASE, subject, ctx_for(subject))  # the attempt whose answer "was lost"
    retry = ctx_for(subject).model_copy(update={"after_uncertain_attempt": True})
    job = connector.submit(Action.ERASE, subject, retry)
    assert job.state == {"accepted_earlier": True}
    assert connector.check(job, retry).reason == ERASE_ACCEPTED_EARLIER
    # Without an uncertain attempt before it, the same answer still means no data held.
    unknown = Subject(customer_ids={"registered": "crm-unknown"})
    assert connector.submit(Action.ERASE, unknown, ctx_for(unknown)).state == {"no_customer": True}
