"""Task: check one vendor job (logic in core.tasks.check)."""

from core import tasks
from handlers.observability import job_task

handler = job_task(tasks.check)
