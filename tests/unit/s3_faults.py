"""An S3 client wrapper that fails chosen calls, shared by the store and archive-store tests. Thread-safe:
core/archive_store.py sends parts from several threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, status: int = 500, operation: str = "S3") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FaultyS3:
    """Wraps an S3 client: records calls and part sizes. `fail(name, ...)` makes chosen calls of one
    operation raise: before the call reaches S3, or after it went through (`lost=True`: the answer is lost).

    `calls` lists the operations in the order they were made; `events` lists ("start" | "end", operation,
    PartNumber or None) as calls begin and return (or raise), so a test can tell what overlapped and what
    ended before what. `part_sizes` are the UploadPart body sizes in part-number order (a retried part
    appears once per attempt)."""

    def __init__(self, client: Any):
        self._client = client
        self._faults: dict[str, tuple[set[int] | None, Callable[[], BaseException], bool, int | None]] = {}
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self.calls: list[str] = []
        self.events: list[tuple[str, str, int | None]] = []
        self._part_sizes: list[tuple[int, int]] = []

    @property
    def part_sizes(self) -> list[int]:
        with self._lock:
            return [size for _, size in sorted(self._part_sizes, key=lambda p: p[0])]

    def fail(
        self,
        name: str,
        on: Iterable[int] | None = (1,),
        error: Callable[[], BaseException] | None = None,
        lost: bool = False,
        part: int | None = None,
    ) -> FaultyS3:
        """Calls number `on` (1-based; None: every call) of `name` raise `error()` (default InternalError).
        With `part`, only calls for that PartNumber count (and fail): a part's attempts, whatever the
        threads' order."""
        self._faults[name] = (
            set(on) if on is not None else None,
            error or (lambda: client_error("InternalError")),
            lost,
            part,
        )
        return self

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method) or name == "get_paginator":
            return method

        def call(**kwargs: Any) -> Any:
            number: int | None = kwargs.get("PartNumber")
            fault = self._faults.get(name)
            failing, before, error = False, False, None
            with self._lock:
                self.calls.append(name)
                self.events.append(("start", name, number))
                if fault is not None and (fault[3] is None or fault[3] == number):
                    self._counts[name] = self._counts.get(name, 0) + 1
                    failing = fault[0] is None or self._counts[name] in fault[0]
                    before, error = failing and not fault[2], fault[1]
                if name == "upload_part" and not before:  # a part refused before S3 was never sent
                    self._part_sizes.append((int(kwargs["PartNumber"]), len(kwargs["Body"])))
            try:
                if before and error is not None:
                    raise error()
                result = method(**kwargs)
                if failing and error is not None:
                    raise error()
                return result
            finally:
                with self._lock:
                    self.events.append(("end", name, number))

        return call
