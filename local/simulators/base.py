"""What every vendor simulator shares: a real HTTP server on loopback, a scaled clock, fault injection.

A simulator is a `Simulator` subclass that registers routes:

    class ElevateSimulator(Simulator):
        name = "elevate"
        def routes(self):
            return [("POST", r"/api/v2/event-data/create-export-customer-job", self.create_export)]
        def create_export(self, req: Request) -> Response: ...

    with ElevateSimulator(time_scale=86400) as sim:   # port chosen at start
        sim.base_url                                 # http://127.0.0.1:PORT

Faults are plain settings (constructor or `sim.faults.<x> = ...` at run time), so reliability tests need no
new simulator code:
- `rate_limit`: the next N matching requests answer 429 with `Retry-After: retry_after`;
- `server_errors`: the next N matching requests answer `server_error_status` (default 503);
- `delay`: seconds to sleep before every matching answer (slow vendor);
- `cut_download_after`: a streamed body stops after this many bytes and the connection is closed
  (a download cut off mid-stream); `cut_downloads` says how many downloads to cut (default 1);
- `path_pattern`: a regex a request path must match for the faults above to apply (default: all).
Every request is recorded in `sim.calls` (method, path, query, time) so tests can assert what was polled
and when.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit


class VendorClock:
    """Vendor time: starts at the real now and runs `scale` times faster. `advance` jumps ahead."""

    def __init__(self, scale: float = 1.0, start: datetime | None = None):
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.scale = scale
        self._real0 = time.monotonic()
        self._vendor0 = start or datetime.now(timezone.utc)
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
    rate_limit: int = 0
    retry_after: float = 1.0
    server_errors: int = 0
    server_error_status: int = 503
    delay: float = 0.0
    cut_download_after: int | None = None
    cut_downloads: int = 1
    path_pattern: str | None = None

    def applies_to(self, path: str) -> bool:
        return self.path_pattern is None or re.search(self.path_pattern, path) is not None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # for streamed bodies: the Content-Length to announce
    # Archive downloads are what `cut_download_after` cuts off.
    download: bool = False
    # Called after the whole body was sent (e.g. Elevate removes the job after a completed download).
    on_complete: Callable[[], None] | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        return cls(status=status, body=json.dumps(payload).encode(), headers=headers or {})

    @classmethod
    def text(cls, text: str, status: int) -> "Response":
        return cls(status=status, body=text.encode(), content_type="text/plain")


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    at: datetime  # vendor time
    real_at: float  # time.monotonic()
    status: int = 0


Route = tuple[str, str, Callable[[Request], Response]]


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

    # --- to implement -------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    # --- lifecycle ----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "simulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "Simulator":
        sim = self

        class Handler(_Handler):
            simulator = sim

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def calls_to(self, path_regex: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if re.search(path_regex, c.path)]

    # --- dispatch -----------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response:
        for method, pattern, handler in self._compiled:
            if method == req.method and pattern.match(req.path):
                return handler(req)
        if any(pattern.match(req.path) for _, pattern, _ in self._compiled):
            return Response.json({"message": f"method {req.method} not allowed"}, 405)
        return Response.json({"message": f"no such endpoint: {req.path}"}, 404)

    def _injected_fault(self, req: Request) -> Response | None:
        f = self.faults
        if not f.applies_to(req.path):
            return None
        if f.delay > 0:
            time.sleep(f.delay)
        with self.lock:
            if f.rate_limit > 0:
                f.rate_limit -= 1
                return Response.json(
                    {"message": "Too many requests"}, 429, headers={"Retry-After": _fmt_seconds(f.retry_after)}
                )
            if f.server_errors > 0:
                f.server_errors -= 1
                return Response.json({"message": "Service unavailable (injected)"}, f.server_error_status)
        return None

    def _take_cut(self) -> int | None:
        with self.lock:
            f = self.faults
            if f.cut_download_after is None or f.cut_downloads <= 0:
                return None
            f.cut_downloads -= 1
            return f.cut_download_after


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class _Handler(BaseHTTPRequestHandler):
    simulator: Simulator
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
        )
        call = Call(req.method, req.path, query, sim.clock.now(), time.monotonic())
        with sim.lock:
            sim.calls.append(call)
        try:
            resp = sim._injected_fault(req) or sim._dispatch(req)
        except Exception as exc:  # a simulator bug should look like a vendor 500, not hang the client
            resp = Response.json({"message": f"simulator error: {exc!r}"}, 500)
        call.status = resp.status
        self._send(resp)

    def _send(self, resp: Response) -> None:
        sim = self.simulator
        streamed = not isinstance(resp.body, (bytes, bytearray))
        chunked = streamed and resp.length is None
        cut = sim._take_cut() if resp.download else None
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            length = resp.length if streamed else len(resp.body)  # type: ignore[arg-type]
            self.send_header("Content-Length", str(length))
        self.end_headers()
        chunks: Iterable[bytes] = resp.body if streamed else [bytes(resp.body)]  # type: ignore[list-item]
        sent = 0
        try:
            for chunk in chunks:
                if cut is not None and sent + len(chunk) > cut:
                    # Send what fits and drop the connection: the client sees a truncated body.
                    self._write(chunk[: max(cut - sent, 0)], chunked)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._write(chunk, chunked)
                sent += len(chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if resp.on_complete is not None:
            resp.on_complete()

    def _write(self, chunk: bytes, chunked: bool) -> None:
        if not chunk:
            return
        if chunked:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        else:
            self.wfile.write(chunk)

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
