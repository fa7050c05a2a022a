"""The API's OpenAPI document, generated from the routes handlers/intake.py declares (Powertools).

`docs/openapi.json` is this document, committed: `make openapi` (`python -m local openapi`) rewrites it and
tests/unit/test_openapi.py fails while the committed file differs from what the code declares. API Gateway's
resources, methods and request validation are built from the committed file (infra/triggers.py).

Adjusted after Powertools generates it, because the API answers otherwise than Powertools' defaults: its
validation errors are the routes' documented 400 (`InvalidBody`), never Powertools' 422 (the 422 responses and
their HTTPValidationError/ValidationError/ResponseValidationError schemas are dropped); and POST /requests/bulk
reads its body itself (JSON Lines is not one JSON value, so Powertools cannot declare it): its requestBody is
added here, as `application/x-ndjson` text whose lines are DsrRequest objects.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, Server, ServerVariable

# The API's version (the document's info.version): bump the minor for an added route or optional field, the
# major for anything an existing caller would notice.
API_VERSION = "1.2.1"
TITLE = "dsrflow"
SECURITY_SCHEME = "sigv4"
_POWERTOOLS_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")

DESCRIPTION = (
    "Submit and follow GDPR data-subject requests, and act on them as an operator (approve, deny, retry, "
    "cancel, extend), and get a link to a request's access package. Every call is signed with AWS Signature "
    "Version 4 (IAM): the caller's IAM principal is who approved, denied, retried, cancelled, extended or got a "
    "link. A bad request is a 4xx naming what is wrong, never its value."
)


BULK_PATH = "/requests/bulk"
JSON_LINES = "application/x-ndjson"


def _bulk_body() -> dict[str, Any]:
    from core.bulk import MAX_BATCH_BYTES, MAX_BATCH_LINES

    return {
        "required": True,
        "description": f"JSON Lines: one request per line, each a `DsrRequest` object as POST /requests takes it; at "
        f"most {MAX_BATCH_LINES} lines and {MAX_BATCH_BYTES // (1024 * 1024)} MiB. Blank lines are skipped.",
        "content": {
            JSON_LINES: {
                "schema": {"type": "string", "maxLength": MAX_BATCH_BYTES},
                "example": '{"actions": ["export"], "subject": {"email": "ada@example.com"}}\n',
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API, as a JSON value."""
    from handlers.intake import app

    sigv4 = APIKey.model_validate(
        {
            "type": "apiKey",
            "in": APIKeyIn.header,
            "name": "Authorization",
            "description": "AWS Signature Version 4 (IAM authorization: execute-api:Invoke on the method)",
            "x-amazon-apigateway-authtype": "awsSigv4",
        }
    )
    server = Server(
        url="https://{api_id}.execute-api.{region}.amazonaws.com/{stage}",
        description="A deployed stage (the stack's ApiUrl output)",
        variables={
            "api_id": ServerVariable(default="api-id"),
            "region": ServerVariable(default="eu-west-1"),
            "stage": ServerVariable(default="dev"),
        },
    )
    text = app.get_openapi_json_schema(
        title=TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        servers=[server],
        security_schemes={SECURITY_SCHEME: sigv4},
        security=[{SECURITY_SCHEME: []}],
    )
    doc: dict[str, Any] = json.loads(text)
    bulk = doc["paths"][BULK_PATH]["post"]
    if "requestBody" in bulk:  # Powertools declared one after all (an upgrade, or a Body parameter): look first
        raise AssertionError(f"POST {BULK_PATH} already has a requestBody")
    bulk["requestBody"] = _bulk_body()
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _POWERTOOLS_SCHEMAS:
        schemas.pop(name, None)
    left = json.dumps(doc)
    dangling = [name for name in _POWERTOOLS_SCHEMAS if f"#/components/schemas/{name}" in left]
    if dangling:  # a Powertools upgrade that refers to them elsewhere: look before dropping more
        raise AssertionError(f"the OpenAPI document still refers to {dangling}")
    return doc


def render() -> str:
    """docs/openapi.json's exact text."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"
