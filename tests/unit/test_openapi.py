"""docs/openapi.json is what the API's routes declare (functions/handlers/intake.py), and it holds every route.

When the first test fails, the code's declaration changed: run `make openapi` (python -m local openapi) and
commit docs/openapi.json with the change (API Gateway is built from that file, infra/triggers.py).
"""

from __future__ import annotations

import json
from typing import get_args

import pytest

import local.engine  # noqa: F401  # functions/ on sys.path
from local.cli import OPENAPI_DOCUMENT, openapi

ROUTES = {
    "/requests": {"get", "post"},
    "/requests/bulk": {"post"},
    "/requests/{request_id}": {"get"},
    "/requests/{request_id}/audit": {"get"},
    "/requests/{request_id}/package": {"get"},
    **{f"/requests/{{request_id}}/{a}": {"post"} for a in ("approve", "deny", "retry", "cancel", "extend")},
}


@pytest.fixture(scope="module")
def generated() -> dict:
    from handlers.openapi import document

    return document()


def test_the_committed_document_is_the_generated_one():
    from handlers.openapi import render

    committed = OPENAPI_DOCUMENT.read_text(encoding="utf-8") if OPENAPI_DOCUMENT.exists() else ""
    assert committed == render(), (
        "docs/openapi.json differs from the routes declared in functions/handlers/intake.py: "
        "run `make openapi` (python -m local openapi) and commit the file"
    )


def test_the_check_command_agrees(tmp_path, capsys):
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert openapi(check=True, path=stale) == 1
    assert "make openapi" in capsys.readouterr().err
    assert openapi(path=stale) == 0 and openapi(check=True, path=stale) == 0


def test_every_route_is_declared_with_its_methods(generated):
    assert {path: set(ops) for path, ops in generated["paths"].items()} == ROUTES


def test_info_and_sigv4_security(generated):
    assert generated["info"]["title"] == "dsrflow"
    assert generated["info"]["version"].count(".") == 2
    scheme = generated["components"]["securitySchemes"]["sigv4"]
    assert scheme["type"] == "apiKey" and scheme["in"] == "header" and scheme["name"] == "Authorization"
    assert scheme["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert generated["security"] == [{"sigv4": []}]


def test_errors_are_the_apis_not_powertools_defaults(generated):
    schemas = generated["components"]["schemas"]
    assert not {"HTTPValidationError", "ValidationError", "ResponseValidationError"} & set(schemas)
    assert schemas["InvalidBody"]["required"] == ["error", "fields"]
    for path, ops in generated["paths"].items():
        for verb, op in ops.items():
            codes = set(op["responses"])
            assert "422" not in codes, (verb, path)
            assert {"400", "500"} <= codes, (verb, path)
            if "{request_id}" in path:
                assert "404" in codes, (verb, path)
            if verb == "post" and "{request_id}/" in path:  # the operator's actions
                assert "409" in codes, (verb, path)


def test_parameters_and_bodies(generated):
    from core.models import REQUEST_ID_PATTERN
    from core.operations import MAX_PAGE

    paths = generated["paths"]
    for ops in paths.values():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["name"] == "request_id":
                    assert param["in"] == "path" and param["required"] is True
                    assert param["schema"]["pattern"] == REQUEST_ID_PATTERN
    listing = {p["name"]: p for p in paths["/requests"]["get"]["parameters"]}
    assert set(listing) == {"status", "due_before", "limit", "next_token"}
    assert listing["limit"]["schema"]["maximum"] == MAX_PAGE and listing["limit"]["schema"]["minimum"] == 1
    assert listing["next_token"]["schema"]["anyOf"][0]["maxLength"] == 2048
    statuses = listing["status"]["schema"]["anyOf"][0]["enum"]
    from core.ledger import FINISHED, RUNNING
    from handlers.intake import RequestStatus

    assert set(statuses) == set(get_args(RequestStatus)) == set(RUNNING) | set(FINISHED)
    # The body of POST /requests is the DsrRequest model, required; deny and extend require theirs.
    body = paths["/requests"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"]["required"] == ["actions", "subject"]
    for action, model in (("deny", "Denial"), ("extend", "Extension")):
        body = paths[f"/requests/{{request_id}}/{action}"]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{model}"
    for action in ("approve", "retry", "cancel"):  # may be empty
        assert not paths[f"/requests/{{request_id}}/{action}"]["post"]["requestBody"].get("required")
    assert set(paths["/requests/{request_id}/retry"]["post"]["responses"]) >= {"202"}
    assert set(paths["/requests"]["post"]["responses"]) >= {"200", "202", "409"}


def test_the_bulk_body_is_declared_as_json_lines(generated):
    from core.bulk import MAX_BATCH_BYTES

    body = generated["paths"]["/requests/bulk"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/x-ndjson"}  # not JSON: API Gateway gets no model for it
    schema = body["content"]["application/x-ndjson"]["schema"]
    assert schema == {"type": "string", "maxLength": MAX_BATCH_BYTES}
    assert "DsrRequest" in body["description"]


def test_the_document_is_plain_json():
    json.loads(OPENAPI_DOCUMENT.read_text(encoding="utf-8"))
