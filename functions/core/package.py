"""The access package: one zip per request that answers the subject (GDPR Art. 15), streamed into S3.

    requests/{id}/package/dsrflow-access-{id}.zip  (SSE-KMS, under requests/: it expires with the request data)
        index.html                 a self-contained page in plain language: no scripts, no external assets
        about-this-answer.txt      the controller's text (Art. 15(1): purposes, recipients, retention, rights)
        <vendor>/...               each system's data; a vendor's zip is unpacked (never a zip inside the zip)
        manifest.json              every other file's path, size and sha256 (and, for JSON Lines, its records)

When: after every vendor branch has ended, when at least one export completed (a request without an export,
or one whose exports all failed, gets none: `plan` says why). A dry run's exports are real, so it gets one.

Memory is bounded by the read block and the part size, not by the data:
- a vendor zip is read with random access through ranged S3 GETs (`S3RangeReader`): one block of
  PACKAGE_READ_MB (default 8 MiB) is held at a time. No /tmp is used, so the package needs no ephemeral storage
  beyond Lambda's default, whatever the archives' sizes;
- members are copied in COPY_CHUNK pieces through zlib into a `MultipartWriter` (core/archive_store.py), which
  holds the part being filled and the parts in flight (PARTS_IN_FLIGHT, (N+1) x 8 MiB) and sends each with
  its CRC32 while the next is deflated;
- the sha256 of every file is computed on the way, and the package's own as it is uploaded.

Integrity: a vendor zip's members are checked against their CRC as they are read (zipfile), a vendor file
stored as-is against the sha256 and size recorded when it was collected; a mismatch fails the package
(PackageSourceInvalid) and nothing is stored: the upload is aborted, as for archives.

What is kept of it (the manifest, the ledger, the CRM event): core.models.PackageRef, sizes, counts and
digests only. The file names inside the package come from the vendors and may hold the subject's values:
they stay in the package, which is personal data and expires with it.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import string
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.archive_store import MIB, MultipartWriter, StoredArchive, with_retries
from core.domain import Action
from core.errors import ArchiveTransferError, DsrError
from core.models import ActionOutcome, PackageRef
from core.store import package_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_READ_BLOCK = 8 * MIB
COPY_CHUNK = 1 * MIB
# The sum of the unpacked sizes the vendors' zips declare: beyond it the package is refused before anything
# is written (a zip bomb, or more than one 15-minute invocation can pack: text deflates at about 52 MiB/s on
# one core, make bench, so 32 GiB takes about 630 s).
MAX_UNPACKED_BYTES = 32 * 1024 * MIB
# Listed one by one in index.html up to this many per system; manifest.json always lists every file.
INDEX_LISTED = 500
CONTROLLER_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "controller.txt"
CONTROLLER_FILE = "about-this-answer.txt"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.html"
FORMAT = "dsrflow access package 1"
JSON_LINES = (".jsonl", ".ndjson")
# Already compressed: stored as they are (deflating them again costs CPU and saves nothing).
COMPRESSED = (".zip", ".gz", ".bz2", ".xz", ".zst", ".7z", ".jpg", ".jpeg", ".png", ".gif", ".webp", ".mp4", ".pdf")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


class PackageSourceInvalid(DsrError):
    """A stored vendor archive is not what was recorded when it was collected (size, digest or a member's
    CRC): the package is not built, nothing is stored."""


class PackageTooLarge(DsrError):
    """The vendors' archives unpack to more than one package may hold (MAX_UNPACKED_BYTES)."""


# --- reading a stored archive with random access -----------------------------------------------------------


