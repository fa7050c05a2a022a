"""The access package (core/package.py) against moto S3: what the zip holds, what index.html says, the
sha256 of every file, unsafe member names, sources that changed, S3 failing midway, and bounded memory."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import tracemalloc
import zipfile
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from core.archive_store import StoredArchive
from core.domain import Action
from core.errors import ArchiveTransferError
from core.models import ActionOutcome
from core.package import (
    CONTROLLER_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    Builder,
    PackageInput,
    PackageSourceInvalid,
    PackageTooLarge,
    S3RangeReader,
    load_controller_text,
    plan,
    safe_path,
)
from core.store import package_key
from local.discarding_s3 import DiscardingS3
from tests.unit.s3_faults import FaultyS3

MIB = 1024 * 1024
BUCKET = "dsrflow-archives-test"
RID = "r-pkg-0001"
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def aws():
    with mock_aws():
        key_arn = boto3.client("kms", region_name="eu-west-1").create_key(Description="archives")["KeyMetadata"]["Arn"]
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield SimpleNamespace(s3=s3, key_arn=key_arn)


def put(aws, vendor: str, name: str, data: bytes, kind: str) -> StoredArchive:
    key = f"requests/{RID}/{vendor}/export/{name}"
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=data, ServerSideEncryption="aws:kms", SSEKMSKeyId=aws.key_arn)
    return StoredArchive(
        key=key,
        name=name,
        content_type="application/zip" if kind == "zip" else "application/json",
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        verified=kind,  # type: ignore[arg-type]
    )


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def export(vendor: str, status: str = "completed", archives: list[StoredArchive] | None = None, reason=None):
    return ActionOutcome(vendor=vendor, action=Action.EXPORT, status=status, archives=archives or [], reason=reason)


def erase(vendor: str, status: str = "completed"):
    return ActionOutcome(vendor=vendor, action=Action.ERASE, status=status)


def builder(aws, s3: Any = None, **kwargs: Any) -> Builder:
    return Builder(s3 or aws.s3, BUCKET, aws.key_arn, now=lambda: NOW, sleep=lambda _: None, **kwargs)


def request(outcomes: list[ActionOutcome], **kwargs: Any) -> PackageInput:
    return PackageInput(request_id=RID, received_at=RECEIVED, attempt=1, outcomes=outcomes, **kwargs)


def stored(aws, key: str) -> tuple[dict, bytes]:
    answer = aws.s3.get_object(Bucket=BUCKET, Key=key)
    return answer, answer["Body"].read()


ROWS = b"".join(json.dumps({"id": i, "email": "jane@example.com"}).encode() + b"\n" for i in range(25))
SAMPLE_ZIP = {"contacts.jsonl": ROWS, "orders/2026.jsonl": ROWS[:-1], "notes.txt": b"hello"}


def three_vendors(aws) -> list[ActionOutcome]:
    return [
        export("elevate", archives=[put(aws, "elevate", "export.zip", make_zip(SAMPLE_ZIP), "zip")]),
        erase("elevate"),
        export("bloomreach", archives=[put(aws, "bloomreach", "customer.json", b'{"success": true}', "json")]),
        export("qualifio"),  # completed, nothing stored: no data held
        export("crm", status="failed", reason="crm: the export job failed (status 'error')"),
        export("shop", status="denied", reason="denied by arn:aws:iam::1:user/dpo at 2026-11-21: not ours"),
    ]


# --- what it holds -------------------------------------------------------------------------------------------


def test_package_holds_each_vendor_unpacked_index_controller_text_and_a_verifiable_manifest(aws):
    ref = builder(aws).build(request(three_vendors(aws)))

    assert ref.status == "built" and ref.key == package_key(RID)
    answer, body = stored(aws, ref.key)
    assert answer["ServerSideEncryption"] == "aws:kms" and answer["SSEKMSKeyId"] == aws.key_arn
    assert answer["ContentType"] == "application/zip"
    assert f"dsrflow-access-{RID}.zip" in answer["ContentDisposition"]
    assert ref.bytes == len(body) and ref.sha256 == hashlib.sha256(body).hexdigest()
    assert ref.systems == ["bloomreach", "elevate"]

    z = zipfile.ZipFile(io.BytesIO(body))
    assert z.testzip() is None
    names = sorted(z.namelist())
    assert names == sorted(
        [
            "Elevate/contacts.jsonl",
            "Elevate/orders/2026.jsonl",
            "Elevate/notes.txt",
            "Bloomreach/customer.json",
            INDEX_FILE,
            CONTROLLER_FILE,
            MANIFEST_FILE,
        ]
    )
    assert ref.files == len(names)
    assert not any(n.endswith(".zip") for n in names)  # never a zip inside the zip
    assert z.read("Elevate/contacts.jsonl") == ROWS

    listing = json.loads(z.read(MANIFEST_FILE))
    assert listing["request_id"] == RID and listing["algorithm"] == "sha256"
    by_path = {f["path"]: f for f in listing["files"]}
    assert set(by_path) == set(names) - {MANIFEST_FILE}
    for path, entry in by_path.items():
        data = z.read(path)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert by_path["Elevate/contacts.jsonl"]["records"] == 25
    assert by_path["Elevate/orders/2026.jsonl"]["records"] == 25  # the last line without its newline counts
    assert "records" not in by_path["Elevate/notes.txt"]


def test_index_html_says_in_plain_words_what_each_system_returned_held_or_could_not_give(aws):
    ref = builder(aws).build(request(three_vendors(aws)))
    page = zipfile.ZipFile(io.BytesIO(stored(aws, ref.key)[1])).read(INDEX_FILE).decode()

    # Self-contained: no script, no external asset, no link out.
    assert "<script" not in page.lower() and "src=" not in page.lower()
    assert not re.search(r"(href|url)\s*[=(]", page.lower())
    assert "default-src 'none'" in page
    assert RID in page and "20 November 2026" in page and "2 December 2026" in page
    assert "<strong>Elevate</strong>: returned 3 files" in page
    assert "Elevate/contacts.jsonl" in page
    assert "<strong>Qualifio</strong>: holds no data about you" in page
    assert "Systems that hold nothing about you" in page
    assert "We could not retrieve your data from this system. Recorded reason: crm: the export job failed" in page
    # A denial's reason names the approver: the subject reads the fixed wording only.
    assert "decided not to retrieve data" in page and "arn:aws:iam" not in page
    assert "Your data in this system was erased." in page
    assert "right to lodge a complaint" in page  # the controller text


def test_values_from_vendors_are_escaped_in_index_html(aws):
    members = {"Tom & Jerry's.jsonl": b'{"a": 1}\n'}
    outcomes = [
        export("elevate", archives=[put(aws, "elevate", "e.zip", make_zip(members), "zip")]),
        export("crm", status="failed", reason="<img src=x onerror=alert(1)>"),
    ]
    ref = builder(aws).build(request(outcomes))
    page = zipfile.ZipFile(io.BytesIO(stored(aws, ref.key)[1])).read(INDEX_FILE).decode()
    assert "Tom &amp; Jerry&#x27;s.jsonl" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_deployers_controller_text_replaces_the_default_with_its_fields_filled(aws, tmp_path):
    text = tmp_path / "controller.txt"
    text.write_text("Acme Ltd answers request $request_id of $received_date. Keep $unknown.\n\nDPO: dpo@acme.test\n")
    outcomes = three_vendors(aws)
    ref = builder(aws, controller_text=load_controller_text(str(text))).build(request(outcomes))
    z = zipfile.ZipFile(io.BytesIO(stored(aws, ref.key)[1]))
    assert z.read(CONTROLLER_FILE).decode().startswith(f"Acme Ltd answers request {RID} of 20 November 2026.")
    assert "$unknown" in z.read(CONTROLLER_FILE).decode()
    assert "dpo@acme.test" in z.read(INDEX_FILE).decode()
    assert "[FILL IN" in load_controller_text(None)  # the neutral default says what to fill in


def test_member_names_that_would_escape_the_folder_or_collide_are_made_safe():
    assert safe_path("../../etc/passwd") == "etc/passwd"
    assert safe_path("/abs/x.json") == "abs/x.json"
    assert safe_path("C:\\Users\\x.json") == "C_/Users/x.json"
    assert safe_path('a<b>:"|?*\x00.json') == "a_b_______.json"
    assert safe_path("..") == "file"


def test_colliding_and_unsafe_names_stay_inside_the_vendor_folder(aws):
    members = {"../index.html": b"evil", "a.json": b"1", "A.json": b"2", "x/../../../a.json": b"3"}
    outcomes = [export("elevate", archives=[put(aws, "elevate", "e.zip", make_zip(members), "zip")])]
    ref = builder(aws).build(request(outcomes))
    z = zipfile.ZipFile(io.BytesIO(stored(aws, ref.key)[1]))
    names = z.namelist()
    assert all(n.startswith("Elevate/") for n in names if n not in (INDEX_FILE, CONTROLLER_FILE, MANIFEST_FILE))
    assert z.read(INDEX_FILE) != b"evil" and z.read("Elevate/index.html") == b"evil"
    assert sorted(n for n in names if n.lower().startswith("elevate/a")) == ["Elevate/A (2).json", "Elevate/a.json"]
    assert z.read("Elevate/x/a.json") == b"3"  # ".." is dropped, never followed


# --- when there is none --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "reason"),
    [
        ([erase("elevate")], "the request asked for no export"),
        ([export("elevate", status="failed"), export("qualifio", status="skipped")], "no export completed"),
    ],
)
def test_nothing_to_package_is_not_built_with_a_reason_and_stores_nothing(aws, outcomes, reason):
    assert plan(outcomes) == reason
    ref = builder(aws).build(request(outcomes))
    assert ref.status == "not_built" and ref.reason == reason and ref.key is None
    assert aws.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_dry_run_is_packaged_and_its_page_says_it_is_a_rehearsal(aws):
    outcomes = [
        export("bloomreach", archives=[put(aws, "bloomreach", "c.json", b'{"success": true}', "json")]),
        erase("bloomreach", status="planned"),
    ]
    ref = builder(aws).build(request(outcomes, dry_run=True))
    page = zipfile.ZipFile(io.BytesIO(stored(aws, ref.key)[1])).read(INDEX_FILE).decode()
    assert ref.status == "built" and "rehearsal (a dry run)" in page and "nothing was erased" in page


# --- sources that changed, S3 failing --------------------------------------------------------------------------


def nothing_stored(aws) -> bool:
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return package_key(RID) not in keys and not aws.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_a_source_file_that_no_longer_matches_its_recorded_sha256_fails_and_stores_nothing(aws):
    archive = put(aws, "bloomreach", "customer.json", b'{"success": true}', "json")
    tampered = archive.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(PackageSourceInvalid, match="no longer matches the sha256"):
        builder(aws).build(request([export("bloomreach", archives=[tampered])]))
    assert nothing_stored(aws)


def test_a_source_whose_size_changed_fails_and_stores_nothing(aws):
    archive = put(aws, "elevate", "e.zip", make_zip(SAMPLE_ZIP), "zip")
    aws.s3.put_object(Bucket=BUCKET, Key=archive.key, Body=make_zip({"other.json": b"{}"}))
    with pytest.raises(PackageSourceInvalid, match="the collect step recorded"):
        builder(aws).build(request([export("elevate", archives=[archive])]))
    assert nothing_stored(aws)


def test_a_member_with_a_bad_crc_fails_and_stores_nothing(aws):
    data = bytearray(make_zip({"a.txt": b"A" * 4000}))
    data[data.index(b"a.txt") + 5 + 10] ^= 0xFF  # a byte of the (deflated) member data
    archive = put(aws, "elevate", "e.zip", bytes(data), "zip")
    with pytest.raises(PackageSourceInvalid):
        builder(aws).build(request([export("elevate", archives=[archive])]))
    assert nothing_stored(aws)


def test_archives_declaring_more_than_a_package_holds_are_refused_before_anything_is_written(aws):
    outcomes = [export("elevate", archives=[put(aws, "elevate", "e.zip", make_zip(SAMPLE_ZIP), "zip")])]
    faulty = FaultyS3(aws.s3)
    with pytest.raises(PackageTooLarge, match="unpack to"):
        builder(aws, faulty, max_unpacked=100).build(request(outcomes))
    assert "create_multipart_upload" not in faulty.calls and nothing_stored(aws)


def test_s3_failing_an_upload_part_aborts_the_package(aws):
    big = random.Random(3).randbytes(6 * MIB)  # incompressible: more than one 5 MiB part
    outcomes = [export("elevate", archives=[put(aws, "elevate", "e.zip", make_zip({"photo.jpg": big}), "zip")])]
    faulty = FaultyS3(aws.s3).fail("upload_part", on=None)
    with pytest.raises(ArchiveTransferError, match="UploadPart"):
        builder(aws, faulty).build(request(outcomes))
    assert "abort_multipart_upload" in faulty.calls and nothing_stored(aws)


def test_a_ranged_read_hiccup_is_retried(aws):
    outcomes = [export("elevate", archives=[put(aws, "elevate", "e.zip", make_zip(SAMPLE_ZIP), "zip")])]
    faulty = FaultyS3(aws.s3).fail("get_object", on=(1,))
    ref = builder(aws, faulty).build(request(outcomes))
    assert ref.status == "built" and faulty.calls.count("get_object") >= 2


def test_range_reader_reads_any_span_with_one_block_held(aws):
    data = random.Random(5).randbytes(3 * MIB + 17)
    aws.s3.put_object(Bucket=BUCKET, Key="k", Body=data)
    reader = S3RangeReader(aws.s3, BUCKET, "k", len(data), block=MIB, sleep=lambda _: None)
    assert reader.seek(-10, io.SEEK_END) == len(data) - 10 and reader.read() == data[-10:]
    reader.seek(MIB - 3)
    assert reader.read(10) == data[MIB - 3 : MIB + 7]
    reader.seek(0)
    assert io.BufferedReader(reader, 64 * 1024).read() == data
    assert len(reader._data) <= MIB


# --- bounded memory --------------------------------------------------------------------------------------------


class FileBackedS3:
    """Ranged GETs served from bytes held outside tracemalloc's view (allocated before tracing starts), and
    uploads to a real botocore client that drops the bodies (local/discarding_s3.py): what the Lambda itself
    holds while packing, without moto's in-memory storage."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects
        self.sink = DiscardingS3()

    def get_object(self, *, Bucket: str, Key: str, Range: str) -> dict[str, Any]:
        start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        data = self.objects[Key]
        return {"Body": io.BytesIO(data[start : end + 1]), "ContentRange": f"bytes {start}-{end}/{len(data)}"}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink.client, name)


