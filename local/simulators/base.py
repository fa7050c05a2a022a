"""What every vendor simulator shares: a real HTTP server on loopback, a scaled clock, fault injection.

A simulator is a `Simulator` subclass that registers routes:

    class ElevateSimulator(Simulator):
        name = "elevate"
        def routes(self):
            return [("POST", r"/api/v2/event-data/create-export-customer-job", self.create_export)]
        def refusal(self, req): ...                  # optional: the auth check, answered before any fault
        def create_export(self, req: Request) -> Response: ...

    with ElevateSimulator(time_scale=86400) as sim:   # port chosen at start
        sim.base_url                                 # http://127.0.0.1:PORT

Faults are plain settings (constructor or `sim.faults.<x> = ...` at run time), so reliability tests need no
new simulator code. Counted faults ("the next N") decrement each time they fire and stop at 0; the others
stay on until reset. Every fault applies only to requests whose path matches `path_pattern` (a regex,
default: all paths), except `cut_download_after`, which has always applied to every download.

How a request is answered, in this order:
1. `delay`: seconds to sleep before every matching answer (slow vendor), whatever the answer is.
2. The route decides (unknown path 404, wrong method 405) and then auth decides (`Simulator.refusal`:
   wrong credentials 401/403 and the like). These answers are given as they are: no pre- or post-action
   fault touches them (sending faults still do).
3. Pre-action faults, answered INSTEAD of running the handler (nothing happens at the vendor), first one
   that fires wins:
   - `rate_limit`: the next N answer 429 with `Retry-After: retry_after`;
   - `server_errors`: the next N answer `server_error_status` (default 503);
   - `reject`: the next N answer `reject_status` (default 400) with `reject_body` (bytes, or a callable
     `Request -> bytes` to echo the request, e.g. the subject in an error message; default a JSON
     `{"message": "Request rejected (injected)"}`) as `reject_content_type` (default application/json);
   - `redirect_to` + `redirects` (default 1): the next N answer 307 with
     `Location: redirect_to + original path (+ "?" + original query)`.
4. The route handler runs: the vendor acts (a job is created, a customer anonymized, ...).
5. Post-action faults, after the vendor acted (whatever status the handler answered):
   - `drop_after_acting`: the next N get no answer at all: the connection is closed once the handler ran
     (the client sees a dropped connection after sending; `Call.status` is 0);
   - `slow_after_acting` seconds + `slow_after_acting_count` (default 1): the next N answers are held back
     this long (a client read timeout after the vendor acted);
   - `rewrite` + `rewrites` (default 1): the next N answers go through `rewrite(request, response)`, which
     returns the response to send (a huge status word, a changed link, a 200 MB stream, `on_complete=None`
     to keep an Elevate job after its download, ...). Rewritten answers still get the sending faults.
   When a drop fires, the slow and rewrite counters are left alone.
6. Sending faults, while the answer goes out (a "download" is a `Response(download=True)`: an archive, or
   Bloomreach's export data):
   - `html_instead`: the next N downloads answer HTTP 200 `text/html; charset=utf-8`
     `<html><body>Please log in</body></html>` instead (a login page); the download's `on_complete` does not
     run, so the archive stays downloadable;
   - `short_length` + `short_lengths` (default 1): the next N downloads announce `Content-Length:
     short_length` (and `Connection: close`) but send the whole body; the client stops reading at the
     announced length. The whole body was sent, so `on_complete` runs;
   - `drip`: every matching answer is sent one byte every `drip` seconds: headers at once, then the body,
     until it is all sent or the client disconnects (or the simulator stops); `drip_headers=True` drips the
     status line and headers too;
   - `cut_download_after`: a download stops after this many body bytes and the connection is closed (cut
     off mid-stream); `cut_downloads` says how many downloads to cut (default 1); `on_complete` does not run.

Every request is recorded in `sim.calls` as a `Call`: method, path, query, body, vendor time, real time,
`status` (what was sent; 0 when nothing was), `faults` (the names of the faults that fired on it) and
`acted` (the simulator changed state for it: created a job or rule, anonymized a customer), so tests can
assert what was polled, when, and what happened at the vendor. `destructive_calls()` lists the calls sent to
an endpoint that destroys data, whatever they were answered (refused, faulted, invalid: they were sent);
`destructive_acted()` counts those that actually destroyed something (or scheduled it: an accepted removal
job or erasure rule). Each simulator says what its destructive endpoints are and what `jobs_created()` counts.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOGIN_PAGE = b"<html><body>Please log in</body></html>"


class VendorClock:
    """Vendor time: starts at the real now and runs `scale` times faster. `advance` jumps ahead."""

    def __init__(self, scale: float = 1.0, start: datetime | None = None):
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.scale = scale
        self._real0 = time.monotonic()
        self._vendor0 = start or datetime.now(UTC)
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            elapsed = (time.monotonic() - self._real0) * self.scale
            return self._vendor0 + timedelta(seconds=elapsed) + self._offset

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._offset += delta


@dataclass
class Faults:
    """Injected vendor misbehaviour; the module docstring gives the order and the exact semantics."""

    rate_limit: int = 0
    retry_after: float = 1.0
    server_errors: int = 0
    server_error_status: int = 503
    delay: float = 0.0
    cut_download_after: int | None = None
    cut_downloads: int = 1
    path_pattern: str | None = None
    # --- pre-action: answered instead of acting ---
    reject: int = 0
    reject_status: int = 400
    reject_body: Callable[[Request], bytes] | bytes | None = None
    reject_content_type: str = "application/json"
    redirect_to: str | None = None
    redirects: int = 1
    # --- post-action: the vendor acted ---
    drop_after_acting: int = 0
    slow_after_acting: float = 0.0
    slow_after_acting_count: int = 1
    rewrite: Callable[[Request, Response], Response] | None = None
    rewrites: int = 1
    # --- sending ---
    html_instead: int = 0
    short_length: int | None = None
    short_lengths: int = 1
    drip: float | None = None
    drip_headers: bool = False

    def applies_to(self, path: str) -> bool:
        return self.path_pattern is None or re.search(self.path_pattern, path) is not None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # lower-cased names
    body: bytes
    raw_query: str = ""  # the query string exactly as sent (without "?")

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # for streamed bodies: the Content-Length to announce
    # Archive downloads are what `cut_download_after`, `html_instead` and `short_length` act on.
    download: bool = False
    # Called after the whole body was sent (e.g. Elevate removes the job after a completed download).
    # It runs before the last byte goes out, so a client that read the whole body sees its effect.
    on_complete: Callable[[], None] | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status=status, body=json.dumps(payload).encode(), headers=headers or {})

    @classmethod
    def text(cls, text: str, status: int) -> Response:
        return cls(status=status, body=text.encode(), content_type="text/plain")


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    at: datetime  # vendor time
    real_at: float  # time.monotonic()
    status: int = 0  # the status sent; 0 while unanswered or when the connection was dropped
    body: bytes = b""  # the request body as received
    faults: list[str] = field(default_factory=list)  # names of the faults that fired on this call
    acted: bool = False  # the simulator changed state for this call (job/rule created, customer anonymized)


Route = tuple[str, str, Callable[[Request], Response]]


class _Stopped(Exception):
    """The simulator is stopping: a dripping or slowed answer gives up."""


class Simulator:
    name = "vendor"

    def __init__(self, time_scale: float = 1.0, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0):
        self.clock = VendorClock(time_scale)
        self.faults = faults or Faults()
        self.calls: list[Call] = []
        self.lock = threading.RLock()  # simulators guard their state with it
        self._compiled = [(m, re.compile(p + r"$"), h) for m, p, h in self.routes()]
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()  # the Call being handled on this thread
        self._stopping = threading.Event()

    # --- to implement -------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def refusal(self, req: Request) -> Response | None:
        """Auth: the answer for a request the vendor refuses before anything else (None: accepted).

        Called once the route is known and before any pre-action fault. Handlers may check again."""
        return None

    def is_destructive(self, call: Call) -> bool:
        """Whether this call was sent to an endpoint that destroys data (see `destructive_calls`)."""
        return False

    # --- counting vendor-side effects ---------------------------------------------------------------
    def destructive_calls(self) -> list[Call]:
        """Every call sent to a destructive endpoint, however it was answered: one refused by auth or by a
        pre-action fault (429, 503, reject, redirect), dropped, or invalid still counts (it was sent)."""
        with self.lock:
            return [c for c in self.calls if self.is_destructive(c)]

    def destructive_acted(self) -> int:
        """How many destructive calls the vendor acted on (destroyed data, or accepted a job that will)."""
        with self.lock:
            return sum(1 for c in self.calls if c.acted and self.is_destructive(c))

    def _acted(self) -> None:
        """Handlers call this when they change vendor state: the current Call is marked `acted`."""
        call = getattr(self._local, "call", None)
        if call is not None:
            call.acted = True

    # --- lifecycle ----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "simulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"  # type: ignore[str-bytes-safe]  # bound AF_INET: the host is a str

    def start(self) -> Simulator:
        sim = self

        class Handler(_Handler):
            simulator = sim

        self._stopping.clear()
        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # dripping and slowed answers give up
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def calls_to(self, path_regex: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if re.search(path_regex, c.path)]

    # --- dispatch -----------------------------------------------------------------------------------
    def _route(self, req: Request) -> Callable[[Request], Response] | Response:
        """The handler for the request, or the 404/405 answer."""
        for method, pattern, handler in self._compiled:
            if method == req.method and pattern.match(req.path):
                return handler
        if any(pattern.match(req.path) for _, pattern, _ in self._compiled):
            return Response.json({"message": f"method {req.method} not allowed"}, 405)
        return Response.json({"message": f"no such endpoint: {req.path}"}, 404)

    def _dispatch(self, req: Request) -> Response:
        route = self._route(req)
        return route if isinstance(route, Response) else route(req)

    def _answer(self, req: Request, call: Call) -> tuple[Response | None, float]:
        """The response to send (None: drop the connection) and how long to hold it back first."""
        f = self.faults
        matching = f.applies_to(req.path)
        if matching and f.delay > 0:
            call.faults.append("delay")
            time.sleep(f.delay)
        route = self._route(req)
        if isinstance(route, Response):
            return route, 0.0
        refused = self.refusal(req)
        if refused is not None:
            return refused, 0.0
        if matching:
            injected = self._pre_action_fault(req, call)
            if injected is not None:
                return injected, 0.0
        resp = route(req)
        if not matching:
            return resp, 0.0
        return self._post_action_faults(req, resp, call)

    def _pre_action_fault(self, req: Request, call: Call) -> Response | None:
        f = self.faults
        with self.lock:
            if f.rate_limit > 0:
                f.rate_limit -= 1
                call.faults.append("rate_limit")
                return Response.json(
                    {"message": "Too many requests"}, 429, headers={"Retry-After": _fmt_seconds(f.retry_after)}
                )
            if f.server_errors > 0:
                f.server_errors -= 1
                call.faults.append("server_errors")
                return Response.json({"message": "Service unavailable (injected)"}, f.server_error_status)
            if f.reject > 0:
                f.reject -= 1
                call.faults.append("reject")
                make = f.reject_body
                status, content_type = f.reject_status, f.reject_content_type
            elif f.redirect_to is not None and f.redirects > 0:
                f.redirects -= 1
                call.faults.append("redirect")
                target = f.redirect_to.rstrip("/") + req.path + (f"?{req.raw_query}" if req.raw_query else "")
                return Response.json({"message": "Temporary Redirect"}, 307, headers={"Location": target})
            else:
                return None
        # A reject body built from the request runs outside the lock (it is test code).
        if make is None:
            body: Any = json.dumps({"message": "Request rejected (injected)"}).encode()
        elif callable(make):
            body = make(req)
        else:
            body = make
        if isinstance(body, str):
            body = body.encode()
        return Response(status=status, body=bytes(body), content_type=content_type)

    def _post_action_faults(self, req: Request, resp: Response, call: Call) -> tuple[Response | None, float]:
        f = self.faults
        with self.lock:
            if f.drop_after_acting > 0:
                f.drop_after_acting -= 1
                call.faults.append("drop_after_acting")
                return None, 0.0
            slow = 0.0
            if f.slow_after_acting > 0 and f.slow_after_acting_count > 0:
                f.slow_after_acting_count -= 1
                call.faults.append("slow_after_acting")
                slow = f.slow_after_acting
            hook = None
            if f.rewrite is not None and f.rewrites > 0:
                f.rewrites -= 1
                call.faults.append("rewrite")
                hook = f.rewrite
        if hook is not None:
            resp = hook(req, resp)
        return resp, slow

    def _take_cut(self) -> int | None:
        with self.lock:
            f = self.faults
            if f.cut_download_after is None or f.cut_downloads <= 0:
                return None
            f.cut_downloads -= 1
            return f.cut_download_after

    def _take_html(self) -> bool:
        with self.lock:
            if self.faults.html_instead > 0:
                self.faults.html_instead -= 1
                return True
            return False

    def _take_short(self) -> int | None:
        with self.lock:
            f = self.faults
            if f.short_length is None or f.short_lengths <= 0:
                return None
            f.short_lengths -= 1
            return f.short_length


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class _Wire:
    """Writes to the client: at once, or one byte every `drip` seconds; can hold back the last byte."""

    def __init__(self, handler: _Handler, hold_last: bool):
        self._handler = handler
        self._hold_last = hold_last
        self._held = b""
        self.drip: float | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._hold_last:
            data = self._held + data
            self._held = data[-1:]
            data = data[:-1]
        self._emit(data)

    def release(self) -> None:
        held, self._held = self._held, b""
        self._emit(held)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        out = self._handler.wfile
        if self.drip is None:
            out.write(data)
            return
        stopping = self._handler.simulator._stopping
        for i in range(len(data)):
            out.write(data[i : i + 1])
            if stopping.wait(self.drip):
                raise _Stopped


class _Handler(BaseHTTPRequestHandler):
    simulator: Simulator
    _headers_buffer: list[bytes]  # http.server's, filled by send_header (not in typeshed)
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _handle(self) -> None:
        sim = self.simulator
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command,
            path=parts.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw_query=parts.query,
        )
        call = Call(req.method, req.path, query, sim.clock.now(), time.monotonic(), body=body)
        with sim.lock:
            sim.calls.append(call)
        sim._local.call = call
        try:
            resp, hold = sim._answer(req, call)
        except Exception as exc:  # a simulator bug should look like a vendor 500, not hang the client
            resp, hold = Response.json({"message": f"simulator error: {exc!r}"}, 500), 0.0
        finally:
            sim._local.call = None
        if resp is None:  # drop_after_acting: the vendor acted, the client gets no answer
            self.close_connection = True
            return
        if hold > 0 and sim._stopping.wait(hold):
            self.close_connection = True
            return
        call.status = resp.status
        self._send(resp, call)

    def _send(self, resp: Response, call: Call) -> None:
        sim = self.simulator
        f = sim.faults
        matching = f.applies_to(call.path)
        if resp.download and matching and sim._take_html():
            call.faults.append("html_instead")
            resp = Response(status=200, body=LOGIN_PAGE, content_type="text/html; charset=utf-8")
        short = sim._take_short() if resp.download and matching else None
        drip = f.drip if matching and f.drip is not None and f.drip > 0 else None
        drip_headers = drip is not None and f.drip_headers
        cut = sim._take_cut() if resp.download else None
        if short is not None:
            call.faults.append("short_length")
        if drip is not None:
            call.faults.append("drip")
        if cut is not None:
            call.faults.append("cut_download_after")

        streamed = not isinstance(resp.body, (bytes, bytearray))
        chunked = streamed and resp.length is None and short is None
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if short is not None:
            self.send_header("Content-Length", str(short))
            self.send_header("Connection", "close")
            self.close_connection = True
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            length = resp.length if streamed else len(resp.body)  # type: ignore[arg-type]  # not streamed: bytes
            self.send_header("Content-Length", str(length))
        # With on_complete, the last byte waits until it ran: a client that has read the whole answer sees
        # its effect (no race between the client's next call and the simulator's bookkeeping).
        hold_last = resp.on_complete is not None and drip is None
        if hold_last or drip is not None:
            self._no_delay()
        wire = _Wire(self, hold_last)
        chunks: Iterable[bytes] = resp.body if streamed else [bytes(resp.body)]  # type: ignore[assignment,arg-type]  # as above
        sent = 0
        try:
            self._headers_buffer.append(b"\r\n")
            head = b"".join(self._headers_buffer)
            self._headers_buffer = []
            if drip_headers:
                wire.drip = drip
            wire.write(head)
            wire.drip = drip
            for chunk in chunks:
                if cut is not None and sent + len(chunk) > cut:
                    # Send what fits and drop the connection: the client sees a truncated body.
                    self._write(wire, chunk[: max(cut - sent, 0)], chunked)
                    wire.release()
                    self.close_connection = True
                    return
                self._write(wire, chunk, chunked)
                sent += len(chunk)
            if chunked:
                wire.write(b"0\r\n\r\n")
            if resp.on_complete is not None:
                resp.on_complete()
            wire.release()
        except (BrokenPipeError, ConnectionResetError, _Stopped):
            self.close_connection = True
            return

    def _no_delay(self) -> None:
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    @staticmethod
    def _write(wire: _Wire, chunk: bytes, chunked: bool) -> None:
        if not chunk:
            return
        if chunked:
            wire.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        else:
            wire.write(chunk)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


# --- helpers for simulators ---------------------------------------------------------------------------


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A real zip archive of the given files (simulator archives are small; large ones are generated)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
