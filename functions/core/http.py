"""The one HTTP client every connector uses.

- a timeout on every call (connect, read);
- retries with exponential backoff on 429/502/503/504 and on connection errors, honouring `Retry-After`
  (seconds or an HTTP date), capped so one Lambda invocation never sleeps past its budget;
- any other 4xx fails at once with the vendor's own message; 401/403 as `VendorAuthError`;
- once retries are spent, or when waiting longer would eat the Lambda's time: `VendorTransientError`, which
  the workflow retries later in ASL;
- a redirect to another host never carries a credential header (requests only strips `Authorization`).

Messages quote the vendor's words and the path, never the query string (it can hold a customer key) nor a
header (credentials). Values a connector names in `hide` (a customer key, an email, a token) are masked in
every message and log line, including where a vendor echoes them back in an error body.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import requests
import urllib3

from core.errors import ArchiveTransferError, DsrError, VendorAuthError, VendorError, VendorTransientError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Headers that carry a vendor credential (Elevate Api-Key, Qualifio x-api-token, basic auth).
CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-token"})
ERROR_BODY_LIMIT = 64 * 1024  # read at most this much of an error answer (a streamed one could be huge)


@dataclass
class RetryPolicy:
    attempts: int = 4  # total tries per call
    backoff_base: float = 0.5  # seconds; doubled per retry, with jitter
    backoff_max: float = 20.0
    retry_after_max: float = 60.0  # never sleep longer than this inside one call
    # Total sleeping per call. Past it the call fails as transient and the workflow retries it later in ASL,
    # rather than sleeping through the Lambda's timeout (which would be recorded as a failure, not retried).
    budget: float = 90.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, retry_number: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        base = min(self.backoff_base * (2 ** (retry_number - 1)), self.backoff_max)
        return base * (0.5 + random.random() / 2)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def _error_body(response: requests.Response) -> bytes:
    """At most ERROR_BODY_LIMIT bytes of an error answer, whether or not it was requested as a stream."""
    try:
        return next(response.iter_content(ERROR_BODY_LIMIT), b"")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        return b""


def vendor_message(response: requests.Response, limit: int = 300) -> str:
    """The vendor's own explanation, from common JSON shapes or the text body, shortened."""
    text = ""
    raw = _error_body(response)
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error", "errors", "detail", "error_description"):
            if body.get(key):
                value = body[key]
                text = value if isinstance(value, str) else json.dumps(value)
                break
        else:
            text = json.dumps(body)
    elif body is not None:
        text = json.dumps(body)
    else:
        text = raw.decode(response.encoding or "utf-8", errors="replace").strip()
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "") if text else response.reason or "no message"


