"""Task: check one vendor job (logic in core.tasks.check)."""

# Every call builds a connector: its modules load here, at init with the rest of the cold start, not in the first
# call (handlers.runtime.connector_for imports them late, for the handlers that never build one).
import connectors.registry  # noqa: F401
import core.secrets  # noqa: F401
from core import tasks
from handlers.observability import job_task, trace_vendor_http

trace_vendor_http()
handler = job_task(tasks.check)
