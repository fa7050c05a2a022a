"""Vendor credentials from Secrets Manager, cached per container for SECRETS_MAX_AGE seconds.

A few lines here rather than Powertools' parameters utility, which imports boto3 and its AppConfig, SSM and
DynamoDB providers into every vendor task for one GetSecretValue (issue 11, cold start). The cache keeps the
value for `max_age` seconds, so a rotated secret is picked up without a cold start.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core import aws
from core.errors import ConfigError
from core.settings import settings

_KNOWN_CODES = ("ResourceNotFoundException", "AccessDeniedException", "DecryptionFailure", "InvalidRequestException")
_values: dict[str, tuple[float, str]] = {}  # secret id -> (read at, monotonic; the value)


@cache
def _secrets_manager() -> Any:
    return aws.client("secretsmanager")


def _read(secret_id: str) -> str | None:
    """The secret's text, None where it holds only a binary value."""
    value = _secrets_manager().get_secret_value(SecretId=secret_id).get("SecretString")
    return value if isinstance(value, str) else None


def vendor_credentials(vendor: str) -> Any:
    """The vendor's credentials JSON (text), for `registry.build` to validate. Values are never logged."""
    secret_id = settings().vendor_secrets.get(vendor)
    if not secret_id:
        raise ConfigError(vendor, "VENDOR_SECRETS", "has no secret for this vendor: it is not enabled")
    now = time.monotonic()
    cached = _values.get(secret_id)
    if cached is not None and now - cached[0] < settings().secrets_max_age:
        return cached[1]
    try:
        value = _read(secret_id)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "ResourceNotFoundException":
            problem = (
                f"secret {secret_id} holds no value yet (or does not exist): put the vendor's credentials JSON into it"
            )
        else:
            shown = code if code in _KNOWN_CODES else "see the function's permissions and the secret"
            problem = f"secret {secret_id} could not be read ({shown})"
        raise ConfigError(vendor, "(secret)", problem) from None
    except BotoCoreError as exc:
        raise ConfigError(vendor, "(secret)", f"secret {secret_id} could not be read ({type(exc).__name__})") from None
    if value is None:
        raise ConfigError(
            vendor, "(secret)", f"secret {secret_id} holds a binary value: put the credentials JSON as text"
        )
    _values[secret_id] = (now, value)
    return value


def clear_cache() -> None:
    _secrets_manager.cache_clear()
    _values.clear()
