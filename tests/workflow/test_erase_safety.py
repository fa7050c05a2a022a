"""Never destroy on a false premise: each numbered defect of the erase-safety issue, through the real ASL in moto,
the real handlers and real HTTP to simulators that misbehave the way vendors do."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from botocore.exceptions import ClientError

from local.simulators import simulator_class
from local.simulators.data import SAMPLE
from tests.workflow.conftest import local_run, outcome, sample_subject

pytestmark = pytest.mark.slow

EVERY = ("elevate", "bloomreach", "qualifio")


# --- what must never be in a kept record ------------------------------------------------------------------


def subject_forms() -> list[str]:
    """The subject's values in every form a vendor echoes them: plain, upper case, URL- and JSON-encoded,
    and half an email (what a 300-character truncation leaves)."""
    email, key = SAMPLE.email, SAMPLE.customer_key
    forms = {email, email.upper(), quote(email, safe=""), quote_plus(email), json.dumps(email)[1:-1]}
    forms |= {key, key.upper(), SAMPLE.registered, f"{SAMPLE.first_name} {SAMPLE.last_name}"}
    forms.add(email[: len(email) // 2 + 2])
    return sorted(forms)


def kept_records(cloud: Any, request_id: str) -> dict[str, str]:
    """Every record dsrflow keeps about a request, except the subject's own request.json, the archives and the
    private vendor-said objects (the three places personal data is meant to be)."""
    records = {"history": json.dumps(cloud.history(request_id), default=str)}
    for key in cloud.objects(request_id):
        if key.endswith("/request.json") or "/vendor-said/" in key or not key.endswith(".json"):
            continue
        if key.endswith(("bloomreach-export-one.json",)):
            continue  # an archive (the subject's data, on purpose)
        records[key] = cloud.read(key).decode()
    proof = f"proof/{request_id}/manifest.json"
    try:
        records[proof] = cloud.read(proof).decode()
    except ClientError:
        pass
    return records


def assert_no_subject_value(records: dict[str, str], logs: str = "") -> None:
    texts = {**records, "logs": logs}
    for where, text in texts.items():
        folded = text.casefold()
        for form in subject_forms():
            assert form.casefold() not in folded, f"{form!r} found in {where}"


def vendor_said_texts(cloud: Any, request_id: str) -> str:
    return " ".join(cloud.read(k).decode() for k in cloud.objects(request_id) if "/vendor-said/" in k)


def run(cloud: Any, request: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    accepted = cloud.submit(request)
    execution = cloud.wait(accepted["request_id"], timeout=timeout)
    assert execution["status"] == "SUCCEEDED", (execution.get("error"), execution.get("cause"))
    return json.loads(execution["output"])


def only(sim: Any, pattern: str) -> Any:
    sim.faults.path_pattern = pattern
    return sim.faults


# --- 1. a dry run writes nothing at any vendor ---------------------------------------------------------------


def test_dry_run_erase_sends_nothing_destructive_to_any_vendor():
    with local_run() as (cloud, sims):
        summary = run(
            cloud, {"request_id": "dsr-dry", "actions": ["erase"], "subject": sample_subject(), "dry_run": True}
        )
        for name, sim in sims.items():
            assert sim.destructive_calls() == [], name
        # Nothing changed at the vendors.
        assert len(sims["qualifio"].profiles_of(SAMPLE.email)) == 2
        assert sims["bloomreach"].record_of(SAMPLE)["anonymized"] is False
        assert sims["elevate"].removed == set()
        # Qualifio ran its own dry run: a `test: true` erasure rule.
        rules = [sims["qualifio"].rule(r) for r in sims["qualifio"].rules]
        assert [r["body"].get("test") for r in rules] == [True]
        records = kept_records(cloud, "dsr-dry")

    assert summary["dry_run"] is True and summary["status"] == "completed", summary
    assert summary["counts"]["planned"] == 3 and summary["counts"]["completed"] == 0
    elevate = outcome(summary, "elevate", "erase")
    assert elevate["status"] == "planned"
    assert elevate["planned_call"] == "POST /api/v2/event-data/create-remove-customer-job?customerKey={customerKey}"
    bloomreach = outcome(summary, "bloomreach", "erase")
    assert bloomreach["status"] == "planned" and "anonymize" in bloomreach["planned_call"]
    assert "exists" in bloomreach["reason"]  # the read-only probe found the customer
    assert outcome(summary, "qualifio", "erase")["status"] == "planned"
    assert_no_subject_value(records)


def test_dry_run_export_and_erase_exports_for_real_and_only_plans_the_erase():
    with local_run(vendors=("elevate", "bloomreach")) as (cloud, sims):
        summary = run(cloud, {"actions": ["export", "erase"], "subject": sample_subject(), "dry_run": True})
        assert all(sim.destructive_calls() == [] for sim in sims.values())
    for vendor in ("elevate", "bloomreach"):
        assert outcome(summary, vendor, "export")["status"] == "completed"
        assert outcome(summary, vendor, "export")["archives"]
        assert outcome(summary, vendor, "erase")["status"] == "planned"


# --- 2. junk is not an export, and no erase follows it -------------------------------------------------------


def test_an_html_page_instead_of_the_qualifio_zip_fails_the_export_and_withholds_the_erase():
    with local_run(vendors=("qualifio",)) as (cloud, sims):
        only(sims["qualifio"], r"^/archives/").html_instead = 1
        summary = run(cloud, {"request_id": "dsr-html", "actions": ["export", "erase"], "subject": sample_subject()})
        stored = [k for k in cloud.objects("dsr-html") if k.endswith(".zip")]
        profiles = sims["qualifio"].profiles_of(SAMPLE.email)
        forgotten = sims["qualifio"].calls_to(r"forgottenRight")

    export = outcome(summary, "qualifio", "export")
    assert export["status"] == "failed" and export["error"] == "ArchiveInvalid", export
    assert export["step"] == "collect" and export["reason"].startswith("qualifio collect:")
    assert "HTML" in export["reason"]
    erase = outcome(summary, "qualifio", "erase")
    assert erase["status"] == "failed" and erase["error"] == "ErasureWithheld"
    assert stored == [] and len(profiles) == 2 and forgotten == []


def test_an_elevate_download_longer_than_its_content_length_is_not_an_export():
    with local_run(vendors=("elevate",)) as (cloud, sims):
        only(sims["elevate"], r"export-customer-job-result").short_length = 500
        summary = run(cloud, {"request_id": "dsr-short", "actions": ["export", "erase"], "subject": sample_subject()})
        stored = [k for k in cloud.objects("dsr-short") if k.endswith(".zip")]
        removals = sims["elevate"].calls_to(r"create-remove-customer-job")

    export = outcome(summary, "elevate", "export")
    assert export["status"] == "failed" and export["error"] == "ArchiveInvalid", export
    assert outcome(summary, "elevate", "erase")["error"] == "ErasureWithheld"
    assert stored == [] and removals == []


# --- 3. vendor echoes of personal data stay out of every record ----------------------------------------------


def _echo(status: int, text: str, key: str = "message") -> Any:
    def body(_req: Any) -> bytes:
        return json.dumps({key: text, "success": False}).encode()

    return status, body


def test_subject_echoed_in_errors_on_submit_check_and_collect_stays_out_of_every_record(capfd):
    email, key = SAMPLE.email, SAMPLE.customer_key
    name = f"{SAMPLE.first_name} {SAMPLE.last_name}"
    with local_run() as (cloud, sims):
        # submit: Qualifio refuses the rule quoting the email and the name (a 422).
        faults = only(sims["qualifio"], r"rules/exportData")
        faults.reject, (faults.reject_status, faults.reject_body) = 1, _echo(422, f"profile {email} ({name}) is locked")
        # check: Elevate's job-status 404 quotes the customer key, in upper case.
        faults = only(sims["elevate"], r"job-status")
        faults.reject, (faults.reject_status, faults.reject_body) = 1, _echo(404, f"no job for {key.upper()}")
        # collect: Bloomreach's export-one 400 quotes the email URL-encoded and JSON-escaped.
        faults = only(sims["bloomreach"], r"export-one")
        faults.reject, (faults.reject_status, faults.reject_body) = (
            1,
            _echo(400, f"bad ids for {quote(email, safe='')} / {json.dumps(email)}", key="errors"),
        )
        summary = run(cloud, {"request_id": "dsr-echo", "actions": ["export", "erase"], "subject": sample_subject()})
        records = kept_records(cloud, "dsr-echo")
        private = vendor_said_texts(cloud, "dsr-echo")
        said_keys = [k for k in cloud.objects("dsr-echo") if "/vendor-said/" in k]
        head = cloud.client("s3").head_object(Bucket=cloud.bucket, Key=said_keys[0])

    for vendor, step in (("qualifio", "submit"), ("elevate", "check"), ("bloomreach", "collect")):
        failed = outcome(summary, vendor, "export")
        assert failed["status"] == "failed" and failed["step"] == step, failed
        assert failed["reason"].startswith(f"{vendor} {step}:"), failed["reason"]
        assert failed["vendor_said"], failed  # the manifest points to the vendor's words...
        assert outcome(summary, vendor, "erase")["error"] == "ErasureWithheld"
    assert_no_subject_value(records, capfd.readouterr().out)
    # ...which are kept, privately: encrypted under requests/ (expiring with the request data). Known values
    # are masked there too, but the vendor's own explanation survives for the DPO.
    for words in ("no job for", "is locked", "bad ids for"):
        assert words in private, words
    assert head["ServerSideEncryption"] == "aws:kms"


def test_subject_inside_a_status_word_or_cut_by_truncation_stays_out(capfd):
    email = SAMPLE.email

    def qualifio_status(_req: Any, response: Any) -> Any:
        rule = json.loads(response.body)
        rule["ruleStatus"]["status"] = f"DENIED_FOR_{email}"
        response.body = json.dumps(rule).encode()
        return response

    with local_run(vendors=("qualifio", "elevate")) as (cloud, sims):
        faults = only(sims["qualifio"], r"^/v1/gdpr/rules/[0-9a-f]+$")
        faults.rewrite = qualifio_status
        # A 300-character truncation would cut this message in the middle of the email.
        faults = only(sims["elevate"], r"create-export-customer-job")
        faults.reject, (faults.reject_status, faults.reject_body) = 1, _echo(400, "x" * 290 + f" {email} invalid")
        summary = run(cloud, {"request_id": "dsr-word", "actions": ["export"], "subject": sample_subject()})
        records = kept_records(cloud, "dsr-word")

    assert outcome(summary, "qualifio", "export")["status"] == "failed"
    assert "an undocumented status" in outcome(summary, "qualifio", "export")["reason"]
    assert outcome(summary, "elevate", "export")["status"] == "failed"
    assert_no_subject_value(records, capfd.readouterr().out)


# --- 4. redirects are never followed -----------------------------------------------------------------------


def test_a_bloomreach_redirect_to_another_host_is_not_followed_and_nothing_is_recorded_done():
    with simulator_class("bloomreach")() as elsewhere, local_run(vendors=("bloomreach",)) as (cloud, sims):
        faults = only(sims["bloomreach"], r"anonymize")
        faults.redirect_to, faults.redirects = elsewhere.base_url, 5
        summary = run(cloud, {"actions": ["erase"], "subject": sample_subject()})
        assert elsewhere.calls == []  # the other host never saw the customer ids
        assert sims["bloomreach"].record_of(SAMPLE)["anonymized"] is False

    erase = outcome(summary, "bloomreach", "erase")
    assert erase["status"] == "failed" and erase["error"] == "VendorError"
    assert "redirect" in erase["reason"]


# --- 5. at most one vendor job per action ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "vendor, creates", [("elevate", r"create-export-customer-job"), ("qualifio", r"rules/exportData")]
)
def test_a_vendor_that_acts_then_drops_the_answer_gets_at_most_one_more_job(vendor, creates):
    with local_run(vendors=(vendor,)) as (cloud, sims):
        only(sims[vendor], creates).drop_after_acting = 1
        summary = run(cloud, {"actions": ["export", "erase"], "subject": sample_subject()})
        jobs = sims[vendor].jobs_created()

    export = outcome(summary, vendor, "export")
    assert export["status"] == "completed", export
    assert jobs == 3  # 2 actions, plus the one more the dropped answer made necessary, never 4
    assert export["possible_duplicate"] is True and len(export["job_ids"]) == 1
    assert outcome(summary, vendor, "erase")["possible_duplicate"] is False


def test_two_dropped_answers_stop_at_the_second_job():
    with local_run(vendors=("elevate",)) as (cloud, sims):
        only(sims["elevate"], r"create-export-customer-job").drop_after_acting = 5
        summary = run(cloud, {"actions": ["export", "erase"], "subject": sample_subject()})
        jobs = sims["elevate"].jobs_created()

    export = outcome(summary, "elevate", "export")
    assert export["status"] == "failed" and export["error"] == "SubmissionUncertain", export
    assert jobs == 2
    assert outcome(summary, "elevate", "erase")["error"] == "ErasureWithheld"


def test_a_lambda_service_error_after_submit_creates_no_second_job():
    with local_run(vendors=("elevate", "qualifio")) as (cloud, sims):
        cloud.inject_lambda_error("submit", times=2)  # the function ran; Step Functions sees the service fail
        summary = run(cloud, {"actions": ["export", "erase"], "subject": sample_subject()})
        jobs = {name: sim.jobs_created() for name, sim in sims.items()}

    assert summary["status"] == "completed", summary
    assert jobs == {"elevate": 2, "qualifio": 2}
    assert not any(o["possible_duplicate"] for o in summary["outcomes"])


# --- 6. S3 failures lose nothing ---------------------------------------------------------------------------


def _fail_s3(operation: str, times: int, key_part: str) -> dict[str, int]:
    """Make the handlers' S3 client fail `operation` on keys containing `key_part`, `times` times."""
    from handlers.runtime import client

    left = {"n": times}

    def hook(params: dict[str, Any], **_: Any) -> None:
        if key_part in params.get("Key", "") and left["n"] > 0:
            left["n"] -= 1
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)

    client("s3").meta.events.register(f"before-parameter-build.s3.{operation}", hook)
    return left


