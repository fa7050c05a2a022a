"""API: GET /callbacks/{token}, the route a vendor calls when its job is done (logic in core/callbacks.py).

Not IAM-signed (a vendor cannot sign): the token in the path is the credential. Strict: a token not of the
exact shape is 400 before any lookup, an unknown or expired one 404; nothing else of the call is read. The
answer never echoes the token, and neither does the log (API Gateway's access log names the resource path,
`/callbacks/{token}`, not the path).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core import callbacks
from handlers.observability import logger
from handlers.runtime import callbacks as callbacks_of

ANSWERS = {
    "woken": (202, "received"),
    "recorded": (202, "received"),
    "repeated": (202, "received"),
    "unknown": (404, "unknown or expired callback"),
}


def _answer(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
        "body": json.dumps({"message": message}),
    }


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = event if isinstance(event, dict) else {}
    if event.get("httpMethod") not in ("GET", "HEAD"):
        return _answer(405, "method not allowed")
    params = event.get("pathParameters") or {}
    token = params.get("token") if isinstance(params, dict) else None
    if not isinstance(token, str) or not callbacks.valid(token):
        logger.info("callback refused", extra={"answer": "malformed"})
        return _answer(400, "malformed callback")
    book = callbacks_of()
    if book is None:
        return _answer(503, "callbacks are not configured")
    answer = book.called(token)
    logger.info("callback", extra={"answer": answer})
    status, message = ANSWERS[answer]
    return _answer(status, message)
