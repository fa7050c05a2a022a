"""Vendor callbacks: a vendor that calls a URL when its job is done (Qualifio's `callBackUrl`) wakes the waiting
branch at once instead of at its next look; polling stays as the fallback, on a long interval.

- **The token.** submit mints one per vendor job: 32 random bytes, URL-safe (43 characters), in the URL handed to
  the vendor (`<API>/callbacks/<token>`). The route is not IAM-signed (the vendor cannot sign); the token is the
  credential. Only its SHA-256 is kept: the ledger item `CALLBACK#<sha256>` (request id, vendor, action, attempt,
  expiry) and, in the job's state, the first 32 hex digits of it as the item's id. The token itself is never
  stored, logged or put in the execution history.
- **The wait.** The branch parks on "Await the vendor's callback" (a task token written to the item); the
  callback sets `called_at` and, if a token waits, wakes it. Both sides write the same item, so whichever comes
  second sees the other: a callback that arrives before the branch parks wakes it as it parks.
- **Once.** A job is woken by its callback at most once (`woken`): a vendor calling again, or anyone replaying
  the URL, cannot make the branch look more often than its schedule allows, which keeps the history bounded.
- **Validated strictly.** A token not of the exact shape is refused before any lookup; an unknown or expired
  one answers 404 and changes nothing; nothing from the call (query, headers, body) is read or kept.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from core.clock import iso_z, utcnow
from core.errors import StoreUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

PK_PREFIX = "CALLBACK#"
SK = "CALLBACK"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
ID_LENGTH = 32  # hex digits of the hash kept in the job's state
MARGIN = timedelta(days=1)  # an item outlives its job's deadline by this much


def mint() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def valid(token: str) -> bool:
    return bool(TOKEN.fullmatch(token))


Answer = Literal["woken", "recorded", "repeated", "unknown"]


class Callbacks:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        sfn: SFNClient | None = None,
        now: Callable[[], datetime] = utcnow,
    ):
        self.client = client
        self.table = table
        self.sfn = sfn
        self.now = now

    def _key(self, callback_id: str) -> dict[str, Any]:
        return {"pk": {"S": PK_PREFIX + callback_id}, "sk": {"S": SK}}

    def register(self, token: str, *, request_id: str, vendor: str, action: str, attempt: int, until: datetime) -> str:
        """The item a callback with `token` will find; returns its id (for the job's state)."""
        callback_id = digest(token)[:ID_LENGTH]
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    **self._key(callback_id),
                    "request_id": {"S": request_id},
                    "vendor": {"S": vendor},
                    "action": {"S": action},
                    "attempt": {"N": str(attempt)},
                    "created_at": {"S": iso_z(self.now())},
                    "expires_at": {"N": str(int((until + MARGIN).timestamp()))},
                },
            )
        except Exception as exc:
            raise StoreUnavailable(f"the callback could not be registered ({type(exc).__name__})") from None
        return callback_id

    def called(self, token: str) -> Answer:
        """The vendor called back with `token`: note it and wake the branch if it waits (once per job)."""
        callback_id = digest(token)[:ID_LENGTH]
        now = self.now()
        try:
            item = self.client.update_item(
                TableName=self.table,
                Key=self._key(callback_id),
                UpdateExpression="SET called_at = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(called_at) AND expires_at > :epoch",
                ExpressionAttributeValues={":now": {"S": iso_z(now)}, ":epoch": {"N": str(int(now.timestamp()))}},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except self.client.exceptions.ConditionalCheckFailedException:
            found = self.client.get_item(TableName=self.table, Key=self._key(callback_id), ConsistentRead=True)
            item = found.get("Item") or {}
            if not item or int(item.get("expires_at", {}).get("N", "0")) <= int(now.timestamp()):
                return "unknown"
            return "repeated"  # called before: noted once, it wakes nothing more
        if "task_token" in item and self._wake(callback_id, item["task_token"]["S"]):
            return "woken"
        return "recorded"

    def park(self, callback_id: str, task_token: str) -> bool:
        """The branch waits on `task_token`; True when the callback had come already and it was woken now."""
        try:
            item = self.client.update_item(
                TableName=self.table,
                Key=self._key(callback_id),
                UpdateExpression="SET task_token = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": {"S": task_token}},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except self.client.exceptions.ConditionalCheckFailedException:
            return False  # expired: the wait's timeout (the polling fallback) goes on alone
        except Exception as exc:
            raise StoreUnavailable(f"the callback wait could not be recorded ({type(exc).__name__})") from None
        if "called_at" in item and "woken" not in item:
            return self._wake(callback_id, task_token)
        return False

    def _wake(self, callback_id: str, task_token: str) -> bool:
        """Wake once: the first to set `woken` sends the task success."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(callback_id),
                UpdateExpression="SET woken = :now REMOVE task_token",
                ConditionExpression="attribute_not_exists(woken)",
                ExpressionAttributeValues={":now": {"S": iso_z(self.now())}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        if self.sfn is None:
            return False
        try:
            self.sfn.send_task_success(taskToken=task_token, output="{}")
        except (
            self.sfn.exceptions.TaskTimedOut,
            self.sfn.exceptions.InvalidToken,
            self.sfn.exceptions.TaskDoesNotExist,
        ):
            return False  # the branch had moved on (its wait timed out): its check looks anyway
        return True
