"""The API client: one HTTP call, SigV4-signed unless the API is on loopback (`python -m local serve`).

A deployed API takes IAM-signed callers only (API Gateway's IAM authorization): every call to a non-loopback
URL is signed with botocore's SigV4 signer (service `execute-api`), with the credentials of a boto3 session
(AWS_PROFILE, SSO, environment, instance role). The region is the one in the URL
(`<id>.execute-api.<region>.amazonaws.com`), else the session's. A loopback URL is the local server, which
checks no signature: nothing is signed and no credentials are read; `principal` goes in X-Dsrflow-Principal.

`Api.download` fetches a presigned link the API handed out (the access package): the link carries its own
signature, so it gets no SigV4 header and none of the API's headers; https only (plain http to loopback only:
the local server's relay). It streams into a temporary `<name>.<random>.part` file beside the target, checks
the byte count and the sha256 the API stated, and only then renames it to `<name>`; on any failure the
temporary file is removed, so no half-written or unverified file is ever left under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

PRINCIPAL_HEADER = "X-Dsrflow-Principal"
_REGION_IN_URL = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")
TIMEOUT = (5.0, 60.0)  # connect, read
CREDENTIALS_HINT = "sign in again (aws sso login, or check AWS_PROFILE / the AWS_* variables)"
DOWNLOAD_CHUNK = 1024 * 1024
_S3_CODE = re.compile(r"<Code>([A-Za-z0-9.]{1,64})</Code>")


class CliError(Exception):
    """What ends a command: a one-line message and the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.message, self.code = message, code


class Unreachable(CliError):
    """The API could not be called: no connection, no credentials (exit 3)."""

    def __init__(self, message: str):
        super().__init__(message, 3)


class ApiError(CliError):
    """The API answered 4xx or 5xx (exit 1); `body` is its JSON answer."""

    def __init__(self, status: int, body: Any):
        super().__init__(describe_error(status, body), 1)
        self.status, self.body = status, body


class DownloadFailed(CliError):
    """A download was refused, broke off, or did not match the size and sha256 the API stated (exit 5)."""

    def __init__(self, message: str):
        super().__init__(message, 5)


def describe_error(status: int, body: Any) -> str:
    """The API's own words: `message`, or each field problem of a 400."""
    if not isinstance(body, dict):
        return f"HTTP {status}"
    lines = []
    said = body.get("message") or body.get("Message")
    error = body.get("error")
    if said:
        lines.append(f"{said} (HTTP {status}{', ' + error if error else ''})")
    elif error:
        lines.append(f"{error} (HTTP {status})")
    else:
        lines.append(f"HTTP {status}")
    for problem in body.get("fields") or []:
        if isinstance(problem, dict):
            lines.append(f"  {problem.get('field')}: {problem.get('message')}")
    return "\n".join(lines)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _session(profile: str | None, region: str | None) -> Any:
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:  # an unknown profile
        raise Unreachable(f"AWS session: {exc}") from None


