"""Task: submit one vendor job (logic in core.tasks.submit)."""

from core import tasks
from handlers.observability import job_task

handler = job_task(tasks.submit)