def test_outcome_put_failing_keeps_the_single_shot_elevate_export():
    with local_run(vendors=("elevate",)) as (cloud, sims):
        # More failures than the store retries: collect fails, the workflow retries it, and the retry reuses
        # the archive already in S3 instead of downloading again (Elevate allows one download).
        left = _fail_s3("PutObject", 6, "elevate/export/outcome.json")
        summary = run(cloud, {"request_id": "dsr-s3", "actions": ["export", "erase"], "subject": sample_subject()})
        downloads = sims["elevate"].calls_to(r"export-customer-job-result")

    assert left["n"] == 0
    export = outcome(summary, "elevate", "export")
    assert export["status"] == "completed", export
    assert len(export["archives"]) == 1 and len(downloads) == 1
    assert outcome(summary, "elevate", "erase")["status"] == "completed"


def test_complete_multipart_upload_failing_once_loses_no_archive():
    with local_run(vendors=("elevate",)) as (cloud, sims):
        left = _fail_s3("CompleteMultipartUpload", 1, "elevate/export/")
        summary = run(cloud, {"actions": ["export", "erase"], "subject": sample_subject()})
        downloads = sims["elevate"].calls_to(r"export-customer-job-result")
        uploads = cloud.client("s3").list_multipart_uploads(Bucket=cloud.bucket).get("Uploads", [])

    assert left["n"] == 0 and len(downloads) == 1 and uploads == []
    assert outcome(summary, "elevate", "export")["status"] == "completed"
    assert outcome(summary, "elevate", "erase")["status"] == "completed"


