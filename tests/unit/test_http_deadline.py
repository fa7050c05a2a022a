"""Every vendor call ends within its budget and within the Lambda's time: the watchdog cuts a vendor that
drips bytes (headers or body, http or https), and `invocation_deadline` keeps tries and retry sleeps inside
the invocation."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time

import pytest
from test_http_client import RawServer, client, in_turn, reply, response_bytes

from core.errors import ArchiveTransferError, VendorTransientError
from core.http import checked_chunks, content_length, invocation_deadline, remaining_seconds


def drip_body(length: int = 50, every: float = 0.3, announce: bool = True):
    """Headers at once, then one body byte every `every` seconds (until the client goes away)."""

    def answer(conn, req):
        if announce:
            conn.sendall(response_bytes(200, b"", {"Content-Length": str(length)}))
        else:  # a body that ends when the connection closes
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nConnection: close\r\n\r\n")
        for _ in range(length):
            time.sleep(every)
            conn.sendall(b"1")

    return answer


def drip_headers(conn, req):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    for _ in range(100):
        time.sleep(0.3)
        conn.sendall(b"X-Slow: " if _ == 0 else b"z")


def never(conn, req):
    time.sleep(15)  # accepts, reads, never answers (the test ends long before)


def timer_threads() -> list[threading.Thread]:
    for _ in range(50):
        alive = [t for t in threading.enumerate() if t.name == "dsrflow-http-deadline" and t.is_alive()]
        if not alive:
            return []
        time.sleep(0.02)
    return alive


# --- 5. the per-call deadline -------------------------------------------------------------------------------


def test_a_dripping_body_is_cut_near_the_call_budget():
    with RawServer(drip_body()) as server:
        started = time.monotonic()
        with pytest.raises(VendorTransientError) as err:
            client(call_budget=1.0, timeout=(1.0, 5.0)).json("GET", server.url, call="job status")
        elapsed = time.monotonic() - started
        assert len(server.requests) == 1  # a vendor this slow is not asked again in the same call
    assert 0.9 < elapsed < 1.8
    assert str(err.value) == "acme: job status did not finish within 1s (the vendor answered too slowly)"
    assert err.value.ambiguous is False


def test_dripping_headers_are_cut_near_the_call_budget():
    with RawServer(drip_headers) as server:
        started = time.monotonic()
        with pytest.raises(VendorTransientError, match="did not finish within 1s"):
            client(call_budget=1.0, timeout=(1.0, 5.0)).json("GET", server.url)
        assert 0.9 < time.monotonic() - started < 1.8


def test_a_dripping_job_creation_is_cut_and_ambiguous():
    with RawServer(drip_body()) as server:
        with pytest.raises(VendorTransientError) as err:
            client(call_budget=1.0, timeout=(1.0, 5.0)).json(
                "POST", server.url, call="job creation", creates_job=True, json={}
            )
        assert len(server.requests) == 1
    assert err.value.ambiguous is True
    assert "failed after the request was sent (no complete answer within 1s)" in str(err.value)


def test_a_normal_call_is_not_affected_and_leaves_no_timer_behind():
    def slowish(conn, req):
        time.sleep(0.4)
        reply(200, {"ok": True})(conn, req)

    with RawServer(slowish) as server:
        http = client(call_budget=1.0)
        for _ in range(2):
            assert http.json("GET", server.url) == {"ok": True}
        # A long budget: a timer left running after the call would still be alive below.
        http = client(call_budget=30.0)
        assert http.json("GET", server.url) == {"ok": True}
        assert http.request("GET", server.url).json() == {"ok": True}
    assert timer_threads() == []


def test_the_client_works_again_after_a_cut_on_the_same_host():
    with RawServer(in_turn(drip_body(), reply(200, {"ok": True}))) as server:
        http = client(call_budget=1.0, timeout=(1.0, 5.0))
        with pytest.raises(VendorTransientError, match="did not finish"):
            http.json("GET", server.url + "/a")
        assert http.json("GET", server.url + "/b") == {"ok": True}
    with RawServer(reply(200, {"other": True})) as other:
        assert http.json("GET", other.url) == {"other": True}


def test_a_streamed_body_has_its_own_budget():
    with RawServer(drip_body(length=100, every=0.1)) as server:
        http = client(call_budget=0.5, stream_budget=1.0, timeout=(1.0, 5.0))
        response = http.request("GET", server.url, stream=True)  # headers at once: within call_budget
        started = time.monotonic()
        with pytest.raises(ArchiveTransferError) as err:
            for _ in checked_chunks(response, "acme: the archive", content_length(response), 1):
                pass
        assert time.monotonic() - started < 1.5
    assert "acme: the archive was cut off after" in str(err.value)
    assert "it did not finish within its time budget; nothing was stored" in str(err.value)


def test_a_cut_body_without_a_length_does_not_pass_for_complete():
    # After the socket is shut down such a body just ends: the reader must still hear it was cut.
    with RawServer(drip_body(length=100, every=0.1, announce=False)) as server:
        http = client(stream_budget=0.6, timeout=(1.0, 5.0))
        response = http.request("GET", server.url, stream=True)
        assert content_length(response) is None
        with pytest.raises(ArchiveTransferError, match="was cut off after"):
            b"".join(checked_chunks(response, "acme: the archive", None, 1))


def test_dripping_headers_of_a_stream_are_bounded_by_the_call_budget():
    with RawServer(drip_headers) as server:
        started = time.monotonic()
        with pytest.raises(VendorTransientError, match="did not finish within 1s"):
            client(call_budget=1.0, timeout=(1.0, 5.0)).request("GET", server.url, stream=True)
        assert time.monotonic() - started < 1.8


def test_a_stream_read_to_the_end_or_closed_stops_its_watchdog():
    with RawServer(reply(200, b"x" * 10_000, {"Content-Type": "application/zip"})) as server:
        http = client(stream_budget=30.0)
        whole = http.request("GET", server.url, stream=True)
        assert len(b"".join(whole.iter_content(1000))) == 10_000
        closed = http.request("GET", server.url, stream=True)
        closed.close()
        assert timer_threads() == []


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the CA file to trust it."""
    import ipaddress
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    directory = tempfile.mkdtemp()
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_the_watchdog_cuts_a_dripping_https_vendor_too(tls):
    context, ca = tls
    with RawServer(drip_body(), tls=context) as server:
        http = client(call_budget=1.0, timeout=(1.0, 5.0))
        started = time.monotonic()
        with pytest.raises(VendorTransientError, match="did not finish within 1s"):
            http.json("GET", server.url, verify=ca)
        assert 0.9 < time.monotonic() - started < 1.8
    with RawServer(reply(200, {"ok": True}), tls=context) as server:
        assert http.json("GET", server.url, verify=ca) == {"ok": True}


