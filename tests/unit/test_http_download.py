"""Download links a vendor hands out: https only, never into our own network (checked by name and by the
address actually connected to), at most 3 redirects, credentials only on the vendor's own origin."""

from __future__ import annotations

import socket

import pytest
import requests
from requests.adapters import BaseAdapter
from test_http_client import RawServer, client, reply

from core.errors import VendorError, VendorTransientError
from core.http import check_download_url

PUBLIC_BASE = "https://api.vendor.example"
PUBLIC_IP = "93.184.216.34"
CREDENTIALS = {"x-api-token": "t-1", "Api-Key": "k-1"}


def resolver(table: dict[str, list[str]]):
    """A getaddrinfo stand-in answering from `table` (unknown names do not resolve)."""

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port or 443))
            for ip in table[host]
        ]

    return resolve


NAMES = resolver(
    {
        "api.vendor.example": [PUBLIC_IP],
        "files.vendor.example": [PUBLIC_IP, "2606:2800:220:1::1"],
        "internal.vendor.example": ["10.1.2.3"],
        "mixed.vendor.example": [PUBLIC_IP, "192.168.1.7"],
        "metadata.vendor.example": ["169.254.169.254"],
        "v6local.vendor.example": ["fd00::7"],
    }
)


def check(url: str, base: str = PUBLIC_BASE) -> None:
    check_download_url(url, base, vendor="acme", call="archive download", resolve=NAMES)


# --- check_download_url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://files.vendor.example/a.zip?token=s3cr3t", "ftp://files.vendor.example/a.zip", "file:///etc/passwd"]
)
def test_a_link_that_is_not_https_is_refused(url):
    with pytest.raises(VendorError) as err:
        check(url)
    assert str(err.value) == "acme: archive download link is not https"


def test_http_is_allowed_when_the_vendor_itself_is_http():
    check("http://127.0.0.1:8080/a.zip", base="http://127.0.0.1:8080")
    check("http://files.vendor.example/a.zip", base="http://api.vendor.example")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.zip",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/a.zip?token=s3cr3t",
        "https://[::1]/a.zip",
        "https://[::ffff:127.0.0.1]/a.zip",
        "https://[fe80::1]/a.zip",
        "https://0.0.0.0/a.zip",
        "https://224.0.0.1/a.zip",
        "https://localhost/a.zip",
        "https://internal.vendor.example/a.zip",
        "https://mixed.vendor.example/a.zip",
        "https://metadata.vendor.example/a.zip",
        "https://v6local.vendor.example/a.zip",
    ],
)
def test_a_public_vendor_cannot_link_into_a_private_network(url):
    with pytest.raises(VendorError) as err:
        check(url)
    assert str(err.value) == "acme: archive download link points to a private or loopback address"
    assert "s3cr3t" not in str(err.value) and "vendor.example" not in str(err.value)


def test_a_public_link_passes():
    check("https://files.vendor.example/exports/a.zip?token=s3cr3t")
    check(f"https://{PUBLIC_IP}/a.zip")


def test_a_link_whose_name_does_not_resolve_is_transient():
    with pytest.raises(VendorTransientError, match="link's host name does not resolve now"):
        check("https://gone.vendor.example/a.zip")


def test_a_local_vendor_may_link_to_local_addresses():
    check("http://127.0.0.1:9000/a.zip", base="http://127.0.0.1:8080")
    check("https://10.0.0.5/a.zip", base="https://10.0.0.1")


# --- download(): nothing is sent to a refused link --------------------------------------------------------


def test_a_link_into_our_network_is_never_requested():
    with RawServer(reply(200, b"zip")) as server:
        http = client(resolve=resolver({"api.vendor.example": [PUBLIC_IP], "files.vendor.example": ["127.0.0.1"]}))
        for url in (server.url + "/a.zip", f"http://files.vendor.example:{server.port}/a.zip"):
            with pytest.raises(VendorError, match="points to a private or loopback address"):
                http.download(url, call="archive download", base_url="http://api.vendor.example", headers=CREDENTIALS)
        assert server.connections == 0


def test_a_name_that_rebinds_to_a_private_address_is_refused_before_sending(monkeypatch):
    # The link check sees a public address; the connection then lands on loopback (DNS rebinding).
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1" if host == "rebind.example" else host, *a, **k)
    )
    with RawServer(reply(200, b"zip")) as server:
        http = client(resolve=resolver({"api.vendor.example": [PUBLIC_IP], "rebind.example": [PUBLIC_IP]}))
        with pytest.raises(VendorError, match="points to a private or loopback address"):
            http.download(
                f"http://rebind.example:{server.port}/a.zip",
                call="archive download",
                base_url="http://api.vendor.example",
                headers=CREDENTIALS,
            )
        assert server.requests == []