class S3RangeReader(io.RawIOBase):
    """A read-only, seekable file over one S3 object: ranged GETs of `block` bytes, one block held at a time.
    Each GET is retried on transient errors (core.archive_store.with_retries)."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        size: int,
        *,
        block: int = DEFAULT_READ_BLOCK,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__()
        self.s3, self.bucket, self.key, self.size, self.block, self.sleep = s3, bucket, key, size, block, sleep
        self.position = 0
        self._start = 0
        self._data = b""
        self.requests = 0  # ranged GETs made (the bench reports them)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.position >= self.size or not len(view):
            return 0
        if not self._start <= self.position < self._start + len(self._data):
            self._fetch(self.position)
        offset = self.position - self._start
        n = min(len(view), len(self._data) - offset)
        view[:n] = self._data[offset : offset + n]
        self.position += n
        return n

    def _fetch(self, start: int) -> None:
        end = min(start + self.block, self.size) - 1
        self._data = b""  # the old block goes before the new one arrives: one block in memory

        def get(_: int) -> bytes:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}")
            total = str(answer.get("ContentRange", "")).rpartition("/")[2]
            if total and total != "*" and int(total) != self.size:
                raise PackageSourceInvalid(
                    f"{self.key}: S3 holds {total} bytes, the collect step recorded {self.size}; the package was "
                    "not built"
                )
            body = answer["Body"]
            try:
                return body.read()
            finally:
                body.close()

        try:
            data = with_retries(get, sleep=self.sleep, what="S3 GetObject (range)")
        except DsrError:
            raise
        except Exception as exc:
            from core.archive_store import error_code, failure

            if error_code(exc) == "InvalidRange":  # the object is shorter than the size collect recorded
                raise PackageSourceInvalid(
                    f"{self.key}: S3 holds fewer bytes than the {self.size} the collect step recorded; the package "
                    "was not built"
                ) from None
            raise ArchiveTransferError(
                f"{self.key}: S3 GetObject failed {failure(exc)} while reading it for the access package"
            ) from None
        if len(data) != end - start + 1:
            raise ArchiveTransferError(f"{self.key}: a ranged read returned {len(data)} of {end - start + 1} bytes")
        self.requests += 1
        self._start, self._data = start, data


# --- what goes in --------------------------------------------------------------------------------------------


@dataclass
class PackedFile:
    path: str
    bytes: int
    sha256: str
    system: str | None = None
    records: int | None = None  # JSON Lines: the lines holding a record


@dataclass
class SystemReport:
    """One system (vendor) as index.html tells it."""

    vendor: str
    status: str  # the export's outcome status
    reason: str | None = None
    files: list[PackedFile] = field(default_factory=list)
    erase: str | None = None  # the erase's outcome status, where one was asked
    archives: list[StoredArchive] = field(default_factory=list)  # what a completed export stored, to unpack


def plan(outcomes: list[ActionOutcome]) -> str | None:
    """None when there is something to package, else the reason (fixed wording) why not. A dry run is packaged
    too: its exports are real (only destructive calls are planned), and the package is how an operator sees
    what a subject would receive before going live."""
    exports = [o for o in outcomes if o.action == Action.EXPORT]
    if not exports:
        return "the request asked for no export"
    if not any(o.status == "completed" for o in exports):
        return "no export completed"
    return None


def label(vendor: str) -> str:
    """The system's name as the subject reads it (and its folder in the package)."""
    return vendor.capitalize()


def safe_path(name: str) -> str:
    """A vendor's member name as a relative path that extracts inside its folder on any system: no absolute
    path, no `..`, no drive letters or characters Windows refuses, no control characters."""
    parts = []
    for part in name.replace("\\", "/").split("/"):
        part = _UNSAFE.sub("_", part).strip(" .")
        if part and part not in (".", ".."):
            parts.append(part[:120])
    return "/".join(parts) or "file"


