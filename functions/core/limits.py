"""Per-vendor limits that hold across every execution: jobs in flight at once (slots) and calls per second (pace).

Why DynamoDB, in the ledger's table (ARCHITECTURE.md, "Vendor limits"): every execution's tasks must see one
count, at the moment they are about to call the vendor; a conditional write is that count, with no consumer to
run. The items sit under pk "LIMIT#<vendor>", apart from every request's items, and the functions that use them
may touch only those keys (IAM dynamodb:LeadingKeys "LIMIT#*"). They hold no personal data: a holder is
"<request id>#<attempt>#<action>", a waiter adds a Step Functions task token; every item expires (TTL).

- A slot (sk "SLOT#<n>", n < the vendor's `jobs`) is taken by submit before the vendor is asked to start a
  job, with a conditional put that succeeds only on a free or expired slot. It is given back when the vendor
  says the job ended (check: ready or failed) or when the action is recorded (every other end); a lease
  expires at the job's own deadline anyway, so a cancelled execution cannot hold a slot for ever.
- No free slot, or others already waiting: submit answers `queued` and the branch parks on "Wait for a vendor
  slot" (a task token, kept here as a waiter, sk "WAIT#<first queued>#<holder>": first come, first served).
  Whoever frees a slot hands it to the oldest waiter (the slot is written with the waiter as holder) and
  then wakes it, so a woken branch never loses its slot to a newcomer and is woken once. A wake-up lost to a
  crash is repeated by the next settle (any release, park or submit of that vendor, or the hourly deadline
  watch); a parked branch's own timeout is the moment its job could no longer finish in time.
- The pace (sk "PACE") is a reservation clock: each call reserves the next free moment, 1/calls_per_second
  after the previous one, and sleeps until it. A call that would wait longer than the caller may spend raises
  VendorBusy before anything is sent (check answers "pending", submit queues, collect is retried).

Throttled work waits: neither our limit nor a wait for it is ever recorded as the action's failure; only the
request's deadline ends a wait (submit's DeadlineUnreachable, with the dates).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, ValidationError

from core.clock import iso_z, utcnow
from core.errors import ConfigError, VendorBusy
from core.model import Model

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

__all__ = ["Limits", "VendorBusy", "VendorLimit", "holder_of", "parse_limits"]

PK_PREFIX = "LIMIT#"
SLOT = "SLOT#"
WAIT = "WAIT#"
PACE = "PACE"
LEASE_MARGIN = timedelta(hours=1)  # a slot outlives its job's deadline by this much (the last check runs then)
WAITER_LIFETIME = timedelta(days=45)  # a waiter item left behind (its branch ended) expires by TTL
PACE_TRIES = 8  # conditional-write conflicts tolerated while reserving a moment
# How often one action can wait in the workflow, which bounds its history (core/history.py): a slot is waited for
# at most twice (the wait a handed-over slot ends, and the one that times out at the last useful moment, after
# which submit answers DeadlineUnreachable); the pace at most MAX_PACE_WAITS times, each longer (15 s doubling to
# 15 min: about 45 minutes in all, on top of each submit's own wait), then VendorBusy fails the action and names
# the limit to raise.
SLOT_WAITS = 2
MAX_PACE_WAITS = 8


class VendorLimit(Model):
    """One vendor's limits (context `vendorLimits` → VENDOR_LIMITS): unset means unlimited."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    jobs: int | None = Field(default=None, ge=1, le=1000)  # vendor jobs in flight at once, across requests
    calls_per_second: float | None = Field(default=None, gt=0, le=1000, alias="callsPerSecond")