def test_memory_is_bounded_by_the_read_block_and_the_part_size_not_by_the_data():
    rng = random.Random(11)
    # 96 MiB unpacked: a 64 MiB incompressible member (stored as .jpg) and 32 MiB of JSON Lines.
    rows = b"".join(json.dumps({"id": i, "v": rng.random()}).encode() + b"\n" for i in range(20_000))
    members = {"photo.jpg": rng.randbytes(64 * MIB), "events.jsonl": rows * (32 * MIB // len(rows))}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("photo.jpg", members["photo.jpg"], compress_type=zipfile.ZIP_STORED)
        z.writestr("events.jsonl", members["events.jsonl"], compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    source = buffer.getvalue()
    del members, buffer
    key = f"requests/{RID}/elevate/export/e.zip"
    s3 = FileBackedS3({key: source})
    archive = StoredArchive(
        key=key, name="e.zip", content_type="application/zip", bytes=len(source), sha256="0" * 64, verified="zip"
    )
    b = Builder(s3, BUCKET, "kms", now=lambda: NOW, read_block=8 * MIB)  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        ref = b.build(request([export("elevate", archives=[archive])]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.status == "built" and ref.bytes == s3.sink.received
    assert ref.bytes > 64 * MIB  # the data went through
    # One 8 MiB read block (plus the slice handed back), one 8 MiB part and its copy for botocore, 1 MiB chunks:
    # about 34 MiB whatever the size of the data (96 MiB here).
    assert peak < 40 * MIB, f"peak {peak / MIB:.1f} MiB"
