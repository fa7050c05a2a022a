"""The one HTTP client every connector uses, built to stay safe against a hostile or broken vendor.

Policy (`VendorHttp`):
- Messages are allow-listed (see core.errors): the call's name (`call`, else "<METHOD> call"), the HTTP
  status and fixed wording; never the vendor's words, a URL path or query, or a header. What the vendor
  said goes into the error's `detail` only, with the values a connector names in `hide` (in the forms a
  vendor echoes them: any case, URL-encoded, JSON-escaped) and the `redact` fragments masked. Retry log
  lines carry the call, status, attempt and delay only.
- No redirect is ever followed for an API call: any 3xx is a VendorError (the Location goes to `detail`).
  `download()` follows at most 3 redirects itself, checking every hop with `check_download_url` (https
  only, unless the vendor's base_url is itself http; no private, loopback or link-local target when the
  vendor is public, checked again against the address actually connected to) and sending credentials only
  while every hop so far stayed on the vendor's own origin.
- Retries with exponential backoff on 429/502/503/504 and on connection errors, honouring `Retry-After`
  (seconds or an HTTP date), capped by `RetryPolicy.budget`. 401/403 is VendorAuthError, other 4xx
  VendorError, both at once. Once retries are spent: VendorTransientError, which the workflow retries later.
- `creates_job=True` (the call creates a vendor job): retried in-call only when the vendor cannot have
  acted (no connection was made, 429, 503). Once the request may have reached the vendor (read timeout,
  connection dropped after sending, 502, 504, other 5xx, a 2xx whose body broke off) it fails at once as
  VendorTransientError with `ambiguous = True`; every other VendorTransientError here has `ambiguous = False`.
- Every try has a deadline for the whole exchange, not only per socket read: connect, TLS, headers and
  (for json() and stream=False) the body must finish within `call_budget` (60 s). A streamed body
  (stream=True, downloads) is watched until it is read to the end or closed, within `stream_budget`
  (default: the invocation's remaining time; no limit outside one). A watchdog timer shuts the socket
  down at the deadline, so a vendor dripping bytes is cut off: VendorTransientError (not retried in-call)
  before the body is handed over, ArchiveTransferError from `checked`/`checked_chunks` after.
- The Lambda's clock: `invocation_deadline(remaining)` (the handler wrapper) sets a deadline with a margin
  (10 s or 10 %, whichever is more). No try, no retry sleep and no socket wait reaches past it; when too
  little time is left a VendorTransientError hands over to the workflow's ASL retry before Lambda would
  kill the function (a timeout is recorded as a failure, not retried).
- json() reads at most `json_limit` (1 MiB) of body, streamed (compressed bodies too), so memory stays
  bounded; request(stream=False) is read whole by requests, so it is for answers known to be small.

Limits: DNS resolution (getaddrinfo) cannot be interrupted; the deadline contextvar does not reach threads
a caller starts itself.
"""

from __future__ import annotations

import contextvars
import email.utils
import ipaddress
import json
import logging
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, quote_plus, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from core.errors import (
    DETAIL_LIMIT,
    ArchiveTransferError,
    DryRunViolation,
    DsrError,
    VendorAuthError,
    VendorError,
    VendorTransientError,
    cap,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# With creates_job, only these answers prove the vendor did not act (it refused before doing anything).
NOT_ACTED_STATUSES = frozenset({429, 503})
# Headers that carry a vendor credential (Elevate Api-Key, Qualifio x-api-token, basic auth).
CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-token"})
ERROR_BODY_LIMIT = 64 * 1024  # read at most this much of an error answer (a streamed one could be huge)
DETAIL_BODY_LIMIT = 2 * 1024  # of a body that is not JSON, this much goes to `detail`
JSON_LIMIT = 1 * 1024 * 1024  # bytes of JSON json() accepts; every documented answer is far smaller
CALL_BUDGET = 60.0  # seconds one try of a call may take, connect to last byte (streamed bodies excepted)
MAX_DOWNLOAD_REDIRECTS = 3
MIN_TRY_SECONDS = 1.0  # a try (or a retry after a sleep) needs at least this much of the invocation left
INVOCATION_MARGIN = 10.0  # seconds kept back from the Lambda's remaining time, at least ...
INVOCATION_MARGIN_SHARE = 0.10  # ... or this share of it: time to record the outcome and hand over to ASL
_READ_CHUNK = 64 * 1024


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
        base: float = min(self.backoff_base * (2 ** (retry_number - 1)), self.backoff_max)
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
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _error_body(response: requests.Response) -> bytes:
    """At most ERROR_BODY_LIMIT bytes of an error answer, whether or not it was requested as a stream."""
    try:
        return next(response.iter_content(ERROR_BODY_LIMIT), b"")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        return b""


def _decode(raw: bytes, declared: str | None) -> str:
    """UTF-8 when the bytes are valid UTF-8 (requests would guess ISO-8859-1 for a text body without a
    charset, and the mangled text would slip past `hide`), else the declared encoding."""
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode(declared or "utf-8", errors="replace").strip()
    except LookupError:
        return raw.decode("utf-8", errors="replace").strip()


def vendor_message(response: requests.Response, limit: int = 300) -> str:
    """The vendor's own explanation, from common JSON shapes or the text body, shortened. For `detail` only:
    it may quote anything the vendor echoes."""
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
        text = _decode(raw, response.encoding)
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "") if text else response.reason or "no message"


