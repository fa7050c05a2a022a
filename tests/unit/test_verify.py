"""core.verify on its own: the zip and JSON rules, their limits, the spool's life, and messages that never
quote a vendor's member names or document text."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from core import verify
from core.errors import ArchiveInvalid, ArchiveTooLarge, ConfigError
from core.verify import Malformed, TopLevelParser, VerifyResult, top_level_summary, verifier_for

KEY = "requests/r-1/elevate/export/contacts.zip"
PERSONAL = "jane.doe@example.com"
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def spool(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ARCHIVE_SPOOL_DIR", str(tmp_path))
    monkeypatch.delenv("ARCHIVE_SPOOL_LIMIT_MB", raising=False)
    return tmp_path


def open_under(directory: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED, comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.comment = comment
    return buf.getvalue()


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def check(kind: str, data: bytes, chunk: int = 4096, length: int | None = None) -> VerifyResult:
    with verifier_for(kind, KEY, length=length) as verifier:
        for piece in pieces(data, chunk):
            verifier.feed(piece)
        return verifier.finish()


def rule_of(kind: str, data: bytes, **kw) -> str:
    with pytest.raises(ArchiveInvalid) as err:
        check(kind, data, **kw)
    message = str(err.value)
    assert message.startswith(f"{KEY}: ")
    assert PERSONAL not in message and "jane" not in message
    return message[len(KEY) + 2 :]


def patch_flags(data: bytes, set_bits: int = 0, method: int | None = None) -> bytes:
    """Set general-purpose flag bits / the compression method of every member, in the local headers and the
    central directory alike (zipfile checks they agree)."""
    out = bytearray(data)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        while at >= 0:
            (flags,) = struct.unpack_from("<H", out, at + flag_at)
            struct.pack_into("<H", out, at + flag_at, flags | set_bits)
            if method is not None:
                struct.pack_into("<H", out, at + flag_at + 2, method)
            at = out.find(signature, at + 4)
    return bytes(out)


# --- zip: valid ----------------------------------------------------------------------------------------------


def test_valid_zip_reports_members_and_uncompressed_bytes(spool):
    members = {f"t{i}.jsonl": b'{"n": %d}\n' % i * 500 for i in range(4)}
    members["dir/"] = b""
    result = check("zip", make_zip(members))
    assert result == VerifyResult("zip", members=5, uncompressed=sum(len(v) for v in members.values()))
    assert open_under(spool) == [] and os.listdir(spool) == []


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_zip_verdict_does_not_depend_on_chunking(chunk):
    data = make_zip({"a.txt": b"hello" * 100, "empty.txt": b""}, comment=b"exported by the vendor")
    assert check("zip", data, chunk=chunk) == VerifyResult("zip", members=2, uncompressed=500)


def test_empty_zip_is_only_an_end_record_and_valid():
    data = make_zip({})
    assert data.startswith(b"PK\x05\x06") and len(data) == 22
    assert check("zip", data) == VerifyResult("zip", members=0, uncompressed=0)


def test_zip64_end_record_is_followed(monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # makes zipfile write the zip64 end records
    data = bytearray(make_zip({"a": b"1", "b": b"22", "c": b"333"}))
    monkeypatch.undo()
    eocd = data.rfind(b"PK\x05\x06")
    assert data[eocd - 20 : eocd - 16] == b"PK\x06\x07"
    struct.pack_into("<HH", data, eocd + 8, 0xFFFF, 0xFFFF)  # the plain record defers to the zip64 one
    assert check("zip", bytes(data)) == VerifyResult("zip", members=3, uncompressed=6)


def test_a_maximal_count_without_zip64_records_is_taken_as_it_is():
    data = bytearray(make_zip({"a": b"1", "b": b"22", "c": b"333"}))
    struct.pack_into("<HH", data, data.rfind(b"PK\x05\x06") + 8, 0xFFFF, 0xFFFF)  # 65535 members, no zip64
    assert check("zip", bytes(data)) == VerifyResult("zip", members=3, uncompressed=6)


# --- zip: refused --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, rule",
    [
        (b"", "the download (0 bytes) is empty, not a zip"),
        (b"\xef\xbb\xbf  \n<!doctype HTML><title>Login</title>", "is an HTML page, not a zip"),
        (b'<?xml version="1.0"?><html xmlns="x"><body/></html>', "is an HTML page, not a zip"),
        (b'{"error": "export expired for ' + PERSONAL.encode() + b'"}', "is a JSON document, not a zip"),
        (b"PK\x07\x08 spanned archive marker", "does not start like a zip"),
        (b"\x1f\x8b\x08\x00 gzip, not zip", "does not start like a zip"),
    ],
    ids=["empty", "html-bom", "xhtml", "json-error", "spanned", "gzip"],
)
def test_what_is_not_a_zip_is_said_plainly(data, rule):
    message = rule_of("zip", data)
    assert message.endswith(rule)
    if data:
        assert message.startswith(f"the download ({len(data)} bytes) ")


def test_truncated_zip_has_no_end_record():
    data = make_zip({"contacts.jsonl": random.Random(1).randbytes(4000)})
    for cut in (4, 500, len(data) - 1):
        assert rule_of("zip", data[:cut]) == (
            f"the zip ({cut} bytes) has no end-of-central-directory record: it is truncated or damaged"
        )


def test_damaged_central_directory_does_not_open():
    data = bytearray(make_zip({f"{PERSONAL}.txt": b"x" * 100}))
    cd = data.rfind(b"PK\x01\x02")
    data[cd : cd + 4] = b"XXXX"
    assert rule_of("zip", bytes(data)) == f"the zip ({len(data)} bytes) does not open as a zip (BadZipFile)"


def test_crc_failure_names_the_member_index():
    body = random.Random(2).randbytes(1000)
    data = bytearray(make_zip({"ok.txt": b"fine", f"{PERSONAL}.bin": body}, compression=zipfile.ZIP_STORED))
    data[bytes(data).index(body) + 10] ^= 0x80
    assert rule_of("zip", bytes(data)) == "member 2 of 2 fails its CRC-32 check: the zip is damaged"


def test_encrypted_member_is_refused():
    data = patch_flags(make_zip({"a.txt": b"a", f"{PERSONAL}.txt": b"secret"}), set_bits=0x1)
    assert rule_of("zip", data) == "member 1 of 2 is encrypted; an export must open without a password"


def test_unknown_compression_method_is_refused():
    data = patch_flags(make_zip({f"{PERSONAL}.txt": b"x" * 50}), method=99)  # 99: AES (WinZip)
    assert rule_of("zip", data) == "member 1 of 1 uses compression method 99, which this function cannot verify"


def test_zip_bomb_guard_refuses_before_inflating(monkeypatch):
    monkeypatch.setattr(verify, "MAX_UNCOMPRESSED_BYTES", 10_000)
    data = make_zip({"a": b"\0" * 6000, "b": b"\0" * 6000})
    assert len(data) < 1000
    read: list[int] = []
    original = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **kw: read.append(1) or original(self, *a, **kw))
    assert rule_of("zip", data) == (
        f"the zip ({len(data)} bytes) declares 12000 uncompressed bytes, more than the 10000 allowed (zip bomb guard)"
    )
    assert read == []


def test_member_count_is_capped_before_the_directory_is_loaded(monkeypatch):
    monkeypatch.setattr(verify, "MAX_MEMBERS", 2)
    data = make_zip({"a": b"", "b": b"", "c": b""})
    assert "lists 3 members in a" in rule_of("zip", data)


# --- zip: the spool ------------------------------------------------------------------------------------------


def test_spool_is_one_unlinked_file_open_only_while_verifying(spool):
    data = make_zip({"a": b"abc" * 1000})
    verifier = verifier_for("zip", KEY)
    verifier.feed(data[:100])
    assert len(open_under(spool)) == 1 and os.listdir(spool) == []  # on disk, yet never in the directory
    for piece in pieces(data[100:], 333):
        verifier.feed(piece)
    assert verifier.finish().members == 1
    assert open_under(spool) == []
    verifier.close()  # idempotent


def test_spool_is_deleted_when_verification_fails(spool):
    verifier = verifier_for("zip", KEY)
    verifier.feed(b"<html>login</html>")
    with pytest.raises(ArchiveInvalid):
        verifier.finish()
    assert open_under(spool) == []


def test_spool_limit_is_enforced_while_feeding(spool, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SPOOL_LIMIT_MB", "1")
    verifier = verifier_for("zip", KEY)
    verifier.feed(b"P" * MIB)
    with pytest.raises(
        ArchiveTooLarge,
        match=r"exceeds the 1 MiB this function may spool to verify a zip; raise "
        r"the collect function's ephemeral storage and ARCHIVE_SPOOL_LIMIT_MB",
    ):
        verifier.feed(b"K")
    assert open_under(spool) == []  # space given back at once


def test_announced_length_beyond_the_limit_or_the_free_space_is_refused_up_front(spool, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SPOOL_LIMIT_MB", "1")
    with pytest.raises(ArchiveTooLarge, match="announced 1048577 bytes, more than the 1 MiB"):
        verifier_for("zip", KEY, length=MIB + 1)
    monkeypatch.setenv("ARCHIVE_SPOOL_LIMIT_MB", "100")
    monkeypatch.setattr(verify.shutil, "disk_usage", lambda _: SimpleNamespace(free=4096))
    with pytest.raises(ArchiveTooLarge, match="announced 8192 bytes but the spool directory has 4096 bytes free"):
        verifier_for("zip", KEY, length=8192)
    assert open_under(spool) == []


def test_running_out_of_disk_is_too_large_not_a_crash(spool, monkeypatch):
    real = tempfile.TemporaryFile

    class Full:
        def __init__(self, **kw):
            self.file = real(**kw)

        def write(self, data):
            if self.file.tell() + len(data) > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

    monkeypatch.setattr(verify.tempfile, "TemporaryFile", Full)
    verifier = verifier_for("zip", KEY)
    verifier.feed(b"PK\x03\x04" + b"x" * 600)
    with pytest.raises(
        ArchiveTooLarge,
        match=r"the temporary storage ran out after 604 bytes while spooling the "
        r"zip to verify it; raise the collect function's ephemeral storage",
    ):
        verifier.feed(b"y" * 600)
    assert verifier._file is None  # closed


def test_disk_filling_up_on_the_last_flush_is_too_large_too(spool, monkeypatch):
    real = tempfile.TemporaryFile

    class FullOnFlush:
        def __init__(self, **kw):
            self.file = real(**kw)

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.file, name)

    monkeypatch.setattr(verify.tempfile, "TemporaryFile", FullOnFlush)
    verifier = verifier_for("zip", KEY)
    verifier.feed(make_zip({"a": b"x"}))
    with pytest.raises(ArchiveTooLarge, match="the temporary storage ran out after"):
        verifier.finish()
    assert verifier._file is None


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_a_bad_spool_limit_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv("ARCHIVE_SPOOL_LIMIT_MB", value)
    with pytest.raises(ConfigError, match="'ARCHIVE_SPOOL_LIMIT_MB' must be a positive whole number of MiB"):
        verifier_for("zip", KEY)


def test_a_missing_spool_dir_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHIVE_SPOOL_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="'ARCHIVE_SPOOL_DIR' is not a usable directory"):
        verifier_for("zip", KEY)


def test_default_spool_is_the_temp_dir_and_3_gib(monkeypatch):
    monkeypatch.delenv("ARCHIVE_SPOOL_DIR")
    assert verify.spool_dir() == tempfile.gettempdir()
    assert verify.spool_limit() == 3072 * MIB


# --- json ----------------------------------------------------------------------------------------------------


def test_json_success_true_with_big_nested_values_is_valid():
    doc = json.dumps(
        {
            "events": [{"note": 'tricky "}]\\ text {['} for _ in range(2000)],
            "success": True,
            "properties": {"email": PERSONAL},
        }
    ).encode()
    for chunk in (1, 3, 64 * 1024):
        assert check("json", doc, chunk=chunk) == VerifyResult("json")


@pytest.mark.parametrize(
    "doc, rule",
    [
        (b"", "is empty, not a JSON document"),
        (
            b'{"success": false, "errors": ["' + PERSONAL.encode() + b' is locked"]}',
            "is a JSON document with success: false",
        ),
        (b'{"success": "true"}', "is a JSON document with no success: true"),
        (b'{"errors": []}', "is a JSON document with no success: true"),
        (b'{"success": true, "events": [1, 2', "is truncated: the JSON document does not end"),
        (b'{"success": true, "email": "' + PERSONAL.encode(), "is truncated: the JSON document does not end"),
        (b'{"success": true} {"success": false}', "is not a JSON document"),
        (b'{"success": true, "e": [1}]}', "fails the JSON check: mismatched brackets"),
        (b'{"success": true}}', "fails the JSON check: unbalanced brackets"),
        (
            b'{"a": ' + b"[" * 1001 + b"]" * 1001 + b', "success": true}',
            "fails the JSON check: the document nests deeper than 1000 levels",
        ),
        (b'"success"', "is JSON but its top level is not an object"),
        (
            b"<!DOCTYPE html><html><body>" + PERSONAL.encode() + b"</body></html>",
            "is an HTML page, not a JSON document",
        ),
        (b"\xff\xfe not utf", "is not a JSON document"),
    ],
    ids=[
        "empty",
        "success-false",
        "success-string",
        "no-success",
        "truncated",
        "truncated-string",
        "two-docs",
        "mismatched",
        "unbalanced",
        "too-deep",
        "scalar",
        "html",
        "bad-encoding",
    ],
)
def test_json_refusals(doc, rule):
    assert rule_of("json", doc, chunk=5) == f"the download ({len(doc)} bytes) {rule}"


def test_bytes_kind_has_no_content_rule():
    assert check("bytes", b"<html>anything</html>") == VerifyResult("bytes")
    assert check("bytes", b"") == VerifyResult("bytes")


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown archive kind 'tar'"):
        verifier_for("tar", KEY)


# --- the bounded top-level parser (a general copy of the one in connectors/bloomreach.py) ---------------------


def summary(doc: bytes, chunk: int = 3, **kw):
    return top_level_summary(io.BytesIO(doc).read, chunk=chunk, **kw)


def test_summary_keeps_the_top_level_across_chunk_boundaries():
    doc = {
        "events": [{"type": "view", "note": 'tricky "}]\\ text {['}] * 50,
        "success": False,
        "errors": ['Customer "x" is locked', "retry {later}"],
        "ids": {"registered": "crm-1"},
        "count": 3,
    }
    got = summary(json.dumps(doc).encode(), keep_nested=256)
    assert got == {**doc, "events": None}  # the big nested value is dropped, the small ones kept


@pytest.mark.parametrize("chunk", [1, 2, 7, 64 * 1024])
def test_summary_is_independent_of_chunk_size(chunk):
    doc = json.dumps({"success": True, "properties": {"a": 'b\\"c'}, "k": "\u00e9\u4e2d"}).encode("utf-8")
    assert summary(doc, chunk=chunk) == json.loads(doc)


@pytest.mark.parametrize("doc", [b'{"success": true, "events": [1, 2', b'{"success": "tru', b"not json", b"}", b""])
def test_summary_rejects_truncated_or_non_json(doc):
    with pytest.raises(ValueError):
        summary(doc)


def test_summary_bounds_the_top_level():
    doc = json.dumps({"success": True, "blob": "x" * 5000}).encode()
    with pytest.raises(Malformed, match="too large"):
        summary(doc, max_top_level=1000)


def test_parser_memory_is_bounded_by_the_top_level():
    parser = TopLevelParser(keep_nested=1024)
    parser.feed(b'{"success": true, "events": [')
    for _ in range(2000):
        parser.feed(b'{"type": "view", "payload": "' + b"x" * 500 + b'"},')
    parser.feed(b"0]}")
    assert parser.finish() == {"success": True, "events": None}
    assert len(parser.top) < 100
