"""Named error types.

A Lambda error reaches Step Functions as the exception's class name, so these names are part of the
workflow contract: the ASL retries the transient ones and catches the rest.

Two texts per error, kept apart on purpose:
- `message` (what `str()` gives, what reaches the execution history, the manifest, logs and the CLI) is built
  from an allow-list only: fixed wording written in this code, vendor and step names, HTTP status codes,
  counts, ids the project minted or validated, and vendor status words that match the connector's documented
  vocabulary. Never a vendor's own words and never a subject's values. It is capped at MESSAGE_LIMIT.
- `detail` is what the vendor said (an error body, an undocumented status word, a pydantic complaint about
  its answer). It may hold personal data the vendor echoed, so it goes only into an encrypted per-request
  object that expires with the request data (`core.vendor_said`), never into a log or the history.
"""

from __future__ import annotations

MESSAGE_LIMIT = 600  # characters; keeps every error, and so every Catch payload, small by construction
DETAIL_LIMIT = 16 * 1024  # characters of vendor text kept per error in the private object


def cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DsrError(Exception):
    """Base of every error dsrflow raises on purpose.

    `acted`: the vendor did act although the call is a failure for us (it created a job, then answered an id
    we cannot use): the task layer counts such an attempt against the limit of one more job per action.
    """

    def __init__(self, message: str, *, detail: str | None = None, acted: bool = False):
        message = cap(message, MESSAGE_LIMIT)
        super().__init__(message)
        self.message = message
        self.detail = cap(detail, DETAIL_LIMIT) if detail else None
        self.acted = acted

    def __str__(self) -> str:
        return self.message

    def with_message(self, message: str) -> DsrError:
        """Replace the safe message in place (the handler prefixes vendor and step); returns self."""
        self.message = cap(message, MESSAGE_LIMIT)
        self.args = (self.message,)
        return self


class ConfigError(DsrError):
    """A vendor's credentials or the deployment's settings are missing or malformed. Not retried."""

    def __init__(self, vendor: str, field: str, problem: str):
        super().__init__(f"{vendor}: configuration field '{field}' {problem}")
        self.vendor = vendor
        self.field = field


class VendorError(DsrError):
    """The vendor refused or failed the job for good (4xx, a failed status, success: false). Not retried."""

    def __init__(
        self,
        vendor: str,
        message: str,
        status_code: int | None = None,
        *,
        detail: str | None = None,
        acted: bool = False,
    ):
        super().__init__(f"{vendor}: {message}", detail=detail, acted=acted)
        self.vendor = vendor
        self.status_code = status_code


class VendorAuthError(VendorError):
    """The vendor rejected our credentials (401/403): fix the secret, then re-run the request."""


class VendorTransientError(DsrError):
    """The vendor is unreachable or overloaded even after in-call retries. Retried by the workflow."""

    def __init__(self, vendor: str, message: str, *, detail: str | None = None):
        super().__init__(f"{vendor}: {message}", detail=detail)
        self.vendor = vendor


class VendorBusy(DsrError):
    """Our own per-vendor limit (core/limits.py): no call may be sent yet. Raised before anything is sent; the
    workflow waits and tries again (it is not the action's failure)."""


class ArchiveTransferError(DsrError):
    """An archive download broke off or did not match its announced length; nothing was stored."""


class ArchiveInvalid(DsrError):
    """A download arrived whole but is not what the vendor documents (not a zip that opens with every CRC
    right, not a JSON document with success: true, HTML where a zip was expected). Nothing was stored, the
    export is failed and the erase that depends on it is withheld. Not retried: the same answer would come."""


class ArchiveTooLarge(DsrError):
    """An archive exceeds what this deployment can verify (the collect function's /tmp spool limit)."""


class UnsupportedAction(DsrError):
    """The vendor's connector does not offer this action."""


class DeadlineExceeded(DsrError):
    """A vendor job did not finish before its deadline."""


class DeadlineUnreachable(DsrError):
    """The vendor cannot finish the action before the request's GDPR deadline (its documented earliest
    completion falls after it): nothing was submitted. A DPO extends the deadline, then retries."""


class DryRunViolation(DsrError):
    """A destructive vendor call was attempted during a dry run and refused before anything was sent."""


class SubmissionUncertain(DsrError):
    """A job-creating call failed ambiguously twice (the vendor may have acted without answering); dsrflow will
    not create a third job. A DPO checks the vendor's console for the job(s) and re-runs if none exists."""


class TaskCrashed(DsrError):
    """A task failed on something dsrflow did not anticipate; its message names the vendor, step and the
    exception's type only (an exception's own text may quote personal data)."""


class StoreUnavailable(DsrError):
    """S3 kept failing on a write the task depends on, after retries. Retried by the workflow."""


class EventNotDelivered(DsrError):
    """EventBridge answered PutEvents but rejected the entry (throttled, bus unavailable, not allowed): the
    CRM was not told. Retried by the workflow's Finalize state (core/events.py); rewriting the manifest on a
    retry is harmless. The message names the detail-type and AWS's error code, never the event's detail."""

    def __init__(self, detail_type: str, error_code: str, bus: str):
        super().__init__(
            f"finalize: the '{detail_type}' event was not delivered to the EventBridge bus {bus} "
            f"(EventBridge answered {error_code}); the manifest is written, the CRM has not been told yet"
        )
        self.detail_type = detail_type
        self.error_code = error_code
        self.bus = bus


class ApprovalTimedOut(DsrError):
    """No decision came before the request's deadline (the approval gate): nothing was sent to the vendor.
    Extend the deadline before it passes to keep the gate open, or retry the request to ask again."""


class ApprovalDenied(DsrError):
    """A person denied the action (POST /requests/{id}/deny): recorded as `denied`, not as a failure. The
    workflow receives it by name from SendTaskFailure; dsrflow never raises it itself."""


# Error names the workflow retries with backoff (see statemachines/dsr.asl.json).
TRANSIENT_ERRORS = ("VendorTransientError", "ArchiveTransferError", "StoreUnavailable")