# --- the Lambda's clock --------------------------------------------------------------------------------------

_invocation: contextvars.ContextVar[float | None] = contextvars.ContextVar("dsrflow_invocation", default=None)


@contextmanager
def invocation_deadline(seconds_remaining: float | None) -> Iterator[None]:
    """Within this block no vendor call outlasts the invocation: the Lambda handler wraps its work in
    `with invocation_deadline(context.get_remaining_time_in_millis() / 1000):`. The deadline keeps a margin
    (max(10 s, 10 %)) for recording the outcome; a nested block never extends an outer one. None: no limit
    of its own."""
    outer = _invocation.get()
    deadline = outer
    if seconds_remaining is not None:
        margin = max(INVOCATION_MARGIN, INVOCATION_MARGIN_SHARE * seconds_remaining)
        own = time.monotonic() + seconds_remaining - margin
        deadline = own if outer is None else min(outer, own)
    token = _invocation.set(deadline)
    try:
        yield
    finally:
        _invocation.reset(token)


def remaining_seconds() -> float | None:
    """Seconds left before the invocation deadline (0 when past it); None outside `invocation_deadline`."""
    deadline = _invocation.get()
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


# --- the watchdog --------------------------------------------------------------------------------------------
#
# requests/urllib3 only bound each socket operation, so a vendor sending a byte every few seconds keeps a call
# alive for ever. Each try runs under a _Guard, found through a contextvar (per thread): our urllib3
# connection classes (mounted through _WatchedAdapter) hand it every socket this try uses, as soon as the TCP
# connection exists (so a stalled TLS handshake is covered) or when a pooled connection is reused. A timer
# shuts those sockets down at the deadline; the blocked read then sees EOF or an error, which surfaces as a
# requests exception, and `guard.fired` tells it apart from a vendor's own failure.
#
# The guard watches a duplicate of each socket's descriptor, which it owns: shutdown acts on the shared
# connection, so it reaches a socket http.client has already let go of (on "Connection: close" it keeps only
# the response's file object) and an SSLSocket still in its handshake, and no descriptor can be closed and
# reused by someone else under the timer. A connection leaves its guard (the duplicate is closed) when
# urllib3 puts it back into the pool (body read to the end, or closed) or the try ends, so a late timer can
# never cut a connection that serves another call.


class _DeadlineReached(OSError):
    """Raised inside urllib3 when a connection would start work after its guard fired."""


class _PrivatePeer(OSError):
    """Raised inside urllib3 when a public vendor's link connected to a private or loopback address."""


class _BodyCut(requests.exceptions.ConnectionError):
    """A streamed body was cut off by its deadline (raised to the reader instead of a silent EOF)."""


