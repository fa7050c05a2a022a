"""The one HTTP client every connector uses.

- a timeout on every call (connect, read);
- retries with exponential backoff on 429/502/503/504 and on connection errors, honouring `Retry-After`
  (seconds or an HTTP date), capped so one Lambda invocation never sleeps past its budget;
- any other 4xx fails at once with the vendor's own message; 401/403 as `VendorAuthError`;
- once retries are spent: `VendorTransientError`, which the workflow retries later in ASL.

Messages quote the vendor's words and the path, never the query string (it can hold a customer key) nor a
header (credentials).
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import requests
import urllib3

from core.errors import ArchiveTransferError, VendorAuthError, VendorError, VendorTransientError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class RetryPolicy:
    attempts: int = 4  # total tries per call
    backoff_base: float = 0.5  # seconds; doubled per retry, with jitter
    backoff_max: float = 20.0
    retry_after_max: float = 60.0  # never sleep longer than this inside one call
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
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def vendor_message(response: requests.Response, limit: int = 300) -> str:
    """The vendor's own explanation, from common JSON shapes or the text body, shortened."""
    text = ""
    try:
        body = response.json()
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
        text = (response.text or "").strip()
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "") if text else response.reason or "no message"


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
        # Path fragments that are secrets (e.g. Bloomreach's project token) -> what to show in errors and logs.
        self.redact: dict[str, str] = {}
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()

    def request(self, method: str, url: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
        """Send with retries. Returns only a 2xx/3xx response; raises a named error otherwise.

        With stream=True the caller must read or close the body. Retries happen only before a body is
        handed over: a stream that breaks later is the caller's to handle (ArchiveTransferError).
        """
        kwargs.setdefault("timeout", self.timeout)
        what = f"{method} {self._path(url)}"
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = self.session.request(method, url, stream=stream, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
                if attempt == self.retry.attempts:
                    raise VendorTransientError(self.vendor, f"{what} {reason} after {attempt} tries") from None
                self._pause(what, reason, attempt, None)
                continue
            if response.status_code < 400:
                return response
            status = response.status_code
            if status in RETRY_STATUSES:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                message = vendor_message(response)
                response.close()
                if attempt == self.retry.attempts:
                    raise VendorTransientError(
                        self.vendor, f"{what} answered HTTP {status} ({message}) after {attempt} tries"
                    )
                self._pause(what, f"HTTP {status}", attempt, retry_after)
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
        path = requests.utils.urlparse(url).path
        for secret, shown in self.redact.items():
            path = path.replace(secret, shown)
        return path

    def _pause(self, what: str, reason: str, attempt: int, retry_after: float | None) -> None:
        delay = self.retry.delay(attempt, retry_after)
        log.warning(
            "vendor call will be retried",
            extra={"vendor": self.vendor, "call": what, "reason": reason, "attempt": attempt, "delay_s": delay},
        )
        self.retry.sleep(delay)


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
    """A download's body, verified against `length`; a broken or wrong-sized stream is ArchiveTransferError.

    `what` names the download for a DPO ("elevate: download of export job ca24…"); `retry_hint` says whether
    trying again can help (it depends on the vendor).
    """
    received = 0
    hint = f". {retry_hint}" if retry_hint else ""
    try:
        for chunk in response.iter_content(chunk_size):
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
