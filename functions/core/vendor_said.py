"""The one place a vendor's own words are kept: an encrypted per-request object that expires with the request.

    requests/{request_id}/{vendor}/{action}/vendor-said/{step}-{UTC time}-{n}.json

It holds what the allow-list keeps out of every other record: error bodies, undocumented status words, the
shape complaints about a vendor's answer. A DPO reads it (it may hold the subject's data, echoed by the
vendor) to act on a failure; the manifest lists the keys for the failed action. It lives under `requests/`,
so the bucket's lifecycle expires it with the request data, and it is SSE-KMS like everything there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from core.clock import utcnow

if TYPE_CHECKING:
    from core.store import Store

log = logging.getLogger(__name__)

MAX_ENTRIES = 20  # per object: a misbehaving vendor cannot grow it without bound


def prefix(request_id: str, vendor: str, action: str) -> str:
    return f"requests/{request_id}/{vendor}/{action}/vendor-said/"


def keep(store: Store, request_id: str, vendor: str, action: str, step: str, said: list[tuple[str, str]]) -> str | None:
    """Write `said` (what, text) pairs; returns the key, or None when there was nothing to keep.

    Never raises: losing the vendor's words must not lose the vendor's result (the message that goes on
    says what happened in allow-listed words anyway). A failure is logged without the words.
    """
    if not said:
        return None
    now = utcnow()
    key = f"{prefix(request_id, vendor, action)}{step}-{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
    payload: dict[str, Any] = {
        "request_id": request_id,
        "vendor": vendor,
        "action": action,
        "step": step,
        "at": now.isoformat(),
        "said": [{"what": what, "text": text} for what, text in said[:MAX_ENTRIES]],
        "dropped": max(len(said) - MAX_ENTRIES, 0),
    }
    try:
        store.put_json(key, payload)
    except Exception as exc:
        log.warning("could not keep the vendor's words", extra={"vendor": vendor, "error": type(exc).__name__})
        return None
    return key


def keys(store: Store, request_id: str, vendor: str, action: str) -> list[str]:
    """The objects kept for one vendor action, oldest first (keys sort by time)."""
    try:
        return store.list_keys(prefix(request_id, vendor, action))
    except Exception as exc:
        log.warning("could not list the vendor's words", extra={"vendor": vendor, "error": type(exc).__name__})
        return []
