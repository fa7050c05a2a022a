"""Task: "Wait for a vendor slot" (logic in core.tasks.park): keep the branch's task token in the vendor's queue.

Invoked with {"state", "token"} (`.waitForTaskToken`): what it returns is ignored; the branch resumes when a
freed slot is handed to it (core/limits.py wakes it) or when its wait times out.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from core import tasks
from core.models import StepState
from core.tasks import Runtime
from handlers.observability import job_task


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token = event.get("token") if isinstance(event, dict) else None

    def park(task: StepState, rt: Runtime) -> dict[str, Any]:
        return tasks.park(task, rt, token=token if isinstance(token, str) else None)

    return job_task(park)((event.get("state") if isinstance(event, dict) else None) or {}, context)