# --- 7. oversized vendor data cannot kill the execution ----------------------------------------------------------


def test_300_kb_vendor_status_words_and_ids_fail_one_action_not_the_execution():
    huge = "S" * 300_000

    def elevate_jid(_req: Any, response: Any) -> Any:
        answer = json.loads(response.body)
        answer["jid"] = huge
        response.body = json.dumps(answer).encode()
        return response

    def qualifio_status(_req: Any, response: Any) -> Any:
        rule = json.loads(response.body)
        rule["ruleStatus"]["status"] = huge
        response.body = json.dumps(rule).encode()
        return response

    with local_run() as (cloud, sims):
        only(sims["elevate"], r"create-export-customer-job").rewrite = elevate_jid
        faults = only(sims["qualifio"], r"^/v1/gdpr/rules/[0-9a-f]+$")
        faults.rewrite, faults.rewrites = qualifio_status, 100
        faults = only(sims["bloomreach"], r"export-one")
        faults.reject, (faults.reject_status, faults.reject_body) = 1, _echo(400, huge)
        summary = run(cloud, {"request_id": "dsr-big", "actions": ["export", "erase"], "subject": sample_subject()})
        events = cloud.history("dsr-big")

    assert summary["counts"]["failed"] == 6  # three exports failed, three erasures withheld
    # Each is our own allow-listed failure, never States.DataLimitExceeded: moto lets States.ALL catch that
    # error, but AWS documents that nothing can, so on AWS it would end the whole execution.
    for vendor in EVERY:
        export = outcome(summary, vendor, "export")
        # None: the vendor's own report of failure (Record vendor failure); VendorError: an unusable answer.
        assert export["status"] == "failed" and export["error"] in (None, "VendorError"), export
        assert export["error"] != "States.DataLimitExceeded"
    assert "an undocumented status" in outcome(summary, "qualifio", "export")["reason"]
    assert "documented format" in outcome(summary, "elevate", "export")["reason"]
    assert huge[:1000] not in json.dumps(summary)
    largest = max(len(json.dumps(e, default=str)) for e in events)
    assert largest < 32 * 1024, largest  # far from Step Functions' 256 KiB per state


# --- 10. failures name the vendor and the step; a one-off crash is retried ---------------------------------------


def test_a_one_off_crash_in_check_is_retried_and_names_no_value(monkeypatch):
    from connectors.elevate import ElevateConnector

    real = ElevateConnector.check
    crashes = {"n": 1}

    def crash_once(self: Any, job: Any, ctx: Any) -> Any:
        if crashes["n"]:
            crashes["n"] -= 1
            raise KeyError(SAMPLE.email)  # an exception whose own text is personal data
        return real(self, job, ctx)

    monkeypatch.setattr(ElevateConnector, "check", crash_once)
    with local_run(vendors=("elevate",)) as (cloud, _):
        summary = run(cloud, {"request_id": "dsr-crash", "actions": ["export"], "subject": sample_subject()})
        history = json.dumps(cloud.history("dsr-crash"), default=str)

    assert outcome(summary, "elevate", "export")["status"] == "completed"
    assert "TaskCrashed" in history and "elevate check: unexpected KeyError" in history
    assert SAMPLE.email not in history
