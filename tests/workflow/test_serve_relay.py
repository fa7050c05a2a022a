r"""The local API server's relay of presigned links to its in-process S3 (LocalApi over a LocalCloud, in this
process): only GET, only S3 hosts. A whole request through the CLI, package download included, is in
tests/workflow/test_serve_and_cli.py (the server in a process of its own, as an operator runs it).

The limits are probed with http.client: in this process moto's mock answers every `requests` call to a URL
holding `.amazonaws.com` (its catch-all `https?://.+\.amazonaws.com/.*` matches the relay's
`/local-s3/<host>/...` URL too), which is what the relay is for."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator

import pytest

from local.serve import RELAY_PREFIX, LocalApi
from tests.workflow.conftest import local_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[LocalApi]:
    with local_run(vendors=("bloomreach",)) as (cloud, _):
        api = LocalApi(cloud, log=False)
        threading.Thread(target=api.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        try:
            yield api
        finally:
            api.shutdown()
            api.server_close()


def _raw(server: LocalApi, method: str, path: str) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_the_relay_serves_only_get_of_an_s3_link(server):
    for path in (
        f"{RELAY_PREFIX}example.com/x",
        f"{RELAY_PREFIX}sts.amazonaws.com/?Action=GetCallerIdentity",
        f"{RELAY_PREFIX}amazonaws.com.example.org/x",
        f"{RELAY_PREFIX}bucket.s3.eu-west-1.amazonaws.com",
        f"{RELAY_PREFIX}user@bucket.s3.eu-west-1.amazonaws.com/x",
        f"{RELAY_PREFIX}bucket.s3.eu-west-1.amazonaws.com:8443/x",
    ):
        status, body = _raw(server, "GET", path)
        assert status == 404 and b"only GET of a relayed S3 link" in body, path
    s3_link = f"{RELAY_PREFIX}{server.cloud.bucket}.s3.eu-west-1.amazonaws.com/nope"
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        assert _raw(server, method, s3_link)[0] == 404, method
    # An S3 link to nothing: moto's own answer, relayed.
    status, body = _raw(server, "GET", s3_link)
    assert status == 404 and b"NoSuchKey" in body
