"""An S3 client wrapper that fails chosen calls, shared by the store and archive-store tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, status: int = 500, operation: str = "S3") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FaultyS3:
    """Wraps an S3 client: records calls and part sizes. `fail(name, ...)` makes chosen calls of one
    operation raise: before the call reaches S3, or after it went through (`lost=True`: the answer is lost)."""

    def __init__(self, client: Any):
        self._client = client
        self._faults: dict[str, tuple[set[int] | None, Callable[[], BaseException], bool]] = {}
        self.calls: list[str] = []
        self.part_sizes: list[int] = []

    def fail(
        self,
        name: str,
        on: Iterable[int] | None = (1,),
        error: Callable[[], BaseException] | None = None,
        lost: bool = False,
    ) -> FaultyS3:
        """Calls number `on` (1-based; None: every call) of `name` raise `error()` (default InternalError)."""
        self._faults[name] = (
            set(on) if on is not None else None,
            error or (lambda: client_error("InternalError")),
            lost,
        )
        return self

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method) or name == "get_paginator":
            return method

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            fault = self._faults.get(name)
            failing = fault is not None and (fault[0] is None or self.calls.count(name) in fault[0])
            if failing and not fault[2]:
                raise fault[1]()
            if name == "upload_part":
                self.part_sizes.append(len(kwargs["Body"]))
            result = method(**kwargs)
            if failing:
                raise fault[1]()
            return result

        return call