class _Names:
    """Unique paths in the zip: a second `a.json` becomes `a (2).json`."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def claim(self, path: str) -> str:
        stem, dot, ext = path.rpartition(".")
        if not dot or "/" in ext:
            stem, ext = path, ""
        candidate, n = path, 1
        while candidate.casefold() in self.taken:
            n += 1
            candidate = f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})"
        self.taken.add(candidate.casefold())
        return candidate


class _Counter:
    """sha256, size and (for JSON Lines) records of a file as it streams."""

    def __init__(self, lines: bool):
        self.sha = hashlib.sha256()
        self.size = 0
        self.lines = lines
        self.records = 0
        self._open_line = False  # the last byte seen was inside a line

    def feed(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)
        if self.lines and chunk:
            self.records += chunk.count(b"\n")
            self._open_line = not chunk.endswith(b"\n")

    def file(self, path: str, system: str | None) -> PackedFile:
        records = self.records + (1 if self._open_line else 0) if self.lines else None
        return PackedFile(path, self.size, self.sha.hexdigest(), system, records)


def _compression(path: str) -> int:
    return zipfile.ZIP_STORED if path.lower().endswith(COMPRESSED) else zipfile.ZIP_DEFLATED


def _date_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    return (max(moment.year, 1980), moment.month, moment.day, moment.hour, moment.minute, moment.second)


# --- the builder -----------------------------------------------------------------------------------------------


@dataclass
class PackageInput:
    request_id: str
    received_at: datetime
    attempt: int
    outcomes: list[ActionOutcome]
    dry_run: bool = False


class Builder:
    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        kms_key_id: str,
        *,
        now: Callable[[], datetime],
        read_block: int = DEFAULT_READ_BLOCK,
        controller_text: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_unpacked: int = MAX_UNPACKED_BYTES,
    ):
        self.s3, self.bucket, self.kms_key_id = s3, bucket, kms_key_id
        self.now, self.read_block, self.sleep, self.max_unpacked = now, read_block, sleep, max_unpacked
        self.controller_text = controller_text if controller_text is not None else load_controller_text(None)
        self.ranged_reads = 0

    def build(self, request: PackageInput) -> PackageRef:
        why_not = plan(request.outcomes)
        if why_not is not None:
            return PackageRef(status="not_built", reason=why_not, attempt=request.attempt)
        reports = _reports(request.outcomes)
        key = package_key(request.request_id)
        built_at = self.now()
        files: list[PackedFile] = []
        names = _Names()
        for reserved in (INDEX_FILE, CONTROLLER_FILE, MANIFEST_FILE):
            names.claim(reserved)
        self._check_size(reports, request.request_id)
        writer = MultipartWriter(
            self.s3,
            self.bucket,
            key,
            self.kms_key_id,
            content_type="application/zip",
            content_disposition=f'attachment; filename="dsrflow-access-{request.request_id}.zip"',
            sleep=self.sleep,
        )
        with writer, zipfile.ZipFile(writer, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as out:
            for report in reports:
                for archive in report.archives:
                    report.files += self._add_archive(out, names, report.vendor, archive, built_at)
                files += report.files
            controller = _render_controller(self.controller_text, request, built_at)
            files.append(_add_bytes(out, CONTROLLER_FILE, controller.encode(), built_at))
            page = render_index(request, reports, controller, built_at)
            files.append(_add_bytes(out, INDEX_FILE, page.encode(), built_at))
            listing = {
                "format": FORMAT,
                "request_id": request.request_id,
                "created_at": built_at.isoformat().replace("+00:00", "Z"),
                "algorithm": "sha256",
                "files": [
                    {k: v for k, v in vars(f).items() if v is not None} for f in sorted(files, key=lambda f: f.path)
                ],
            }
            _add_bytes(out, MANIFEST_FILE, json.dumps(listing, indent=2).encode(), built_at)
        assert writer.stored is not None  # set when the with-block completed the upload
        size, digest = writer.stored
        return PackageRef(
            status="built",
            key=key,
            bytes=size,
            sha256=digest,
            files=len(files) + 1,
            systems=[r.vendor for r in reports if r.files],
            built_at=built_at,
            attempt=request.attempt,
        )

    def _check_size(self, reports: list[SystemReport], request_id: str) -> None:
        """Refuse before writing anything when the archives unpack to more than max_unpacked (the sizes the
        zips declare; zipfile refuses a member that unpacks to more than it declared)."""
        total = 0
        for report in reports:
            for archive in report.archives:
                if archive.verified == "zip":
                    with zipfile.ZipFile(self._reader(archive)) as source:
                        total += sum(i.file_size for i in source.infolist())
                else:
                    total += archive.bytes
        if total > self.max_unpacked:
            raise PackageTooLarge(
                f"request {request_id}: the vendors' archives unpack to {total} bytes, more than the "
                f"{self.max_unpacked} one access package holds; the package was not built"
            )

    def _reader(self, archive: StoredArchive) -> S3RangeReader:
        return S3RangeReader(self.s3, self.bucket, archive.key, archive.bytes, block=self.read_block, sleep=self.sleep)

    def _add_archive(
        self, out: zipfile.ZipFile, names: _Names, vendor: str, archive: StoredArchive, built_at: datetime
    ) -> list[PackedFile]:
        folder = label(vendor)
        if archive.verified != "zip":
            path = names.claim(f"{folder}/{safe_path(archive.name)}")
            counter = _Counter(path.lower().endswith(JSON_LINES))
            reader = self._reader(archive)
            try:
                _copy(out, path, archive.bytes, _date_time(built_at), _chunks(reader), counter)
            finally:
                self.ranged_reads += reader.requests
            if counter.size != archive.bytes or counter.sha.hexdigest() != archive.sha256:
                raise PackageSourceInvalid(
                    f"{archive.key}: the stored archive no longer matches the sha256 recorded when it was "
                    "collected; the package was not built"
                )
            return [counter.file(path, vendor)]
        packed: list[PackedFile] = []
        reader = self._reader(archive)
        try:
            with zipfile.ZipFile(reader) as source:
                for info in source.infolist():
                    if info.is_dir():
                        continue
                    path = names.claim(f"{folder}/{safe_path(info.filename)}")
                    counter = _Counter(path.lower().endswith(JSON_LINES))
                    try:
                        with source.open(info) as member:
                            _copy(out, path, info.file_size, info.date_time, _chunks(member), counter)
                    except (
                        zipfile.BadZipFile,
                        zipfile.LargeZipFile,
                        zlib.error,
                        OSError,
                        EOFError,
                        RuntimeError,
                    ) as exc:
                        raise PackageSourceInvalid(
                            f"{archive.key}: a member could not be read back ({type(exc).__name__}); the package "
                            "was not built"
                        ) from None
                    packed.append(counter.file(path, vendor))
        except zipfile.BadZipFile:
            raise PackageSourceInvalid(
                f"{archive.key}: the stored zip cannot be opened again; the package was not built"
            ) from None
        finally:
            self.ranged_reads += reader.requests
        return packed


def _reports(outcomes: list[ActionOutcome]) -> list[SystemReport]:
    erases = {o.vendor: o.status for o in outcomes if o.action == Action.ERASE}
    reports = [
        SystemReport(
            vendor=o.vendor,
            status=o.status,
            reason=o.reason,
            erase=erases.get(o.vendor),
            archives=list(o.archives) if o.status == "completed" else [],
        )
        for o in outcomes
        if o.action == Action.EXPORT
    ]
    return sorted(reports, key=lambda r: r.vendor)


def _chunks(source: Any) -> Iterator[bytes]:
    while chunk := source.read(COPY_CHUNK):
        yield chunk


def _copy(
    out: zipfile.ZipFile,
    path: str,
    size: int,
    date_time: tuple[int, int, int, int, int, int],
    chunks: Iterator[bytes],
    counter: _Counter,
) -> None:
    info = zipfile.ZipInfo(path, date_time=date_time)
    info.compress_type = _compression(path)
    info.file_size = size  # lets zipfile choose zip64 for a member over 2 GiB up front
    info.external_attr = 0o644 << 16
    with out.open(info, "w") as target:
        for chunk in chunks:
            counter.feed(chunk)
            target.write(chunk)


def _add_bytes(out: zipfile.ZipFile, path: str, data: bytes, built_at: datetime) -> PackedFile:
    counter = _Counter(False)
    _copy(out, path, len(data), _date_time(built_at), iter([data]), counter)
    return counter.file(path, None)


# --- the texts ---------------------------------------------------------------------------------------------


def load_controller_text(path: str | None) -> str:
    """The deployer's text about the controller (CONTROLLER_TEXT_FILE), else the bundled neutral template."""
    from core.errors import ConfigError

    source = Path(path) if path else CONTROLLER_TEMPLATE
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("dsrflow", "CONTROLLER_TEXT_FILE", f"cannot be read ({type(exc).__name__})") from None
    if not text.strip():
        raise ConfigError("dsrflow", "CONTROLLER_TEXT_FILE", "is empty")
    return text