def test_a_local_vendor_link_is_downloaded():
    with RawServer(reply(200, b"PK" + b"x" * 5000, {"Content-Type": "application/zip"})) as server:
        response = client().download(server.url + "/a.zip", call="archive download", base_url=server.url)
        assert b"".join(response.iter_content(1024)) == b"PK" + b"x" * 5000
        assert server.requests[0].path == "/a.zip"


# --- download(): redirects and credentials ----------------------------------------------------------------


def test_credentials_go_only_to_the_vendors_origin_never_after_leaving_it():
    with RawServer(reply(200, b"zip", {"Content-Type": "application/zip"})) as final:
        vendor_hops = iter(["elsewhere", "final"])
        with RawServer(lambda conn, req: None) as vendor:
            with RawServer(reply(302, b"", {"Location": f"{vendor.url}/back"})) as elsewhere:

                def vendor_answer(conn, req):
                    away = next(vendor_hops) == "elsewhere"
                    target = elsewhere.url.replace("127.0.0.1", "localhost") if away else final.url
                    reply(302, b"", {"Location": target + "/landing"})(conn, req)

                vendor.answer = vendor_answer
                response = client().download(
                    vendor.url + "/export/1",
                    call="archive download",
                    base_url=vendor.url,
                    headers=CREDENTIALS,
                    auth=("user", "pass"),
                )
                response.close()
                first, back = vendor.requests
                (away,) = elsewhere.requests
    (landed,) = final.requests
    assert {"x-api-token", "api-key", "authorization"} <= set(first.headers)  # the vendor's own origin
    for seen in (away, back, landed):  # once a hop left the origin, not even the vendor gets them again
        assert not {"x-api-token", "api-key", "authorization"} & set(seen.headers)


def test_a_link_on_another_origin_gets_no_credentials_from_the_start():
    with RawServer(reply(200, b"zip")) as files:
        client().download(
            files.url + "/a.zip",
            call="archive download",
            base_url="http://localhost:1",
            headers=CREDENTIALS,
            auth=("user", "pass"),
        ).close()
        (seen,) = files.requests
    assert not {"x-api-token", "api-key", "authorization"} & set(seen.headers)


def test_more_than_three_redirects_are_refused():
    hops = iter(range(100))
    with RawServer(lambda conn, req: reply(302, b"", {"Location": f"/hop{next(hops)}"})(conn, req)) as vendor:
        with pytest.raises(VendorError) as err:
            client().download(vendor.url + "/start", call="archive download", base_url=vendor.url)
        assert len(vendor.requests) == 4
    assert str(err.value) == "acme: archive download was redirected more than 3 times; refused"
    assert err.value.status_code == 302


def test_three_redirects_are_followed():
    def answer(conn, req):
        n = int(req.path.rsplit("hop", 1)[-1] or 0) if "hop" in req.path else 0
        if n < 3:
            reply(307, b"", {"Location": f"/hop{n + 1}"})(conn, req)
        else:
            reply(200, b"done")(conn, req)

    with RawServer(answer) as vendor:
        response = client().download(vendor.url + "/start", call="archive download", base_url=vendor.url)
        assert response.content == b"done" and len(vendor.requests) == 4


class CannedAdapter(BaseAdapter):
    """Answers every request with a redirect to `location`, recording what was asked."""

    def __init__(self, location: str):
        super().__init__()
        self.location, self.urls = location, []

    def send(self, request, **kwargs):
        self.urls.append(request.url)
        response = requests.Response()
        response.status_code, response.url, response.request = 302, request.url, request
        response.headers["Location"] = self.location
        response.raw = None
        response._content, response._content_consumed = b"", True
        return response

    def close(self):
        pass


@pytest.mark.parametrize(
    "location, rule",
    [
        ("https://10.0.0.5/a.zip", "points to a private or loopback address"),
        ("http://cdn.vendor.example/a", "is not https"),
    ],
)
def test_every_redirect_hop_is_checked_before_it_is_requested(location, rule):
    http = client(resolve=NAMES)
    adapter = CannedAdapter(location)
    http.session.mount("https://", adapter)
    with pytest.raises(VendorError, match=f"archive download link {rule}"):
        http.download(PUBLIC_BASE + "/exports/1", call="archive download", base_url=PUBLIC_BASE)
    assert adapter.urls == [PUBLIC_BASE + "/exports/1"]


def test_a_redirect_without_a_location_is_refused():
    with RawServer(reply(302)) as vendor:
        with pytest.raises(VendorError, match=r"answered a redirect \(HTTP 302\) without a location"):
            client().download(vendor.url, call="archive download", base_url=vendor.url)