def test_a_dripping_tls_handshake_is_cut_too(tls):
    # CPython bounds a whole handshake by the socket timeout (here the connect timeout, capped to the try's
    # budget); the watchdog, which sees the socket before the handshake, is the second bound.
    context, ca = tls

    class DripHandshake(RawServer):
        """Does a real TLS handshake in memory and sends its bytes one every 0.2 s."""

        def _serve(self, conn):
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls_object = context.wrap_bio(incoming, outgoing, server_side=True)
            try:
                while not self.stopped.is_set():
                    try:
                        tls_object.do_handshake()
                    except ssl.SSLWantReadError:
                        pass
                    for byte in outgoing.read():
                        time.sleep(0.2)
                        conn.sendall(bytes([byte]))
                    data = conn.recv(65536)
                    if not data:
                        return
                    incoming.write(data)
            except (OSError, ssl.SSLError):
                return
            finally:
                conn.close()

    with DripHandshake(reply(200, {}), tls=context) as server:
        started = time.monotonic()
        with pytest.raises(VendorTransientError):
            client(attempts=1, call_budget=1.0, timeout=(5.0, 5.0)).json("GET", server.url, verify=ca)
        assert 0.9 < time.monotonic() - started < 1.8
        assert server.requests == []


# --- 6. the Lambda's clock ----------------------------------------------------------------------------------


def test_remaining_seconds_follows_the_invocation_with_its_margin():
    assert remaining_seconds() is None
    with invocation_deadline(300):
        assert 269 < remaining_seconds() <= 270  # margin: 10 % of 300 s
        with invocation_deadline(1000):  # a nested block never extends the outer one
            assert remaining_seconds() <= 270
    with invocation_deadline(12):
        assert 1.9 < remaining_seconds() <= 2  # margin: at least 10 s
    with invocation_deadline(None):
        assert remaining_seconds() is None
    with invocation_deadline(5):
        assert remaining_seconds() == 0
    assert remaining_seconds() is None


def test_a_call_to_a_vendor_that_never_answers_ends_inside_the_invocation():
    with RawServer(never) as server, invocation_deadline(12):
        http = client(attempts=4, timeout=(5.0, 30.0))
        started = time.monotonic()
        with pytest.raises(VendorTransientError) as err:
            http.json("GET", server.url, call="job status")
        assert time.monotonic() - started < 3
    # Two wordings of the one condition, depending on whether a retry pause was already computed: both end so.
    assert "not enough of this invocation's time left" in str(err.value)
    assert str(err.value).endswith("the workflow retries later")


def test_sequential_calls_cannot_together_outlast_the_invocation():
    with RawServer(never) as server, invocation_deadline(12):
        http = client(attempts=4, timeout=(5.0, 30.0))
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(VendorTransientError, match="not enough of this invocation's time left"):
                http.json("GET", server.url, call="job status")
        assert time.monotonic() - started < 3.5
        assert len(server.requests) == 1  # the later calls were not even tried


def test_no_try_starts_without_enough_time():
    with RawServer(reply(200, {})) as server, invocation_deadline(10.5):
        with pytest.raises(VendorTransientError) as err:
            client().json("GET", server.url, call="job status")
        assert server.requests == []
    assert str(err.value) == (
        "acme: job status was not tried: not enough of this invocation's time left; the workflow retries later"
    )


def test_a_retry_sleep_must_fit_in_the_invocation():
    sleeps: list[float] = []
    with RawServer(reply(503, {}, {"Retry-After": "5"})) as server, invocation_deadline(14):
        with pytest.raises(VendorTransientError) as err:
            client(attempts=4, sleep=sleeps.append).json("GET", server.url, call="job status")
        assert len(server.requests) == 1
    assert sleeps == []
    assert str(err.value) == (
        "acme: job status answered HTTP 503: not enough of this invocation's time left to wait 5s and try "
        "again; the workflow retries later"
    )


def test_a_retry_sleep_that_fits_is_taken():
    sleeps: list[float] = []
    with RawServer(in_turn(reply(503, {}, {"Retry-After": "1"}), reply(200, {"ok": 1}))) as server:
        with invocation_deadline(14):
            assert client(sleep=sleeps.append).json("GET", server.url) == {"ok": 1}
    assert sleeps == [1.0]
