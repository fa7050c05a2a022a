"""Task: the approval gate (logic in core.tasks.ask_approval and core.tasks.hold_for_approval).

"Ask for approval" invokes it with the step state; "Await approval" invokes it with {"state", "token"}
(`.waitForTaskToken`): what it returns then is ignored, the workflow waits for the approve/deny route.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core import tasks
from core.models import StepState
from core.tasks import Runtime
from handlers.observability import job_task

ask = job_task(tasks.ask_approval)


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and "token" in event:
        token = event.get("token")

        def hold_for_approval(task: StepState, rt: Runtime) -> dict[str, Any]:
            return tasks.hold_for_approval(task, rt, token=token if isinstance(token, str) else None)

        return job_task(hold_for_approval)(event.get("state") or {}, context)
    return ask(event, context)
