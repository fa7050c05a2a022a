"""Named error types.

A Lambda error reaches Step Functions as the exception's class name, so these names are part of the
workflow contract: the ASL retries the transient ones and catches the rest. Messages are written for a
DPO reading the manifest or the console ("elevate: job ca24… reports not_found"), and must never carry a
secret, an email or a customer key.
"""

from __future__ import annotations


class DsrError(Exception):
    """Base of every error dsrflow raises on purpose."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(DsrError):
    """A vendor's credentials or the deployment's settings are missing or malformed. Not retried."""

    def __init__(self, vendor: str, field: str, problem: str):
        super().__init__(f"{vendor}: configuration field '{field}' {problem}")
        self.vendor = vendor
        self.field = field


class VendorError(DsrError):
    """The vendor refused or failed the job for good (4xx, a failed status, success: false). Not retried."""

    def __init__(self, vendor: str, message: str, status_code: int | None = None):
        super().__init__(f"{vendor}: {message}")
        self.vendor = vendor
        self.status_code = status_code


class VendorAuthError(VendorError):
    """The vendor rejected our credentials (401/403): fix the secret, then re-run the request."""


class VendorTransientError(DsrError):
    """The vendor is unreachable or overloaded even after in-call retries. Retried by the workflow."""

    def __init__(self, vendor: str, message: str):
        super().__init__(f"{vendor}: {message}")
        self.vendor = vendor


class ArchiveTransferError(DsrError):
    """An archive download broke off or did not match its announced length; nothing was stored."""


class UnsupportedAction(DsrError):
    """The vendor's connector does not offer this action."""


class DeadlineExceeded(DsrError):
    """A vendor job did not finish before its deadline."""


# Error names the workflow retries with backoff (see statemachines/dsr.asl.json).
TRANSIENT_ERRORS = ("VendorTransientError", "ArchiveTransferError")