class _Guard:
    def __init__(self, deadline: float | None, *, public_only: bool = False):
        self.public_only = public_only  # peers must be public addresses (a public vendor's download)
        self.fired = False  # the deadline passed while the try was still using a connection
        self.sent = False  # a request started on an established connection: the vendor may act on it
        self.used = False  # a watched connection served this try (else: a foreign adapter, no watchdog)
        self.refused_peer = False
        self._lock = threading.Lock()
        self._watched: dict[HTTPConnection, socket.socket | None] = {}  # connection -> our duplicate
        self._armed = True
        self._streaming = False
        self._timer: threading.Timer | None = None
        self._generation = 0  # a replaced timer that already started must not fire
        self._start(deadline)

    def _start(self, deadline: float | None) -> None:
        if deadline is None:
            return
        self._generation += 1
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._fire, (self._generation,))
        self._timer.daemon = True
        self._timer.name = "dsrflow-http-deadline"
        self._timer.start()

    def add(self, conn: HTTPConnection, sock: socket.socket | None = None) -> None:
        """Watch `conn` (and `sock`, its socket, when given: a new one replaces the old)."""
        with self._lock:
            self.used = True
            if not self._armed:
                return
            if sock is None:
                self._watched.setdefault(conn, None)
                return
            old = self._watched.get(conn)
            if old is not None:
                old.close()
            try:
                self._watched[conn] = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
            except OSError:
                self._watched[conn] = None

    def watches(self, conn: HTTPConnection) -> bool:
        with self._lock:
            return self._watched.get(conn) is not None

    def release(self, conn: HTTPConnection) -> None:
        with self._lock:
            dup = self._watched.pop(conn, None)
            if dup is not None:
                dup.close()
            if self._streaming and not self._watched:
                self._stop()  # the streamed body ended or was closed: nothing left to watch

    def stream(self, deadline: float | None) -> None:
        """The headers are in and the body is handed to the caller: watch it until `deadline`."""
        with self._lock:
            if not self._armed:
                return
            if self._timer is not None:
                self._timer.cancel()
            self._streaming = True
            if deadline is None or not self._watched:
                self._stop()
            else:
                self._start(deadline)

    def disarm(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        self._armed = False
        if self._timer is not None:
            self._timer.cancel()
        for dup in self._watched.values():
            if dup is not None:
                dup.close()
        self._watched.clear()

    def _fire(self, generation: int) -> None:
        with self._lock:
            if not self._armed or generation != self._generation:
                return
            self.fired = True
            for dup in self._watched.values():
                self._shutdown(dup)
            # Done: no try starts work once fired (the connection classes check `fired`), and the
            # duplicates are closed now rather than whenever an abandoned stream is collected.
            self._stop()

    @staticmethod
    def _shutdown(dup: socket.socket | None) -> None:
        if dup is None:
            return  # still connecting: the connect timeout is capped to the deadline
        try:
            dup.shutdown(socket.SHUT_RDWR)  # the kernel wakes a blocked read or write on the connection
        except OSError:
            pass


_guard: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar("dsrflow_http_guard", default=None)


def _enlist(conn: _WatchedConnection, sock: socket.socket | None = None) -> _Guard | None:
    """Register `conn` (and its socket) with the current try's guard, leaving any earlier one."""
    guard = _guard.get()
    old = getattr(conn, "_dsr_guard", None)
    if old is not None and old is not guard:
        old.release(conn)
    conn._dsr_guard = guard
    if guard is not None:
        guard.add(conn, sock)
    return guard


def _leave(conn: _WatchedConnection | None) -> None:
    guard = getattr(conn, "_dsr_guard", None)
    if guard is not None:
        guard.release(conn)
        conn._dsr_guard = None  # type: ignore[union-attr]  # it carries a guard, so it is not None


if TYPE_CHECKING:
    _ConnectionBase = HTTPConnection  # what the mixin is mixed into, for the type checker
else:
    _ConnectionBase = object


class _WatchedConnection(_ConnectionBase):
    """Mixin for urllib3's connection classes: hand sockets to the guard, refuse work after the deadline,
    check a public vendor's peer address, and mark the moment the vendor may start acting."""

    _dsr_guard: _Guard | None  # the guard of the try using it, set by _enlist

    def connect(self) -> None:
        guard = _enlist(self)
        super().connect()
        if guard is not None and guard.fired:
            self.close()
            raise _DeadlineReached("deadline reached while connecting")

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        guard = _enlist(self, sock)  # before any TLS handshake on it
        if guard is not None:
            self._check_peer(guard, sock)
        return sock

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        guard = _guard.get()
        if guard is not None:
            if self.sock is None:
                # Connect first (http.client would on the first send), so `sent` below means a connection
                # existed: a refused or timed-out connect is then known to have sent nothing.
                self.connect()
            elif not guard.watches(self):  # a pooled connection, reused
                _enlist(self, self.sock)
                self._check_peer(guard, self.sock)
            if guard.fired:
                raise _DeadlineReached("deadline reached before sending")
            guard.sent = True
        super().request(method, url, body=body, headers=headers, **kwargs)

    def _check_peer(self, guard: _Guard, sock: socket.socket) -> None:
        """The address actually connected to, so a name that resolved to a public address when the link was
        checked and to a private one now (DNS rebinding) is refused before a byte is sent. Behind a proxy
        the peer is the proxy, so there is nothing to check."""
        if guard.public_only and not self.proxy and not _public_peer(sock):
            guard.refused_peer = True
            sock.close()
            raise _PrivatePeer("connected to a private address")


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        _leave(conn)
        super()._put_conn(conn)


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _put_conn(self, conn: Any) -> None:
        _leave(conn)
        super()._put_conn(conn)


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose urllib3 pools use the watched connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def _watch_body(response: requests.Response, guard: _Guard) -> None:
    """Make a deadline cut visible to the reader: after a shutdown a body without a length just ends, which
    would pass for a complete one."""
    inner = response.iter_content

    def iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[Any]:
        try:
            yield from inner(chunk_size, decode_unicode)
        except requests.RequestException:
            if guard.fired:
                raise _BodyCut("the body did not finish within its deadline") from None
            raise
        if guard.fired:
            raise _BodyCut("the body did not finish within its deadline")

    response.iter_content = iter_content  # type: ignore[method-assign]  # wraps this response's reader only


# --- addresses and download links ----------------------------------------------------------------------------


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address; embedded IPv4 (mapped, 6to4, Teredo) is checked too."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if any(e is not None and not _public(e) for e in embedded):
            return False
    flags = (ip.is_loopback, ip.is_link_local, ip.is_private, ip.is_reserved, ip.is_multicast, ip.is_unspecified)
    return ip.is_global and not any(flags)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return None


def _public_peer(sock: socket.socket) -> bool:
    try:
        ip = _ip(sock.getpeername()[0])
    except (OSError, IndexError, TypeError):
        return False
    return ip is not None and _public(ip)


def _host_is_public(host: str, port: int | None, resolve: Callable[..., Any]) -> bool | None:
    """Whether `host` (a literal or a name, every address it resolves to) is public; None: not resolvable."""
    literal = _ip(host)
    if literal is not None:
        return _public(literal)
    if host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost"):
        return False
    try:
        infos = resolve(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    addresses = [_ip(str(info[4][0])) for info in infos]
    return bool(addresses) and all(a is not None and _public(a) for a in addresses)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _vendor_is_local(base_url: str, resolve: Callable[..., Any]) -> bool:
    """A vendor on a loopback or private address (a local simulator, a private endpoint) may link there."""
    scheme, host, port = _origin(base_url)
    return bool(host) and _host_is_public(host, port, resolve) is False


def check_download_url(
    url: str,
    base_url: str,
    *,
    vendor: str = "vendor",
    call: str = "archive download",
    resolve: Callable[..., Any] = socket.getaddrinfo,
) -> None:
    """Refuse a vendor-provided download link that could leak data or reach our own network.

    https only (http only when `base_url` itself is http: a local simulator). When the vendor is public, the
    link's host must not be, nor resolve to, a loopback, link-local, private, reserved, multicast or
    unspecified address. Raises VendorError (VendorTransientError when the host does not resolve now).
    Messages name the call and the rule, never the URL: it may carry a token.
    """
    scheme, host, port = _origin(url)
    base_scheme = _origin(base_url)[0]
    if scheme != "https" and not (scheme == "http" and base_scheme == "http"):
        raise VendorError(vendor, f"{call} link is not https")
    if not host:
        raise VendorError(vendor, f"{call} link has no host")
    if _vendor_is_local(base_url, resolve):
        return
    public = _host_is_public(host, port, resolve)
    if public is None:
        transient = VendorTransientError(vendor, f"{call} link's host name does not resolve now")
        transient.ambiguous = False  # type: ignore[attr-defined]  # no such field in errors.py, see _transient
        raise transient
    if not public:
        raise VendorError(vendor, f"{call} link points to a private or loopback address")


# --- masking -------------------------------------------------------------------------------------------------


def _forms(value: str) -> set[str]:
    """The forms a vendor echoes a value in (case is ignored when matching)."""
    forms = {value, value.strip(), quote(value, safe=""), quote_plus(value)}
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms.add(value.encode("utf-8").decode("latin-1"))  # UTF-8 read as Latin-1 by whoever decoded it
    return {f for f in forms if f}


# --- the client ----------------------------------------------------------------------------------------------


@dataclass
class _Call:
    """What one call asks for (its tries share it)."""

    method: str
    url: str
    name: str  # for messages: the connector's call name, or "<METHOD> call"
    kwargs: dict[str, Any]  # for requests
    stream: bool = False
    creates_job: bool = False
    read_json: bool = False  # json(): the body is read (capped) and parsed within the try
    redirects_ok: bool = False  # download(): a 3xx is handed back to be checked and followed
    public_only: bool = False  # download() from a public vendor: connect to public addresses only


@dataclass
class _Again:
    """A failed try that may be repeated after a pause."""

    failure: str  # fixed wording: "answered HTTP 503", "timed out", "connection failed"
    status: int | None = None
    retry_after: float | None = None
    detail: str | None = None


def _transient(
    vendor: str, message: str, *, ambiguous: bool = False, detail: str | None = None
) -> VendorTransientError:
    exc = VendorTransientError(vendor, message, detail=detail)
    # Read by the submit task: may the vendor have acted although the call failed? (errors.py has no field.)
    exc.ambiguous = ambiguous  # type: ignore[attr-defined]  # read back with getattr(..., False)
    return exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps (requests and urllib3 nest the cause in args, `reason` and __cause__)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(a for a in e.args if isinstance(a, BaseException))
        for nxt in (getattr(e, "reason", None), e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _never_connected(exc: BaseException) -> bool:
    """The connection could not be established, so the vendor saw nothing (a read-side reset could have
    come after the request was sent: that is not this)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    return any(
        isinstance(e, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError, _PrivatePeer))
        for e in _chain(exc)
    )


def _timed_out(exc: BaseException) -> bool:
    # urllib3's NewConnectionError is a ConnectTimeoutError subclass, but a refused connection is no timeout.
    return any(
        isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, socket.timeout))
        and not isinstance(e, urllib3.exceptions.NewConnectionError)
        for e in _chain(exc)
    )


_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class _CredentialSafeSession(requests.Session):
    """Defence in depth: VendorHttp never lets the session follow a redirect, but should one ever be
    followed, our API-key headers are dropped with `Authorization` when it leaves the host."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]  # unannotated in types-requests
        if self.should_strip_auth(response.request.url, prepared_request.url):  # type: ignore[no-untyped-call]  # idem
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
        call_budget: float = CALL_BUDGET,
        stream_budget: float | None = None,
        json_limit: int = JSON_LIMIT,
        resolve: Callable[..., Any] = socket.getaddrinfo,
    ):
        self.vendor = vendor
        # Secret text (e.g. Bloomreach's project token in paths) -> what to show instead in errors and logs.
        self.redact: dict[str, str] = {}
        self.timeout = timeout  # (connect, read) per socket operation; each also capped by the deadline
        self.retry = retry or RetryPolicy()
        self.call_budget = call_budget
        self.stream_budget = stream_budget  # None: until the invocation deadline (no limit outside Lambda)
        self.json_limit = json_limit
        self.resolve = resolve  # name resolution for download-link checks (injectable for tests)
        self.session = session or _CredentialSafeSession()
        # The watchdog needs our connection classes; this replaces the session's default adapters.
        adapter = _WatchedAdapter()
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Set by the task layer for a dry-run request: a call marked destructive is refused before sending.
        self.dry_run = False
        # Set by the task layer where the vendor has a calls-per-second limit (core/limits.py): called before
        # every try, it sleeps for this call's turn or raises VendorBusy with nothing sent.
        self.pace: Callable[[], object] | None = None

    # --- public calls -------------------------------------------------------------------------------------

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
        `creates_job`: the call creates a vendor job, so it is not repeated once the vendor may have acted.
        `destructive`: refused with DryRunViolation while `self.dry_run` is set.
        With stream=True the caller must read or close the body, within `stream_budget`. Retries happen only
        before a body is handed over: a stream that breaks later is the caller's to handle (see `checked`).
        `hide`: values of this call (customer key, email, ids) to mask should the vendor echo them.
        """
        return cast(
            requests.Response,  # _call returns the response unless read_json is set
            self._call(
                _Call(method, url, call or f"{method} call", kwargs, stream=stream, creates_job=creates_job),
                destructive=destructive,
                hide=hide,
            ),
        )

    def json(
        self,
        method: str,
        url: str,
        *,
        call: str | None = None,
        creates_job: bool = False,
        destructive: bool = False,
        hide: tuple[str | None, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """`request`, then the body parsed as JSON: read as a stream, at most `json_limit` bytes, within the
        same deadline as the headers."""
        kwargs.pop("stream", None)
        name = call or f"{method} call"
        spec = _Call(method, url, name, kwargs, stream=True, creates_job=creates_job, read_json=True)
        return self._call(spec, destructive=destructive, hide=hide)

    def download(
        self, url: str, *, call: str, base_url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """GET a download link a vendor handed out (streamed), following at most MAX_DOWNLOAD_REDIRECTS
        redirects, each hop checked with `check_download_url`. Credentials (`headers`, `auth`) go only to
        hops on the vendor's own origin (`base_url`), and never once a hop has left it."""
        hide = kwargs.pop("hide", ())
        base = _origin(base_url)
        public_only = not _vendor_is_local(base_url, self.resolve)
        on_origin = True
        current = url
        for hop in range(MAX_DOWNLOAD_REDIRECTS + 1):
            check_download_url(current, base_url, vendor=self.vendor, call=call, resolve=self.resolve)
            on_origin = on_origin and _origin(current) == base
            hop_kwargs = dict(kwargs)
            if hop:
                hop_kwargs.pop("params", None)  # they belong to the vendor's link, not to where it leads
            if not on_origin:
                for key in ("auth", "cookies"):
                    hop_kwargs.pop(key, None)
            hop_kwargs["headers"] = headers if on_origin else {}
            spec = _Call("GET", current, call, hop_kwargs, stream=True, redirects_ok=True, public_only=public_only)
            response: requests.Response = self._call(spec, hide=hide)
            if not 300 <= response.status_code < 400:
                return response
            status, location = response.status_code, response.headers.get("Location")
            response.close()
            if not location:
                raise VendorError(self.vendor, f"{call} answered a redirect (HTTP {status}) without a location", status)
            current = urljoin(current, location)
        raise VendorError(
            self.vendor, f"{call} was redirected more than {MAX_DOWNLOAD_REDIRECTS} times; refused", status
        )

    def mask(self, text: str, hide: Iterable[str | None] = ()) -> str:
        """`text` with the redact fragments replaced and every form of the `hide` values masked."""
        for secret, shown in self.redact.items():
            text = text.replace(secret, shown)
        forms = sorted({f for v in hide if v for f in _forms(v)}, key=len, reverse=True)
        if forms:
            text = re.sub("|".join(re.escape(f) for f in forms), "***", text, flags=re.IGNORECASE)
        return text

    # --- the machinery ------------------------------------------------------------------------------------

    def _call(self, spec: _Call, *, destructive: bool = False, hide: tuple[str | None, ...] = ()) -> Any:
        if destructive and self.dry_run:
            raise DryRunViolation(f"{self.vendor}: {spec.name} is destructive and this request is a dry run")
        try:
            return self._tries(spec)
        except DsrError as exc:
            # The message is allow-listed already; masking it too is defence in depth. `detail` holds what
            # the vendor said, which may echo the very values this call sent.
            masked = self.mask(exc.message, hide)
            if masked != exc.message:
                exc.with_message(masked)
            if exc.detail:
                exc.detail = cap(self.mask(exc.detail, hide), DETAIL_LIMIT)
            raise

    def _tries(self, spec: _Call) -> Any:
        slept = 0.0
        again: _Again | None = None
        for attempt in range(1, self.retry.attempts + 1):
            left = remaining_seconds()
            if left is not None and left < MIN_TRY_SECONDS:
                what = f"{spec.name} {again.failure}" if again else f"{spec.name} was not tried"
                raise _transient(
                    self.vendor,
                    f"{what}: not enough of this invocation's time left; the workflow retries later",
                    detail=again.detail if again else None,
                )
            if self.pace is not None:
                self.pace()
            outcome = self._try(spec)
            if not isinstance(outcome, _Again):
                return outcome
            again = outcome
            slept = self._pause_or_give_up(spec.name, again, attempt, slept)
        raise AssertionError("unreachable")  # pragma: no cover

    def _try(self, spec: _Call) -> Any:
        """One exchange under its own deadline: the response (or parsed JSON), an _Again, or a raised error."""
        start = time.monotonic()
        invocation = _invocation.get()
        deadline = start + self.call_budget
        by_invocation = invocation is not None and invocation <= deadline
        if by_invocation:
            deadline = invocation  # type: ignore[assignment]  # by_invocation: it is not None
        budget = deadline - start
        args = dict(spec.kwargs)
        args["timeout"] = _capped(args.get("timeout") or self.timeout, budget)
        args["allow_redirects"] = False  # never: a redirect could carry credentials or data off the host

        guard = _Guard(deadline, public_only=spec.public_only)
        token = _guard.set(guard)
        handed_over = False
        try:
            try:
                response = self.session.request(spec.method, spec.url, stream=spec.stream, **args)
                if guard.fired:
                    # Cut while the headers (or, with stream=False, the body) were read: a cut can look like
                    # a normal end (a header block or a body ended by EOF), so nothing read is trusted.
                    response.close()
                    raise _BodyCut("cut at the deadline")
            except _TRANSPORT_ERRORS as exc:
                return self._transport_failure(exc, guard, spec, budget, by_invocation)
            status = response.status_code
            if 200 <= status < 300:
                if spec.read_json:
                    try:
                        raw = self._read_capped(response, spec.name)
                        if guard.fired:
                            raise _BodyCut("cut at the deadline")
                    except _TRANSPORT_ERRORS as exc:
                        # The vendor answered 2xx, so it did act: the answer alone was lost.
                        return self._transport_failure(exc, guard, spec, budget, by_invocation, answered=True)
                    return self._parse_json(raw, status, spec.name)
                if spec.stream:  # the body is the caller's to read: the guard now watches it (see _Guard.stream)
                    guard.stream(self._stream_deadline(start, invocation))
                    _watch_body(response, guard)
                    handed_over = True
                return response
            if 300 <= status < 400:
                if spec.redirects_ok:
                    return response  # download() checks and follows it
                location = response.headers.get("Location")
                response.close()
                raise VendorError(
                    self.vendor,
                    f"{spec.name} answered a redirect (HTTP {status}), not followed so nothing leaves the vendor's "
                    "host; check base_url",
                    status,
                    detail=location,  # where it pointed: for a DPO checking base_url, never the message
                )
            return self._error_status(response, spec.name, spec.creates_job)
        finally:
            _guard.reset(token)
            if not handed_over:
                guard.disarm()

    def _stream_deadline(self, start: float, invocation: float | None) -> float | None:
        own = None if self.stream_budget is None else start + self.stream_budget
        if invocation is None:
            return own
        return invocation if own is None else min(own, invocation)

    def _read_capped(self, response: requests.Response, call: str) -> bytearray:
        """The body, refused once past `json_limit`: never more than that is read or held."""
        status, limit = response.status_code, self.json_limit
        too_big = f"{call} answered more than {limit // 1024} KiB of JSON; refused"
        body = bytearray()
        try:
            announced = content_length(response)
            if announced is not None and announced > limit:
                raise VendorError(self.vendor, too_big, status)
            for chunk in response.iter_content(_READ_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise VendorError(self.vendor, too_big, status)
        finally:
            response.close()  # also when refused: drops the connection rather than reading the rest
        return body

    def _parse_json(self, body: bytearray, status: int, call: str) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise VendorError(
                self.vendor,
                f"{call} answered HTTP {status} with a body that is not JSON",
                status,
                detail=bytes(body[:DETAIL_BODY_LIMIT]).decode("utf-8", errors="replace"),
            ) from None

    def _transport_failure(
        self,
        exc: BaseException,
        guard: _Guard,
        spec: _Call,
        budget: float,
        by_invocation: bool,
        *,
        answered: bool = False,
    ) -> _Again:
        call, creates_job = spec.name, spec.creates_job
        if guard.refused_peer:
            raise VendorError(self.vendor, f"{call} link points to a private or loopback address")
        # Our connection classes know whether a request went out on an open connection; a foreign adapter
        # (a caller's own mount) leaves only the exception to go by.
        sent = answered or (guard.sent if guard.used else not _never_connected(exc))
        if creates_job and sent:
            if guard.fired:
                reason = f"no complete answer within {budget:.0f}s"
            elif answered:
                reason = "its answer broke off"
            elif _timed_out(exc):
                reason = "no answer in time"
            else:
                reason = "the connection dropped"
            raise _transient(
                self.vendor,
                f"{call} failed after the request was sent ({reason}); the vendor may have acted without "
                "answering, so it is not repeated here",
                ambiguous=True,
            )
        if guard.fired:
            # Not repeated in-call: a vendor that took the whole budget would take it again.
            if by_invocation:
                raise _transient(
                    self.vendor,
                    f"{call} did not finish within {budget:.0f}s: not enough of this invocation's time left; "
                    "the workflow retries later",
                )
            raise _transient(
                self.vendor, f"{call} did not finish within {budget:.0f}s (the vendor answered too slowly)"
            )
        return _Again("timed out" if _timed_out(exc) else "connection failed")

    def _error_status(self, response: requests.Response, call: str, creates_job: bool) -> _Again:
        status = response.status_code
        detail = vendor_message(response, limit=DETAIL_BODY_LIMIT)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        response.close()
        if status in NOT_ACTED_STATUSES or (status in RETRY_STATUSES and not creates_job):
            return _Again(f"answered HTTP {status}", status, retry_after, detail)
        if status >= 500:
            if creates_job:
                raise _transient(
                    self.vendor,
                    f"{call} failed after the request was sent (HTTP {status}); the vendor may have acted "
                    "without answering, so it is not repeated here",
                    ambiguous=True,
                    detail=detail,
                )
            raise _transient(self.vendor, f"{call} answered HTTP {status}", detail=detail)
        if status in (401, 403):
            raise VendorAuthError(
                self.vendor,
                f"{call} was refused with HTTP {status}; check the vendor credentials",
                status,
                detail=detail,
            )
        raise VendorError(self.vendor, f"{call} answered HTTP {status}", status, detail=detail)

    def _pause_or_give_up(self, call: str, again: _Again, attempt: int, slept: float) -> float:
        """Sleep before the next try and return the total slept; raise once tries, the retry budget or the
        invocation's time are spent."""
        failure = f"{call} {again.failure}"
        if attempt == self.retry.attempts:
            raise _transient(self.vendor, f"{failure} after {attempt} tries", detail=again.detail)
        delay = self.retry.delay(attempt, again.retry_after)
        if slept + delay > self.retry.budget:
            raise _transient(
                self.vendor,
                f"{failure}; waiting {delay:.0f}s more would outlast this call, the workflow retries later",
                detail=again.detail,
            )
        left = remaining_seconds()
        if left is not None and delay + MIN_TRY_SECONDS > left:
            raise _transient(
                self.vendor,
                f"{failure}: not enough of this invocation's time left to wait {delay:.0f}s and try again; "
                "the workflow retries later",
                detail=again.detail,
            )
        log.warning(
            "vendor call will be retried",
            extra={
                "vendor": self.vendor,
                "call": call,
                "status": again.status,
                "reason": again.failure,  # fixed wording, no vendor text
                "attempt": attempt,
                "delay_s": round(delay, 3),
            },
        )
        self.retry.sleep(delay)
        return slept + delay


def _capped(timeout: Any, budget: float) -> tuple[float, float]:
    """(connect, read) socket timeouts, neither past the try's deadline."""
    budget = max(budget, 0.01)
    if isinstance(timeout, tuple):
        connect, read = timeout
    elif isinstance(timeout, (int, float)):
        connect = read = timeout
    else:  # e.g. a urllib3 Timeout object: not ours to pick apart, so the try's budget alone
        connect = read = None
    return (
        budget if connect is None else min(float(connect), budget),
        budget if read is None else min(float(read), budget),
    )


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
    """Body pieces, verified against `length`; a broken, cut-off or wrong-sized stream is ArchiveTransferError.

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
    except _BodyCut:
        raise ArchiveTransferError(
            f"{what} was cut off after {received} bytes: it did not finish within its time budget; nothing was "
            f"stored{hint}"
        ) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ArchiveTransferError(
            f"{what} broke off after {received} bytes ({type(exc).__name__}); nothing was stored{hint}"
        ) from None
    if length is not None and received != length:
        raise ArchiveTransferError(f"{what} ended after {received} of the announced {length} bytes; nothing was stored")
