"""Verify that a downloaded archive is what the vendor documents it to be, in bounded memory.

An export counts as stored only once its content is verified: a vendor can answer HTTP 200 with a login
page, or announce a Content-Length shorter than its body (the HTTP client stops reading there, so length
checks alone pass a truncated file). The verifier sees every chunk as `store_archive` uploads it:

    verifier = verifier_for(archive.kind, key, length=archive.length)   # may refuse at once: ArchiveTooLarge
    verifier.feed(chunk) ...                                             # every chunk, in order
    result = verifier.finish()                                           # ArchiveInvalid, or a VerifyResult
    verifier.close()                                                     # always (idempotent)

Kinds (`core.domain.Archive.kind`):
- "zip": the stream is spooled to an anonymous temporary file (ARCHIVE_SPOOL_DIR, default the system temp
  dir, i.e. Lambda's /tmp) because a zip can only be read from its end (the central directory). At the
  end: the first bytes are a zip signature; the end-of-central-directory record is found and its member
  count and directory size are within MAX_MEMBERS / MAX_CENTRAL_DIRECTORY_BYTES (zipfile reads the whole
  directory into memory); no member is encrypted or uses an unknown compression method; the declared
  uncompressed total is within MAX_UNCOMPRESSED_BYTES (zip bomb guard); every member is read in
  READ_CHUNK pieces with its CRC-32 and size checked. The spool is limited to ARCHIVE_SPOOL_LIMIT_MB MiB
  (default DEFAULT_SPOOL_LIMIT_MB) and deleted on close; on Linux it is never linked into the directory
  (O_TMPFILE), so even a killed process leaves no file behind.
- "json": one complete JSON document whose top level is an object with `success: true`, checked while
  streaming by `TopLevelParser` (only the top level is kept; strings and brackets are tracked throughout,
  so truncation, trailing data and mismatched brackets are caught; the token syntax inside a nested value
  larger than `keep_nested` is not parsed).
- "bytes": no documented format; nothing beyond the length checks `store_archive` does.

Messages follow core/errors.py: the S3 key, byte counts, a member's 1-based *index* (never its name: names
come from the vendor and may hold personal data), exception type names, and the rule that failed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

from core.errors import ArchiveInvalid, ArchiveTooLarge, ConfigError

Kind = Literal["zip", "json", "bytes"]
KINDS: tuple[Kind, ...] = ("zip", "json", "bytes")

MIB = 1024 * 1024
GIB = 1024 * MIB

SPOOL_DIR_ENV = "ARCHIVE_SPOOL_DIR"
SPOOL_LIMIT_ENV = "ARCHIVE_SPOOL_LIMIT_MB"
# 3 GiB: the collect function needs ephemeral storage above this (Lambda allows up to 10 GiB).
DEFAULT_SPOOL_LIMIT_MB = 3072
# Zip bomb guard: the most uncompressed bytes one archive may declare (and so make us read). A real export
# of one person's data is far below; reading this much takes a minute or two at inflate speed.
MAX_UNCOMPRESSED_BYTES = 20 * GIB
# zipfile holds the whole central directory and a ZipInfo per member in memory: bound both.
MAX_MEMBERS = 100_000
MAX_CENTRAL_DIRECTORY_BYTES = 16 * MIB  # a ZipInfo costs a few hundred bytes: at most ~350k of them
READ_CHUNK = 1 * MIB  # member bytes read per call while checking CRCs
HEAD_BYTES = 1024  # enough of the start to tell a zip from an HTML page or a JSON answer
SUPPORTED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)

ZIP_LOCAL_HEADER = b"PK\x03\x04"
ZIP_END_RECORD = b"PK\x05\x06"  # an empty zip is only this record
_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, cd disk, entries here, entries total, cd size, cd offset, comment
_EOCD64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 end record, disks
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # ..., entries here, entries total, cd size, cd offset

JSON_CHUNK = 64 * 1024
JSON_MAX_DEPTH = 1000  # about where Python's own json module would give up; keeps the bracket stack small


@dataclass(frozen=True)
class VerifyResult:
    kind: Kind
    members: int | None = None  # zip: member count
    uncompressed: int | None = None  # zip: total uncompressed bytes read and checked


class Verifier:
    """Accepts every chunk of one download; `finish` judges it. Base class: the "bytes" kind (no rule)."""

    kind: Kind = "bytes"

    def __init__(self, key: str):
        self.key = key
        self.size = 0
        self.head = bytearray()  # the first HEAD_BYTES, to say what a wrong download is instead

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]

    def finish(self) -> VerifyResult:
        return VerifyResult(self.kind)

    def close(self) -> None:
        pass

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _invalid(self, rule: str) -> ArchiveInvalid:
        return ArchiveInvalid(f"{self.key}: {rule}")

    def _looks_like(self) -> str | None:
        """'an HTML page' / 'a JSON document' when the head says so (a login or error page), else None."""
        head = bytes(self.head).removeprefix(b"\xef\xbb\xbf").lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
            head.startswith(b"<") and b"<html" in head
        ):
            return "an HTML page"
        if head.startswith((b"{", b"[")):
            return "a JSON document"
        return None


def verifier_for(kind: str, key: str, *, length: int | None = None) -> Verifier:
    """The verifier for an archive of `kind` stored at `key`. `length` is the announced size, if any: a zip
    announced bigger than the spool allows is refused here (ArchiveTooLarge), before anything is read."""
    if kind == "zip":
        return ZipVerifier(key, length=length)
    if kind == "json":
        return JsonVerifier(key)
    if kind == "bytes":
        return Verifier(key)
    raise ValueError(f"unknown archive kind {kind!r}; expected one of {KINDS}")


# --- zip ------------------------------------------------------------------------------------------------------


def spool_dir() -> str:
    return os.environ.get(SPOOL_DIR_ENV) or tempfile.gettempdir()


def spool_limit() -> int:
    """Bytes a zip may spool (ARCHIVE_SPOOL_LIMIT_MB, in MiB)."""
    raw = os.environ.get(SPOOL_LIMIT_ENV)
    if raw in (None, ""):
        return DEFAULT_SPOOL_LIMIT_MB * MIB
    try:
        mib = int(raw)
    except ValueError:
        mib = 0
    if mib <= 0:
        raise ConfigError("dsrflow", SPOOL_LIMIT_ENV, "must be a positive whole number of MiB")
    return mib * MIB


_RAISE_STORAGE = "raise the collect function's ephemeral storage and ARCHIVE_SPOOL_LIMIT_MB"


class ZipVerifier(Verifier):
    kind: Kind = "zip"

    def __init__(self, key: str, *, length: int | None = None):
        super().__init__(key)
        self.limit = spool_limit()
        directory = spool_dir()
        if length is not None and length > self.limit:
            raise ArchiveTooLarge(
                f"{key}: the vendor announced {length} bytes, more than the {self.limit // MIB} MiB this "
                f"function may spool to verify a zip; {_RAISE_STORAGE}"
            )
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            raise ConfigError("dsrflow", SPOOL_DIR_ENV, "is not a usable directory") from None
        if length is not None and length > free:
            raise ArchiveTooLarge(
                f"{key}: the vendor announced {length} bytes but the spool directory has {free} bytes free "
                f"to verify the zip; {_RAISE_STORAGE}"
            )
        try:
            self._file: IO[bytes] | None = tempfile.TemporaryFile(prefix="dsrflow-spool-", dir=directory)  # noqa: SIM115 (closed by close())
        except OSError:
            raise ConfigError("dsrflow", SPOOL_DIR_ENV, "is not a usable directory") from None

    def feed(self, chunk: bytes) -> None:
        super().feed(chunk)
        if self.size > self.limit:
            self.close()  # give the space back at once, not when the caller gets round to it
            raise ArchiveTooLarge(
                f"{self.key}: the archive exceeds the {self.limit // MIB} MiB this function may spool to "
                f"verify a zip; {_RAISE_STORAGE}"
            )
        assert self._file is not None, "feed after close"
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise self._spool_failed(exc, self.size - len(chunk)) from None

    def _spool_failed(self, exc: OSError, spooled: int) -> BaseException:
        """A full /tmp is a size problem with a remedy (ArchiveTooLarge); any other OSError stays itself."""
        self.close()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return ArchiveTooLarge(
                f"{self.key}: the temporary storage ran out after {spooled} bytes while spooling the zip to "
                f"verify it; {_RAISE_STORAGE}"
            )
        return exc

    def finish(self) -> VerifyResult:
        try:
            return self._check()
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def _check(self) -> VerifyResult:
        assert self._file is not None, "finish after close"
        f = self._file
        try:
            f.flush()  # the buffered tail can still find the disk full
        except OSError as exc:
            raise self._spool_failed(exc, self.size) from None
        what = f"the download ({self.size} bytes)"
        if self.size == 0:
            raise self._invalid(f"{what} is empty, not a zip")
        if bytes(self.head[:4]) not in (ZIP_LOCAL_HEADER, ZIP_END_RECORD):
            looks = self._looks_like()
            raise self._invalid(f"{what} is {looks}, not a zip" if looks else f"{what} does not start like a zip")
        what = f"the zip ({self.size} bytes)"
        entries, directory = _end_record(f, self.size)
        if entries is None:
            raise self._invalid(f"{what} has no end-of-central-directory record: it is truncated or damaged")
        if entries > MAX_MEMBERS or directory > MAX_CENTRAL_DIRECTORY_BYTES:
            raise self._invalid(
                f"{what} lists {entries} members in a {directory}-byte directory, more than the {MAX_MEMBERS} "
                f"members / {MAX_CENTRAL_DIRECTORY_BYTES} bytes this function verifies"
            )
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except Exception as exc:  # BadZipFile, and struct/EOF/OSError from a damaged directory
            raise self._invalid(f"{what} does not open as a zip ({type(exc).__name__})") from None
        with zf:
            return self._members(zf, what)

    def _members(self, zf: zipfile.ZipFile, what: str) -> VerifyResult:
        infos = zf.infolist()
        n = len(infos)
        if n > MAX_MEMBERS:  # the end record undercounted: zipfile parsed the whole (bounded) directory anyway
            raise self._invalid(f"{what} holds {n} members, more than the {MAX_MEMBERS} this function verifies")
        declared = 0
        for i, info in enumerate(infos, 1):
            if info.flag_bits & 0x1:
                raise self._invalid(f"member {i} of {n} is encrypted; an export must open without a password")
            if info.compress_type not in SUPPORTED_COMPRESSION:
                raise self._invalid(
                    f"member {i} of {n} uses compression method {info.compress_type}, which this function cannot verify"
                )
            declared += info.file_size
        if declared > MAX_UNCOMPRESSED_BYTES:
            raise self._invalid(
                f"{what} declares {declared} uncompressed bytes, more than the {MAX_UNCOMPRESSED_BYTES} "
                "allowed (zip bomb guard)"
            )
        total = 0
        for i, info in enumerate(infos, 1):
            member = 0
            try:
                with zf.open(info) as stream:
                    # zipfile checks the CRC-32 when the member's last byte is read, and never returns more
                    # than the declared size: reading to the end is the check.
                    while piece := stream.read(READ_CHUNK):
                        member += len(piece)
            except zipfile.BadZipFile as exc:
                # zipfile's own text quotes the member's name: only pick our fixed wording from it.
                if str(exc).startswith("Bad CRC-32"):
                    raise self._invalid(f"member {i} of {n} fails its CRC-32 check: the zip is damaged") from None
                raise self._invalid(f"member {i} of {n} cannot be read (BadZipFile): the zip is damaged") from None
            except Exception as exc:  # zlib.error, EOFError, lzma/bz2 errors, OSError
                raise self._invalid(
                    f"member {i} of {n} cannot be read ({type(exc).__name__}): the zip is damaged"
                ) from None
            if member != info.file_size:
                raise self._invalid(
                    f"member {i} of {n} holds {member} bytes, not the {info.file_size} its directory entry says"
                )
            total += member
        return VerifyResult("zip", members=n, uncompressed=total)


def _end_record(f: IO[bytes], size: int) -> tuple[int | None, int]:
    """(member count, central directory size) from the end-of-central-directory record (zip64 aware);
    (None, 0) when there is none. Read before zipfile, which would load the whole directory into memory."""
    tail_len = min(size, _EOCD.size + 0xFFFF)  # the record, plus the longest comment
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = len(tail) - _EOCD.size
    if pos < 0:
        return None, 0
    if tail[pos : pos + 4] != ZIP_END_RECORD:  # not at the very end: there is a comment
        pos = tail.rfind(ZIP_END_RECORD)
        if pos < 0 or len(tail) - pos < _EOCD.size:
            return None, 0
    _, _, _, _, entries, directory, offset, _ = _EOCD.unpack_from(tail, pos)
    if entries != 0xFFFF and directory != 0xFFFFFFFF and offset != 0xFFFFFFFF:
        return entries, directory
    # A field at its maximum defers to the zip64 end record, found through the locator just before.
    locator_at = size - tail_len + pos - _EOCD64_LOCATOR.size
    if locator_at < 0:
        return entries, directory
    f.seek(locator_at)
    locator = f.read(_EOCD64_LOCATOR.size)
    signature, _, record_at, _ = _EOCD64_LOCATOR.unpack(locator)
    if signature != b"PK\x06\x07":
        return entries, directory  # no zip64 records: the maximum is the real value (as zipfile reads it)
    if record_at + _EOCD64.size > locator_at:
        return None, 0
    f.seek(record_at)
    record = f.read(_EOCD64.size)
    fields = _EOCD64.unpack(record)
    if fields[0] != b"PK\x06\x06":
        return None, 0
    return fields[7], fields[8]


# --- json -----------------------------------------------------------------------------------------------------

_STRUCTURAL = re.compile(rb'["{}\[\]]')
_STRING_STOP = re.compile(rb'["\\]')
_CLOSES = {ord("}"): ord("{"), ord("]"): ord("[")}


class Malformed(ValueError):
    """A JSON document's structure is broken; the text is fixed wording, safe to quote."""


