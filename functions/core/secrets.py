"""Vendor credentials from Secrets Manager, through Powertools' parameters utility (cached per container)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities import parameters

from core.errors import ConfigError
from core.settings import settings

_KNOWN_CODES = ("ResourceNotFoundException", "AccessDeniedException", "DecryptionFailure", "InvalidRequestException")


def vendor_credentials(vendor: str) -> Any:
    """The vendor's credentials JSON (text), for `registry.build` to validate. Values are never logged."""
    secret_id = settings().vendor_secrets.get(vendor)
    if not secret_id:
        raise ConfigError(vendor, "VENDOR_SECRETS", "has no secret for this vendor: it is not enabled")
    try:
        value = parameters.get_secret(secret_id, max_age=settings().secrets_max_age)
    except parameters.exceptions.GetParameterError as exc:
        # Powertools keeps only the SDK's message: "An error occurred (Code) when calling ...".
        code = next((c for c in _KNOWN_CODES if c in str(exc)), "see the function's permissions and the secret")
        if code == "ResourceNotFoundException":
            problem = (
                f"secret {secret_id} holds no value yet (or does not exist): put the vendor's credentials JSON into it"
            )
        else:
            problem = f"secret {secret_id} could not be read ({code})"
        raise ConfigError(vendor, "(secret)", problem) from None
    return value


def clear_cache() -> None:
    parameters.clear_caches()
