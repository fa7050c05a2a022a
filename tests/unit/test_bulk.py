"""core/bulk.py: the line index, one line's validation and start, derived ids, the result rows."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from core import bulk
from core.intake import Accepted, RequestConflict
from core.models import DsrRequest

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
EMAIL = "jane.doe.bulk@example.com"


def mac(message: bytes) -> bytes:
    return hmac.new(b"k" * 32, message, hashlib.sha256).digest()


def other_mac(message: bytes) -> bytes:
    return hmac.new(b"j" * 32, message, hashlib.sha256).digest()


def line(**extra: Any) -> bytes:
    return json.dumps({"actions": ["export"], "subject": {"email": EMAIL}, **extra}).encode()


class Starter:
    """core.intake.accept's answers: the first request per id is "accepted", the next "duplicate"."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, request: DsrRequest) -> Accepted:
        assert request.request_id
        known = self.seen.get(request.request_id)
        if known is not None and known != request.fingerprint():
            raise RequestConflict(request.request_id)
        self.seen[request.request_id] = request.fingerprint()
        return Accepted(
            request_id=request.request_id,
            status="duplicate" if known else "accepted",
            execution_arn="arn",
            deadline=NOW,
            vendors=[],
            skipped=[],
        )


def test_index_counts_physical_lines_and_skips_blank_ones():
    data = b'{"a":1}\r\n\n  \n{"b":2}\n{"c":3}'
    refs = bulk.index_lines(data)
    assert [(r.line, data[r.start : r.end]) for r in refs] == [(1, b'{"a":1}'), (4, b'{"b":2}'), (5, b'{"c":3}')]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "has no line"),
        (b"\n\n", "has no line"),
        (b"{}\n" * (bulk.MAX_BATCH_LINES + 1), f"more than {bulk.MAX_BATCH_LINES} lines"),
        (b" " * (bulk.MAX_BATCH_BYTES + 1), "larger than 5 MiB"),
    ],
)
def test_an_unusable_batch_is_refused_whole(data, message):
    with pytest.raises(bulk.InvalidBatch, match=message):
        bulk.index_lines(data)


def test_derived_ids_are_keyed_deterministic_and_valid_request_ids():
    a = bulk.derive_id(mac, "request", b"x")
    assert a == bulk.derive_id(mac, "request", b"x")
    assert a != bulk.derive_id(other_mac, "request", b"x")  # keyed: not computable without the key
    assert a != bulk.derive_id(mac, "api", b"x")  # a batch id never equals a request id
    assert a.startswith("bulk-") and len(a) == 5 + bulk.ID_CHARS
    DsrRequest.model_validate({"request_id": a, "actions": ["export"], "subject": {"email": EMAIL}})


def test_a_line_without_an_id_gets_one_from_what_it_asks_and_a_repeat_is_already_started():
    starter = Starter()
    first = bulk.process_line(line(), 1, now=NOW, mac=mac, accept=starter)
    assert first.status == "started" and first.request_id and first.request_id.startswith("bulk-")
    # The same request written differently (key order) is the same request.
    reordered = json.dumps({"subject": {"email": EMAIL}, "actions": ["export"]}).encode()
    again = bulk.process_line(reordered, 9, now=NOW, mac=mac, accept=starter)
    assert (again.status, again.request_id) == ("already started", first.request_id)
    other = bulk.process_line(line(dry_run=True), 2, now=NOW, mac=mac, accept=starter)
    assert other.status == "started" and other.request_id != first.request_id


def test_a_line_with_an_id_keeps_it_and_a_reused_id_is_a_conflict():
    starter = Starter()
    row = bulk.process_line(line(request_id="crm-1"), 1, now=NOW, mac=mac, accept=starter)
    assert (row.status, row.request_id) == ("started", "crm-1")
    clash = bulk.process_line(line(request_id="crm-1", dry_run=True), 2, now=NOW, mac=mac, accept=starter)
    assert clash.status == "conflict" and clash.request_id == "crm-1"
    assert [e.field for e in clash.errors] == ["request_id"]


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (b"{not json", "(line)", "is not JSON"),
        (b"[1, 2]", "(line)", "must be a JSON object"),
        (b"\xff\xfe", "(line)", "is not valid UTF-8"),
        (b" " * (bulk.MAX_LINE_BYTES + 1), "(line)", "is larger than 64 KiB"),
    ],
)
def test_a_line_that_is_not_one_json_object_is_a_row_not_an_exception(text, field, message):
    row = bulk.process_line(text, 3, now=NOW, mac=mac, accept=Starter())
    assert row.model_dump() == {
        "line": 3,
        "status": "invalid",
        "request_id": None,
        "errors": [{"field": field, "message": message}],
    }