class TopLevelParser:
    """Parse a JSON document fed in chunks, keeping only its top level: memory stays bounded.

    Containers nested inside the top-level value are kept when they take at most `keep_nested` bytes
    (an `errors` list) and replaced by null otherwise (a customer's `events`). `finish()` returns the top
    level; it and `feed()` raise ValueError when the document is not JSON (Malformed, with fixed wording,
    for broken structure: truncated, unbalanced or mismatched brackets, too deep, top level too large).
    """

    def __init__(self, *, keep_nested: int = 16 * 1024, max_top_level: int = 1024 * 1024):
        self.keep_nested = keep_nested
        self.max_top_level = max_top_level
        self.top = bytearray()
        self.nested: bytearray | None = None  # the depth-2 container being copied; None once it is too big
        self.stack = bytearray()  # the open brackets, to match each close with its kind
        self.in_string = False
        self.escaped = False

    def _emit(self, piece: bytes) -> None:
        if len(self.stack) >= 2:
            if self.nested is not None:
                self.nested.extend(piece)
                if len(self.nested) > self.keep_nested:
                    self.nested = None
        else:
            self.top.extend(piece)
            if len(self.top) > self.max_top_level:
                raise Malformed("the top level of the document is too large")

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self.escaped:
                self._emit(data[pos : pos + 1])
                pos += 1
                self.escaped = False
                continue
            if self.in_string:
                m = _STRING_STOP.search(data, pos)
                if m is None:
                    self._emit(data[pos:])
                    return
                self._emit(data[pos : m.end()])
                pos = m.end()
                self.escaped, self.in_string = (True, True) if m.group() == b"\\" else (False, False)
                continue
            m = _STRUCTURAL.search(data, pos)
            if m is None:
                self._emit(data[pos:])
                return
            self._emit(data[pos : m.start()])
            pos = m.end()
            token = m.group()
            if token == b'"':
                self._emit(token)
                self.in_string = True
            elif token in (b"{", b"["):
                if len(self.stack) >= JSON_MAX_DEPTH:
                    raise Malformed(f"the document nests deeper than {JSON_MAX_DEPTH} levels")
                if len(self.stack) == 1:
                    self.nested = bytearray()
                self.stack.append(token[0])
                self._emit(token)
            else:
                if not self.stack:
                    raise Malformed("unbalanced brackets")
                if self.stack[-1] != _CLOSES[token[0]]:
                    raise Malformed("mismatched brackets")
                self._emit(token)
                self.stack.pop()
                if len(self.stack) == 1:
                    self.top.extend(self.nested if self.nested is not None else b"null")
                    self.nested = None

    def finish(self) -> Any:
        if self.in_string or self.stack:
            raise Malformed("the document is truncated")
        return json.loads(bytes(self.top))