def parse_limits(raw: str | dict[str, Any] | None, *, where: str = "VENDOR_LIMITS") -> dict[str, VendorLimit]:
    """{"qualifio": {"jobs": 2, "callsPerSecond": 5}}: a problem is a ConfigError naming the vendor and field."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ConfigError("dsrflow", where, "is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ConfigError("dsrflow", where, 'must be an object: {"<vendor>": {"jobs": N, "callsPerSecond": R}}')
    out: dict[str, VendorLimit] = {}
    for vendor, value in raw.items():
        try:
            out[str(vendor)] = VendorLimit.model_validate(value)
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or "(limit)"
            raise ConfigError("dsrflow", f"{where}.{vendor}.{field}", first["msg"]) from None
    return out


def holder_of(request_id: str, attempt: int, action: str) -> str:
    return f"{request_id}#{attempt}#{action}"


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


class Limits:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        limits: dict[str, VendorLimit],
        *,
        sfn: SFNClient | None = None,
        now: Callable[[], datetime] = utcnow,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.table = table
        self.limits = limits
        self.sfn = sfn
        self.now = now
        self.clock = clock  # real seconds: a pace is real time at every time scale
        self.sleep = sleep

    def jobs(self, vendor: str) -> int | None:
        limit = self.limits.get(vendor)
        return limit.jobs if limit else None

    def paced(self, vendor: str) -> bool:
        limit = self.limits.get(vendor)
        return bool(limit and limit.calls_per_second)

    # --- slots ---------------------------------------------------------------------------------------------

    def _items(self, vendor: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": PK_PREFIX + vendor}},
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _live_slots(self, items: list[dict[str, Any]], now: int) -> dict[str, str]:
        """sk -> holder of every slot whose lease has not expired."""
        return {
            i["sk"]["S"]: i.get("holder", {}).get("S", "")
            for i in items
            if i["sk"]["S"].startswith(SLOT) and int(i.get("expires_at", {}).get("N", "0")) > now
        }

    def _take(self, vendor: str, sk: str, holder: str, expires: int, now: int) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": PK_PREFIX + vendor},
                    "sk": {"S": sk},
                    "holder": {"S": holder},
                    "expires_at": {"N": str(expires)},
                    "taken_at": {"S": iso_z(self.now())},
                },
                ConditionExpression="attribute_not_exists(sk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False  # taken meanwhile by another execution

    def settle(self, vendor: str) -> int:
        """Hand free slots to the waiters, oldest first, and wake them; returns how many were woken.

        A slot is handed over (written with the waiter as holder) before the waiter is woken, and the waiter's
        item is deleted only after: a waker that dies in between leaves a waiter that holds a slot, which the
        next settle (any release, park or submit, or the hourly deadline watch) wakes. A waiter whose branch
        has moved on (its token no longer waits) is dropped and its slot given to the next."""
        return self._settle(vendor)[0]

    def _settle(self, vendor: str) -> tuple[int, list[dict[str, Any]] | None]:
        """settle's count, and the vendor's items as its last pass read them when that pass changed nothing
        (acquire reads them instead of querying again: one Query fewer per limited submit), else None."""
        total = self.jobs(vendor)
        if total is None:
            return 0, None
        woken = 0
        for _ in range(total + 8):  # each pass hands over at most one slot; bounded however items change
            now = _epoch(self.now())
            items = self._items(vendor)
            live = self._live_slots(items, now)
            holders = set(live.values())
            waiters = sorted((i for i in items if i["sk"]["S"].startswith(WAIT)), key=lambda i: i["sk"]["S"])
            if not waiters:
                return woken, items
            waiter = next((w for w in waiters if w["holder"]["S"] in holders), None)
            if waiter is None:
                free = [f"{SLOT}{n:04d}" for n in range(total) if f"{SLOT}{n:04d}" not in live]
                if not free:
                    return woken, items
                waiter = waiters[0]
                expires = int(waiter.get("lease", {}).get("N", "0")) or now + int(LEASE_MARGIN.total_seconds())
                if not self._take(vendor, free[0], waiter["holder"]["S"], expires, now):
                    continue
            if self._wake(waiter["token"]["S"]):
                woken += 1
            else:
                self.release(vendor, waiter["holder"]["S"], settle=False)  # nobody waits on it: free it again
            self._delete(vendor, waiter["sk"]["S"])
        return woken, None

    def acquire(self, vendor: str, holder: str, until: datetime) -> bool:
        """Take a slot for `holder`, until `until` + LEASE_MARGIN (or find the one it holds or was handed);
        False: none is free, or others wait for one already (they go first)."""
        total = self.jobs(vendor)
        if total is None:
            return True
        _, settled = self._settle(vendor)
        now = _epoch(self.now())
        items = settled if settled is not None else self._items(vendor)
        for waiter in (i for i in items if i["sk"]["S"].startswith(WAIT) and i["holder"]["S"] == holder):
            self._delete(vendor, waiter["sk"]["S"])  # it is awake now: its wait is over
        live = self._live_slots(items, now)
        if holder in live.values():  # handed over while it waited, or a re-run of the same submit
            return True
        if any(i["sk"]["S"].startswith(WAIT) and i["holder"]["S"] != holder for i in items):
            return False  # others wait already: no jumping the queue
        expires = _epoch(until + LEASE_MARGIN)
        for n in range(total):
            sk = f"{SLOT}{n:04d}"
            if sk not in live and self._take(vendor, sk, holder, expires, now):
                return True
        return False

    def release(self, vendor: str, holder: str, *, settle: bool = True) -> int:
        """Give back `holder`'s slot (if it holds one), then hand it to the oldest waiter."""
        if self.jobs(vendor) is None:
            return 0
        freed = 0
        for item in self._items(vendor):
            sk = item["sk"]["S"]
            if sk.startswith(SLOT) and item.get("holder", {}).get("S") == holder:
                try:
                    self.client.delete_item(
                        TableName=self.table,
                        Key={"pk": {"S": PK_PREFIX + vendor}, "sk": {"S": sk}},
                        ConditionExpression="holder = :h",
                        ExpressionAttributeValues={":h": {"S": holder}},
                    )
                    freed += 1
                except self.client.exceptions.ConditionalCheckFailedException:
                    pass  # it expired and was taken by another: not ours to give back
        if freed and settle:
            self.settle(vendor)
        return freed

    # --- waiters ---------------------------------------------------------------------------------------------

    def park(self, vendor: str, holder: str, token: str, *, since: datetime, until: datetime) -> None:
        """Keep a parked branch's task token in the queue, in its place since it first queued (`since`); a
        slot handed to it (leased until `until`) wakes it. Settles at once: a slot freed between submit's
        refusal and this call would otherwise wake nobody."""
        now = self.now()
        self.client.put_item(
            TableName=self.table,
            Item={
                "pk": {"S": PK_PREFIX + vendor},
                "sk": {"S": f"{WAIT}{iso_z(since)}#{holder}"},
                "holder": {"S": holder},
                "token": {"S": token},
                "lease": {"N": str(_epoch(until + LEASE_MARGIN))},
                "expires_at": {"N": str(_epoch(now + WAITER_LIFETIME))},
            },
        )
        self.settle(vendor)

    def _wake(self, token: str) -> bool:
        if self.sfn is None:
            return False
        try:
            self.sfn.send_task_success(taskToken=token, output="{}")
            return True
        except (
            self.sfn.exceptions.TaskTimedOut,
            self.sfn.exceptions.InvalidToken,
            self.sfn.exceptions.TaskDoesNotExist,
        ):
            return False

    def _delete(self, vendor: str, sk: str) -> bool:
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"pk": {"S": PK_PREFIX + vendor}, "sk": {"S": sk}},
                ConditionExpression="attribute_exists(sk)",
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False

    # --- pace ------------------------------------------------------------------------------------------------

    def pace(self, vendor: str, max_wait: float) -> float:
        """Reserve the next moment a call to `vendor` may be sent and sleep until it; returns the seconds
        slept. VendorBusy (nothing reserved) when that moment is more than `max_wait` seconds away."""
        limit = self.limits.get(vendor)
        if not limit or not limit.calls_per_second:
            return 0.0
        step = 1.0 / limit.calls_per_second
        key = {"pk": {"S": PK_PREFIX + vendor}, "sk": {"S": PACE}}
        for _ in range(PACE_TRIES):
            item = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
            previous = item["next_at"]["N"] if item and "next_at" in item else None
            now = self.clock()
            at = max(now, float(previous) if previous else 0.0)
            if at - now > max_wait:
                raise VendorBusy(
                    f"{vendor}: our limit of {limit.calls_per_second:g} calls per second to {vendor} is taken "
                    f"for the next {at - now:.0f} s; nothing was sent, the call waits its turn"
                )
            condition = "attribute_not_exists(next_at)" if previous is None else "next_at = :old"
            values: dict[str, Any] = {
                ":new": {"N": f"{at + step:.6f}"},
                ":exp": {"N": str(int(now) + 86_400)},
            }
            if previous is not None:
                values[":old"] = {"N": previous}
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="SET next_at = :new, expires_at = :exp",
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # another call reserved meanwhile: read again
            wait = at - now
            if wait > 0:
                self.sleep(wait)
            return wait
        raise VendorBusy(
            f"{vendor}: our limit of {limit.calls_per_second:g} calls per second to {vendor} is contended; "
            "nothing was sent, the call waits its turn"
        )
