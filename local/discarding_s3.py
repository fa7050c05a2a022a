"""An S3 client that sends nothing: a real botocore client whose HTTP send is replaced, bodies are drained
block by block and dropped, answers are canned. For measuring what a Lambda holds while streaming an archive.

Why not moto: moto keeps every part and assembles the whole object in Python memory on
CompleteMultipartUpload, which a memory measurement would count against the code under test. This stand-in
keeps everything that runs in Lambda (our buffering, botocore's serialisation and checksum trailer) and drops
only the storage, which S3 does on its side.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.read()


class DiscardingS3:
    def __init__(self, region: str = "eu-west-1") -> None:
        # Dummy credentials: the signer wants some; nothing leaves the process.
        self.client = boto3.client(
            "s3", region_name=region, aws_access_key_id="discard", aws_secret_access_key="discard"
        )
        self.received = 0  # decoded part bytes drained so far
        self._lock = threading.Lock()  # parts arrive from several uploader threads (core/archive_store.py)
        events = self.client.meta.events
        # botocore-stubs types every handler as returning None; a before-send handler returns the answer.
        events.register("before-send.s3.CreateMultipartUpload", self._create)  # type: ignore[arg-type]  # see above
        events.register("before-send.s3.UploadPart", self._part)  # type: ignore[arg-type]  # see above
        events.register("before-send.s3.CompleteMultipartUpload", self._complete)  # type: ignore[arg-type]  # see above

    @staticmethod
    def _answer(request: Any, body: bytes = b"", headers: dict[str, str] | None = None) -> AWSResponse:
        return AWSResponse(request.url, 200, headers or {}, _Raw(body))  # type: ignore[arg-type]  # any mapping works

    def _create(self, request: Any, **_: Any) -> AWSResponse:
        return self._answer(
            request, b"<InitiateMultipartUploadResult><UploadId>u-1</UploadId></InitiateMultipartUploadResult>"
        )

    def _part(self, request: Any, **_: Any) -> AWSResponse:
        while request.body.read(256 * 1024):  # drain like a socket would, block by block
            pass
        with self._lock:
            self.received += int(request.headers["X-Amz-Decoded-Content-Length"])
        return self._answer(request, headers={"ETag": '"part"'})

    def _complete(self, request: Any, **_: Any) -> AWSResponse:
        return self._answer(
            request, b'<CompleteMultipartUploadResult><ETag>"whole"</ETag></CompleteMultipartUploadResult>'
        )