def top_level_summary(
    read: Callable[[int], bytes],
    *,
    chunk: int = JSON_CHUNK,
    keep_nested: int = 16 * 1024,
    max_top_level: int = 1024 * 1024,
) -> Any:
    """Parse a JSON document read in chunks, keeping only its top level (see TopLevelParser). Raises
    ValueError when the document is not JSON, is truncated, or its top level alone exceeds `max_top_level`."""
    parser = TopLevelParser(keep_nested=keep_nested, max_top_level=max_top_level)
    while data := read(chunk):
        parser.feed(data)
    return parser.finish()


class JsonVerifier(Verifier):
    kind: Kind = "json"

    def __init__(self, key: str):
        super().__init__(key)
        self.parser = TopLevelParser()
        self.broken: str | None = None  # the first structural failure; the rest of the stream is not parsed

    def feed(self, chunk: bytes) -> None:
        super().feed(chunk)
        if self.broken is None:
            try:
                self.parser.feed(chunk)
            except Malformed as exc:
                self.broken = str(exc)
                self.parser = None  # type: ignore[assignment]  # drop what it held

    def finish(self) -> VerifyResult:
        what = f"the download ({self.size} bytes)"
        if self.size == 0:
            raise self._invalid(f"{what} is empty, not a JSON document")
        if self.broken is None:
            try:
                top = self.parser.finish()
            except Malformed as exc:
                self.broken = str(exc)
            except ValueError:  # JSONDecodeError, UnicodeDecodeError: their text may quote the document
                looks = self._looks_like()
                raise self._invalid(
                    f"{what} is an HTML page, not a JSON document"
                    if looks == "an HTML page"
                    else f"{what} is not a JSON document"
                ) from None
        if self.broken == "the document is truncated":
            raise self._invalid(f"{what} is truncated: the JSON document does not end")
        if self.broken is not None:
            raise self._invalid(f"{what} fails the JSON check: {self.broken}")
        if not isinstance(top, dict):
            raise self._invalid(f"{what} is JSON but its top level is not an object")
        if top.get("success") is not True:
            said = "success: false" if top.get("success") is False else "no success: true"
            raise self._invalid(f"{what} is a JSON document with {said}")
        return VerifyResult("json")


__all__ = [
    "DEFAULT_SPOOL_LIMIT_MB",
    "KINDS",
    "MAX_MEMBERS",
    "MAX_UNCOMPRESSED_BYTES",
    "Kind",
    "Malformed",
    "TopLevelParser",
    "VerifyResult",
    "Verifier",
    "JsonVerifier",
    "ZipVerifier",
    "spool_dir",
    "spool_limit",
    "top_level_summary",
    "verifier_for",
]