class _CredentialSafeSession(requests.Session):
    """requests drops `Authorization` when a redirect leaves the host; this drops our API-key headers too."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in [h for h in prepared_request.headers if h.lower() in CREDENTIAL_HEADERS]:
                del prepared_request.headers[name]


class VendorHttp:
    """A requests session bound to one vendor, with the policy above."""

    def __init__(
        self,
        vendor: str,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ):
        self.vendor = vendor
        # Secret text (e.g. Bloomreach's project token in paths) -> what to show instead in errors and logs.
        self.redact: dict[str, str] = {}
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session or _CredentialSafeSession()
        # Set by the task layer for a dry-run request: a call marked destructive is refused before sending.
        self.dry_run = False

    def request(
        self,
        method: str,
        url: str,
        *,
        call: str | None = None,
        stream: bool = False,
        creates_job: bool = False,
        destructive: bool = False,
        hide: tuple[str | None, ...] = (),
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries. Returns only a 2xx response; raises a named error otherwise.

        `call` names the call in messages ("job-status", "export-one"): a fixed word, never the URL.
        `creates_job`: the call creates a vendor job, so it is not retried after a failure the vendor may
        have acted on. `destructive`: refused with DryRunViolation while `self.dry_run` is set.
        With stream=True the caller must read or close the body. Retries happen only before a body is
        handed over: a stream that breaks later is the caller's to handle (ArchiveTransferError).
        `hide`: values of this call (customer key, email, ids) to mask should the vendor echo them.
        """
        if destructive and self.dry_run:
            from core.errors import DryRunViolation

            raise DryRunViolation(f"{self.vendor}: {call or method} is destructive and this request is a dry run")
        try:
            return self._request(method, url, stream, kwargs)
        except DsrError as exc:
            masked = self.mask(exc.message, hide)
            if masked != exc.message:
                exc.message, exc.args = masked, (masked,)
            raise

    def mask(self, text: str, hide: tuple[str | None, ...] = ()) -> str:
        for secret, shown in self.redact.items():
            text = text.replace(secret, shown)
        for value in hide:
            if value:
                text = text.replace(value, "***")
        return text

    def _request(self, method: str, url: str, stream: bool, kwargs: dict[str, Any]) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        what = f"{method} {self._path(url)}"
        slept = 0.0
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = self.session.request(method, url, stream=stream, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
                slept = self._pause_or_give_up(what, f"{what} {reason}", attempt, None, slept)
                continue
            if response.status_code < 400:
                return response
            status = response.status_code
            if status in RETRY_STATUSES:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                message = vendor_message(response)
                response.close()
                failure = f"{what} answered HTTP {status} ({message})"
                slept = self._pause_or_give_up(what, failure, attempt, retry_after, slept)
                continue
            message = vendor_message(response)
            response.close()
            if status in (401, 403):
                raise VendorAuthError(
                    self.vendor,
                    f"{what} was refused with HTTP {status} ({message}); check the vendor credentials",
                    status,
                )
            if status >= 500:
                raise VendorTransientError(self.vendor, f"{what} answered HTTP {status} ({message})")
            raise VendorError(self.vendor, f"{what} answered HTTP {status} ({message})", status)
        raise AssertionError("unreachable")  # pragma: no cover

    def download(
        self, url: str, *, call: str, base_url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """GET a download link a vendor handed out (streamed). Credentials in `headers` go only to the
        vendor's own origin (`base_url`)."""
        from urllib.parse import urlsplit

        a, b = urlsplit(url), urlsplit(base_url)
        same = (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
        return self.request("GET", url, call=call, stream=True, headers=(headers if same else {}), **kwargs)

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise VendorError(
                self.vendor,
                f"{method} {self._path(url)} answered HTTP {response.status_code} with a body that is not JSON",
                response.status_code,
            ) from None

    def _path(self, url: str) -> str:
        return self.mask(requests.utils.urlparse(url).path)

    def _pause_or_give_up(
        self, what: str, failure: str, attempt: int, retry_after: float | None, slept: float
    ) -> float:
        """Sleep before the next try and return the total slept; raise once tries or the budget are spent."""
        delay = self.retry.delay(attempt, retry_after)
        if attempt == self.retry.attempts:
            raise VendorTransientError(self.vendor, f"{failure} after {attempt} tries")
        if slept + delay > self.retry.budget:
            raise VendorTransientError(
                self.vendor,
                f"{failure}; waiting {delay:.0f}s more would outlast this call, the workflow retries later",
            )
        log.warning(
            "vendor call will be retried",
            extra={"vendor": self.vendor, "call": what, "reason": failure, "attempt": attempt, "delay_s": delay},
        )
        self.retry.sleep(delay)
        return slept + delay


def content_length(response: requests.Response) -> int | None:
    """The announced body length, when it counts the bytes iter_content yields (not a compressed size)."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    try:
        value = int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None
    return value if value >= 0 else None


def checked_chunks(
    response: requests.Response, what: str, length: int | None, chunk_size: int = 64 * 1024, retry_hint: str = ""
) -> Iterator[bytes]:
    """A download's body, verified against `length` (see `checked`)."""
    return checked(response.iter_content(chunk_size), what, length, retry_hint)


def checked(pieces: Iterable[bytes], what: str, length: int | None, retry_hint: str = "") -> Iterator[bytes]:
    """Body pieces, verified against `length`; a broken or wrong-sized stream is ArchiveTransferError.

    `what` names the download for a DPO ("elevate: download of export job ca24…"); `retry_hint` says whether
    trying again can help (it depends on the vendor).
    """
    received = 0
    hint = f". {retry_hint}" if retry_hint else ""
    try:
        for chunk in pieces:
            if not chunk:
                continue
            received += len(chunk)
            if length is not None and received > length:
                raise ArchiveTransferError(f"{what} sent more than the announced {length} bytes; nothing was stored")
            yield chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ArchiveTransferError(
            f"{what} broke off after {received} bytes ({type(exc).__name__}); nothing was stored{hint}"
        ) from None
    if length is not None and received != length:
        raise ArchiveTransferError(
            f"{what} ended after {received} of the announced {length} bytes; nothing was stored"
        )