def _render_controller(template: str, request: PackageInput, built_at: datetime) -> str:
    """The template with $request_id, $received_date and $answered_date filled in (anything else stays)."""
    return string.Template(template).safe_substitute(
        request_id=request.request_id,
        received_date=_day(request.received_at),
        answered_date=_day(built_at),
    )


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment.strftime('%B %Y')}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} bytes"  # pragma: no cover  # the loop returns at GB


_STATUS_WORDS = {
    "failed": "We could not retrieve your data from this system.",
    "skipped": "This system was not searched.",
    "denied": "Our privacy team decided not to retrieve data from this system for this request.",
    "cancelled": "The request was cancelled before this system answered.",
}
_ERASE_WORDS = {
    "completed": "Your data in this system was erased.",
    "planned": "This answer is a rehearsal (a dry run): nothing was erased.",
    "failed": "Erasing your data in this system did not succeed yet; our privacy team follows it up.",
    "denied": "Our privacy team decided not to erase your data in this system for this request.",
    "skipped": "Erasing was not possible in this system with the details we have about you.",
    "cancelled": "The request was cancelled before this system erased your data.",
}
_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:52rem;margin:2rem auto;"
    "padding:0 1rem;line-height:1.5;color:#1a1a1a}h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid "
    "#ddd;vertical-align:top}td.n{text-align:right;white-space:nowrap}.note{color:#555;font-size:.9rem}"
    "section{border-top:2px solid #eee;margin-top:1.5rem}"
)


