"""Every Lambda function of dsrflow, once: its name (the role), its handler and what it does.

infra/functions.py deploys one function per entry (adding memory, timeout and access per name), the local
engine (local/engine.py) creates the same functions in moto, and ARCHITECTURE.md's table is checked against
this list by tests/infra/test_infra_functions.py.
"""

from __future__ import annotations

from typing import NamedTuple


class Handler(NamedTuple):
    handler: str  # module.attribute under functions/
    description: str


HANDLERS: dict[str, Handler] = {
    "intake": Handler("handlers.intake.handler", "API and CRM events: validate, store, start; the operator routes"),
    "submit": Handler("handlers.submit.handler", "Submit one vendor job"),
    "check": Handler("handlers.check.handler", "Check one vendor job"),
    "collect": Handler("handlers.collect.handler", "Stream a vendor's archives to S3"),
    "package": Handler("handlers.package.handler", "Build the access package: one zip per request for the subject"),
    "finalize": Handler("handlers.finalize.handler", "Write the manifest, notify the CRM"),
    "approval": Handler("handlers.approval.handler", "Hold a vendor action for a person's decision (task token)"),
    "park": Handler(
        "handlers.park.handler", "Park a vendor action in its vendor's queue (task token) until a slot is handed to it"
    ),
    "callback": Handler(
        "handlers.callback.handler", "GET /callbacks/{token}: a vendor says its job is done; wakes the waiting branch"
    ),
    "record": Handler("handlers.record.handler", "Record a vendor action that failed, was denied or timed out"),
    "bulk": Handler(
        "handlers.bulk.handler",
        "Bulk intake: start a batch from bulk/incoming/, index its lines, write the result file",
    ),
    "bulk_item": Handler(
        "handlers.bulk_item.handler", "Bulk intake, one line: validate and start it as POST /requests"
    ),
    "sweep": Handler(
        "handlers.sweep.handler", "Deadline watch: warn before a deadline, count open, due-soon and overdue requests"
    ),
}

__all__ = ["HANDLERS", "Handler"]