def test_a_line_that_does_not_validate_names_fields_never_values():
    secret_key = "ck-" + "9" * 20
    text = json.dumps(
        {"actions": ["export", "destroy"], "subject": {"email": EMAIL, "customer_key": secret_key}, EMAIL: 1}
    ).encode()
    row = bulk.process_line(text, 4, now=NOW, mac=mac, accept=Starter())
    assert row.status == "invalid" and row.request_id is None
    fields = [e.field for e in row.errors]
    assert "actions.1" in fields and "(unknown field)" in fields
    dumped = row.model_dump_json()
    assert EMAIL not in dumped and secret_key not in dumped and "destroy" not in dumped


def test_a_request_id_holding_the_subject_is_refused_as_post_requests_refuses_it():
    row = bulk.process_line(line(request_id="jane.doe.bulk"), 1, now=NOW, mac=mac, accept=Starter())
    assert row.status == "invalid" and [e.field for e in row.errors] == ["request_id"]
    assert "jane.doe" not in row.model_dump_json()


def test_result_rows_list_every_line_in_order_and_a_missing_row_as_not_processed():
    refs = bulk.index_lines(b"{}\n{}\n{}\n")
    rows = {1: bulk.Row(line=1, status="started", request_id="a"), 3: bulk.Row(line=3, status="invalid")}
    out = bulk.result_rows(refs, rows)
    assert [(r.line, r.status) for r in out] == [(1, "started"), (2, "not processed"), (3, "invalid")]
    assert bulk.summary(out) == {
        "lines": 3,
        "started": 1,
        "already_started": 0,
        "invalid": 1,
        "conflict": 0,
        "not_processed": 1,
    }
    parsed = [json.loads(x) for x in bulk.as_jsonl(out).splitlines()]
    assert parsed[1] == {"line": 2, "status": "not processed", "request_id": None, "errors": []}


def test_lines_of_one_batch_asking_one_request_list_the_first_as_started_whichever_won_the_race():
    refs = bulk.index_lines(b"{}\n{}\n{}\n{}\n{}\n")
    rows = {
        1: bulk.Row(line=1, status="already started", request_id="dsr-a"),  # line 4 started it, by the race
        2: bulk.Row(line=2, status="already started", request_id="dsr-old"),  # an earlier batch started it
        3: bulk.Row(line=3, status="invalid"),
        4: bulk.Row(line=4, status="started", request_id="dsr-a"),
        5: bulk.Row(line=5, status="already started", request_id="dsr-a"),
    }
    out = bulk.result_rows(refs, rows)
    assert [(r.line, r.status, r.request_id) for r in out] == [
        (1, "started", "dsr-a"),
        (2, "already started", "dsr-old"),
        (3, "invalid", None),
        (4, "already started", "dsr-a"),
        (5, "already started", "dsr-a"),
    ]
    assert bulk.summary(out)["started"] == 1  # one request started, as before the relabelling


def test_the_bulk_asl_keeps_lines_out_of_the_map_items_and_sets_rate_and_threshold():
    from statemachines import BULK_ASL_FILE

    asl = json.loads(BULK_ASL_FILE.read_text())
    lines = asl["States"]["Lines"]
    assert lines["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert lines["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert lines["ItemReader"]["Parameters"]["Key.$"] == "$.index.index_key"  # the index, never the file itself
    # Each item is the line's number and byte range, and references: what a child execution's input holds.
    assert set(lines["ItemSelector"]) == {"batch_id.$", "bucket.$", "key.$", "line.$", "start.$", "end.$"}
    assert lines["MaxConcurrencyPath"] == "$.max_concurrency"
    assert 0 < lines["ToleratedFailurePercentage"] <= 10
    assert lines["ResultPath"] is None and lines["ItemProcessor"]["States"]["Line"]["OutputPath"] is None
    assert [c["Next"] for c in lines["Catch"]] == ["Finish"]  # the result file is written even over the threshold
