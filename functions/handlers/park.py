"""Task: park a branch on its task token (logic in core.tasks.park and core.tasks.await_callback).

Invoked with {"state", "token"} (`.waitForTaskToken`) by "Wait for a vendor slot" (the token waits in the vendor's
queue, core/limits.py) and, with "kind": "callback", by "Await the vendor's callback" (the token waits on the
job's callback item, core/callbacks.py). What it returns is ignored: the branch resumes when it is woken or when
its wait times out.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core import tasks
from core.models import StepState
from core.tasks import Runtime
from handlers.observability import job_task


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = event if isinstance(event, dict) else {}
    raw = event.get("token")
    token = raw if isinstance(raw, str) else None

    def park(task: StepState, rt: Runtime) -> dict[str, Any]:
        return tasks.park(task, rt, token=token)

    def await_callback(task: StepState, rt: Runtime) -> dict[str, Any]:
        return tasks.await_callback(task, rt, token=token)

    step = await_callback if event.get("kind") == "callback" else park
    return job_task(step)(event.get("state") or {}, context)