def stack_api_url(stack: str, profile: str | None = None, region: str | None = None) -> str:
    """The `ApiUrl` output of a deployed stack (infra/stack.py)."""
    from botocore.exceptions import BotoCoreError, ClientError

    session = _session(profile, region)
    try:
        described = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if "expired" in str(error.get("Code", "")).casefold() or "token" in str(error.get("Code", "")).casefold():
            raise Unreachable(f"AWS credentials: {error.get('Message') or exc}; {CREDENTIALS_HINT}") from None
        raise Unreachable(f"stack {stack}: {error.get('Message') or exc}") from None
    except BotoCoreError as exc:  # no credentials, an expired SSO token, no region, no connection
        raise Unreachable(f"stack {stack}: {exc}; {CREDENTIALS_HINT}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    if "ApiUrl" not in outputs:
        raise Unreachable(f"stack {stack} has no ApiUrl output (is it a dsrflow stack?)")
    return str(outputs["ApiUrl"])


class Api:
    """Calls to one API base URL (a deployed stage's `ApiUrl`, or the local server's)."""

    def __init__(
        self,
        base_url: str,
        *,
        principal: str | None = None,
        session_factory: Callable[[], Any] | None = None,
        send: Callable[..., requests.Response] | None = None,
        fetch: Callable[..., requests.Response] | None = None,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"--api {base_url!r}: want an http(s) URL, e.g. http://127.0.0.1:8080", 2)
        if parts.scheme == "http" and not is_loopback(base_url):
            raise CliError(f"--api {base_url}: plain http only to loopback (the local server); use https", 2)
        self.base_url = base_url.rstrip("/")
        self.local = is_loopback(base_url)
        self.principal = principal
        self._session_factory = session_factory or (lambda: _session(None, None))
        self._session: Any = None
        self._send = send or requests.request
        self._fetch = fetch or requests.get

    def url(self, path: str, query: Mapping[str, str | int] | None = None) -> str:
        # RFC 3986 encoding of every query value: what SigV4 canonicalizes, byte for byte as sent.
        qs = urlencode(sorted((k, str(v)) for k, v in (query or {}).items()), quote_via=quote, safe="")
        return self.base_url + path + (f"?{qs}" if qs else "")

    def headers(self, method: str, url: str, data: bytes | None) -> dict[str, str]:
        """The request's headers: SigV4-signed for a deployed API, with the principal for the local one."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.local:
            if self.principal:
                headers[PRINCIPAL_HEADER] = self.principal
            return headers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import BotoCoreError

        if self._session is None:
            self._session = self._session_factory()
        try:
            credentials = self._session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except BotoCoreError as exc:  # an expired SSO token, a role that cannot be assumed
            raise Unreachable(f"AWS credentials: {exc}; {CREDENTIALS_HINT}") from None
        if frozen is None or not frozen.access_key:
            raise Unreachable(f"no AWS credentials found to sign the call: {CREDENTIALS_HINT}")
        host = urlsplit(url).hostname or ""
        found = _REGION_IN_URL.search(host)
        region = found.group(1) if found else self._session.region_name
        if not region:
            raise Unreachable(f"cannot tell the API's region from {host}: pass --region or set AWS_REGION")
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(frozen, "execute-api", region).add_auth(request)
        return dict(request.headers.items())

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str | int] | None = None,
        ok: Sequence[int] = (200, 202),
    ) -> Any:
        """The JSON answer of a call the API accepted; ApiError for any other status, Unreachable when there is
        no answer at all."""
        url = self.url(path, query)
        data = json.dumps(body).encode() if body is not None else None
        headers = self.headers(method, url, data)
        try:
            response = self._send(method, url, data=data, headers=headers, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {_reason(exc)}") from None
        try:
            answer = response.json() if response.content else None
        except ValueError:
            answer = {"message": response.text[:300].strip() or response.reason}
        if response.status_code in ok:
            return answer
        message = str((answer or {}).get("message") or "") if isinstance(answer, dict) else ""
        if response.status_code == 403 and ("token" in message.casefold() and "expired" in message.casefold()):
            raise Unreachable(f"AWS credentials: {message}; {CREDENTIALS_HINT}")
        raise ApiError(response.status_code, answer)

    def download(self, url: str, directory: Path, name: str, *, size: int, sha256: str) -> Path:
        """Fetch a presigned link into directory/name, verified (see the module doc); the final path."""
        parts = urlsplit(url)
        if not parts.hostname or (parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(url))):
            raise DownloadFailed("the API handed out a link that is not https; nothing was downloaded")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=f"{name}.", suffix=".part")
        except OSError as exc:
            raise CliError(f"--out {directory}: {exc.strerror or exc}", 2) from None
        try:
            with os.fdopen(fd, "wb") as out:
                got, digest = self._stream(url, out, size)
                out.flush()
                os.fsync(out.fileno())
            if got != size:
                raise DownloadFailed(f"the download holds {got} bytes, the API stated {size}; nothing was kept")
            if digest != sha256:
                raise DownloadFailed(
                    f"the download's sha256 is {digest}, the API stated {sha256}; nothing was kept (run it again; "
                    "if it persists, the package was replaced since its manifest was written)"
                )
            final = directory / name
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return final

    def _stream(self, url: str, out: Any, size: int) -> tuple[int, str]:
        """Copy the link's body into `out` as S3 sent it (no content decoding): (bytes, sha256)."""
        digest, got = hashlib.sha256(), 0
        # No headers of ours: the link is its own credential, and the API's signature is not for S3.
        try:
            response = self._fetch(url, stream=True, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot download the access package: {_reason(exc)}") from None
        with response:
            if response.status_code != 200:
                found = _S3_CODE.search(response.text[:4096]) if response.content else None
                code = f", {found.group(1)}" if found else ""
                hint = (
                    "; the link expired (or the credentials that signed it did): run the command again for a new one"
                    if response.status_code in (400, 403)
                    else ""
                )
                raise DownloadFailed(f"the download link was refused (HTTP {response.status_code}{code}){hint}")
            chunks = response.raw.stream(DOWNLOAD_CHUNK, decode_content=False)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception as exc:  # urllib3's ProtocolError, a read timeout, a reset connection
                    raise DownloadFailed(f"the download broke off after {got} bytes ({type(exc).__name__})") from None
                got += len(chunk)
                if got > size:
                    raise DownloadFailed(f"the download holds more than the {size} bytes the API stated")
                digest.update(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise CliError(f"cannot write the download: {exc.strerror or exc}", 2) from None
        return got, digest.hexdigest()


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or failed (is `python -m local serve` running, is the URL right?)"
    return type(exc).__name__