def render_index(request: PackageInput, reports: list[SystemReport], controller: str, built_at: datetime) -> str:
    """index.html: what was searched and what each system returned, in plain language. Every value is escaped;
    the page has no script, no link outside the package and no external asset."""
    e = html.escape
    returned = [r for r in reports if r.status == "completed" and r.files]
    empty = [r for r in reports if r.status == "completed" and not r.files]
    missing = [r for r in reports if r.status != "completed"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>Your personal data, request {e(request.request_id)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Your personal data</h1>",
        f"<p>You asked on {e(_day(request.received_at))} for a copy of the personal data we hold about you. "
        f"This package is our answer, put together on {e(_day(built_at))}. Your reference is "
        f"<strong>{e(request.request_id)}</strong>.</p>",
        *(
            ["<p><strong>This is a rehearsal (a dry run) of our process, not yet our answer.</strong></p>"]
            if request.dry_run
            else []
        ),
        "<p>We searched the systems below. Each system's data is in a folder named after it, in the format "
        "the system gave it to us. The files ending in .json or .jsonl are text you can open with any text "
        "editor; a .jsonl file holds one record per line.</p>",
        "<h2>Systems we searched</h2><ul>",
    ]
    for r in reports:
        if r.status == "completed" and r.files:
            size = _size(sum(f.bytes for f in r.files))
            words = f"returned {len(r.files)} file{'s' if len(r.files) != 1 else ''} ({size})"
        elif r.status == "completed":
            words = "holds no data about you"
        else:
            words = "could not be searched (see below)"
        out.append(f"<li><strong>{e(label(r.vendor))}</strong>: {e(words)}</li>")
    out.append("</ul>")
    for r in returned:
        out += [
            f"<section><h2>{e(label(r.vendor))}</h2>",
            f"<p>In the folder <code>{e(label(r.vendor))}/</code>.</p>",
            "<table><thead><tr><th>File</th><th>Size</th><th>Records</th></tr></thead><tbody>",
        ]
        for f in r.files[:INDEX_LISTED]:
            records = "" if f.records is None else str(f.records)
            out.append(
                f'<tr><td>{e(f.path)}</td><td class="n">{e(_size(f.bytes))}</td><td class="n">{e(records)}</td></tr>'
            )
        out.append("</tbody></table>")
        if len(r.files) > INDEX_LISTED:
            out.append(
                f'<p class="note">And {len(r.files) - INDEX_LISTED} more files, all listed in manifest.json.</p>'
            )
        out.append("</section>")
    if empty:
        out.append("<h2>Systems that hold nothing about you</h2><ul>")
        out += [f"<li>{e(label(r.vendor))}: we asked, and it holds no data about you.</li>" for r in empty]
        out.append("</ul>")
    if missing:
        out.append("<h2>Systems we could not search</h2><ul>")
        for r in missing:
            words = _STATUS_WORDS.get(r.status, "This system did not answer.")
            # A denial's recorded reason names the person who decided: not for this page.
            detail = f" Recorded reason: {r.reason}" if r.reason and r.status in ("failed", "skipped") else ""
            out.append(f"<li><strong>{e(label(r.vendor))}</strong>: {e(words + detail)}</li>")
        out.append("</ul><p>Our privacy team has been told and will follow up.</p>")
    erased = [r for r in reports if r.erase is not None]
    if erased:
        out.append(
            "<h2>Erasure</h2><p>You also asked us to erase your data. The files in this package are the copy each "
            "system gave us before it erased them.</p><ul>"
        )
        for r in erased:
            words = _ERASE_WORDS.get(r.erase or "", "Erasing is still in progress.")
            out.append(f"<li><strong>{e(label(r.vendor))}</strong>: {e(words)}</li>")
        out.append("</ul>")
    paragraphs = [p.strip() for p in controller.split("\n\n") if p.strip()]
    out.append("<section><h2>About this answer</h2>")
    out += ["<p>" + "<br>".join(e(line) for line in p.splitlines()) + "</p>" for p in paragraphs]
    out.append(f'<p class="note">The same text is in {CONTROLLER_FILE}.</p></section>')
    out += [
        "<h2>Checking the files</h2>",
        f'<p class="note">{MANIFEST_FILE} lists every file in this package with its size and its SHA-256 '
        "checksum, so you, or anyone you pass the files to, can check that nothing was changed.</p>",
        "</body></html>",
    ]
    return "\n".join(out) + "\n"
