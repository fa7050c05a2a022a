"""Task: collect one vendor job (logic in core.tasks.collect)."""

from core import tasks
from handlers.observability import job_task

handler = job_task(tasks.collect)
