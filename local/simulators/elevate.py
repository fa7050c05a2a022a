"""Voyado Elevate 3 / Apptus eSales 3 GDPR jobs, as VENDORS.md section 1 documents them.

Every call is served under both `/api/v2` and `/api/v1` (older clusters); auth is the one the simulator is
configured with: `auth_mode="api_key"` (header `Api-Key`) or `"basic"` (cluster login and password). Wrong
or missing credentials answer 403, missing or malformed arguments 400, each with a JSON `message`.

Job life, in vendor time (`sim.clock`, scaled; tests jump with `sim.clock.advance`):
    created (removal: "started", or "created" with removal_initial_status="created") for the first hour,
    waiting until vendor midnight (UTC) after the creation day,
    running until `days_to_done` vendor days after creation,
    done.
`sim.fail_job(jid)` forces a job into `error` (`sim.force_status(jid, word)` into any word); an unknown jid
answers `{"jid": ..., "status": "not_found"}`. `vendor_start=` pins the vendor clock's start (tests need to know
where midnight falls).

Download (`export-customer-job-result`): a zip of JSON Lines files, one per data kind, built from the
seeded customer (local/simulators/data.py), or a single `empty.txt` when the key matches nobody (or the
customer was removed by a finished removal job). It is single-shot: once a download has been sent whole,
the job is deleted, so a second GET, like job-status, answers HTTP 200 `{"jid": ..., "status": "not_found"}`
(the vendor's "as if the job does not exist", with HTTP 200 as its status calls do). A download cut off by
`faults.cut_download_after` keeps the job, so it can be repeated. Downloading before `done` answers 400.
`sim.download_override = b"..."` serves those bytes as the archive of every done export instead (same
headers, still single-shot); `faults.rewrite` can change anything else about an answer.

Faults (base.py): auth is decided before any pre-action fault, so a wrong key answers 403 even while
`rate_limit` is set. `faults.html_instead` answers a login page instead of the archive and keeps the job;
`faults.short_length` sends the whole archive, so the job is forgotten (the vendor thinks it delivered).

Counting for tests: `jobs_created(kind=None)` counts every job ever created ("export", "remove" or both;
downloads forget jobs, the count does not); `destructive_calls()` lists every `create-remove-customer-job`
call sent, whatever it was answered (403, 400, 429, rejected, dropped...); `destructive_acted()` counts
those that created a removal job (the vendor will erase).
"""

from __future__ import annotations

import base64
import hmac
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal

from local.simulators import data
from local.simulators.base import Call, Faults, Request, Response, Simulator, VendorClock, chunked, jsonl, zip_bytes

API = r"/api/v[12]/event-data"
# customerKey: a visitor UUID/GUID, or the SHA-256 hex of the signed-in customer's id.
CUSTOMER_KEY = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|[0-9a-f]{64}", re.I)
# Which JSON Lines file an event lands in (the vendor's inner layout; it "may change without notice").
EVENT_FILES = {
    "view": "recent_views.jsonl",
    "add_to_cart": "recent_atc.jsonl",
    "purchase": "recent_purchases.jsonl",
}
OTHER_EVENTS = "recent_other_events.jsonl"
QUEUED_FOR = timedelta(hours=1)


@dataclass
class SimJob:
    jid: str
    kind: Literal["export", "remove"]
    customer_key: str
    created_at: datetime
    first_status: str  # what the create call answered
    forced_status: str | None = None  # set by tests: error, or a word no documentation lists
    applied: bool = False  # removal: the customer has been marked removed


class ElevateSimulator(Simulator):
    name = "elevate"

    def __init__(
        self,
        time_scale: float = 1.0,
        faults: Faults | None = None,
        *,
        auth_mode: Literal["api_key", "basic"] = "api_key",
        api_key: str = "sim-elevate-key",
        username: str = "cluster",
        password: str = "sim-password",
        api_prefix: str = "/api/v2",
        days_to_done: float = 5,
        removal_initial_status: Literal["started", "created"] = "started",
        chunk_size: int = 64 * 1024,
        vendor_start: datetime | None = None,
        **server: Any,
    ):
        if auth_mode not in ("api_key", "basic"):
            raise ValueError("auth_mode must be 'api_key' or 'basic'")
        if removal_initial_status not in ("started", "created"):
            raise ValueError("removal_initial_status must be 'started' or 'created'")
        super().__init__(time_scale=time_scale, faults=faults, **server)
        if vendor_start is not None:  # a fixed vendor "now", so tests know where midnight falls
            self.clock = VendorClock(time_scale, start=vendor_start)
        self.auth_mode = auth_mode
        self.api_key, self.username, self.password = api_key, username, password
        self.api_prefix = api_prefix
        self.days_to_done = days_to_done
        self.removal_initial_status = removal_initial_status
        self.chunk_size = chunk_size
        self.jobs: dict[str, SimJob] = {}
        self.created_jobs: list[SimJob] = []  # every job ever created, downloaded (forgotten) ones included
        self.download_override: bytes | None = None  # served instead of the built archive when set
        self.removed: set[str] = set()  # Customer.registered of customers whose data a removal job erased
        self.seeded: dict[str, data.Customer] = {}  # customers given to `seed`, by visitor id and customer key

    def routes(self):
        return [
            ("POST", rf"{API}/create-export-customer-job", self.create_export),
            ("POST", rf"{API}/create-remove-customer-job", self.create_remove),
            ("GET", rf"{API}/job-status", self.job_status),
            ("GET", rf"{API}/export-customer-job-result", self.download),
        ]

    def credentials(self) -> dict:
        """The credentials JSON a connector uses to talk to this running simulator."""
        creds: dict[str, str] = {"base_url": self.base_url, "api_prefix": self.api_prefix}
        if self.auth_mode == "api_key":
            creds["api_key"] = self.api_key
        else:
            creds.update(username=self.username, password=self.password)
        return creds

    # --- test controls ------------------------------------------------------------------------------
    def seed(self, customers: Iterable[data.Customer]) -> None:
        """Hold data for these customers too (besides data.CUSTOMERS)."""
        with self.lock:
            for c in customers:
                self.seeded[c.visitor_key] = self.seeded[c.customer_key] = c

    def _customer(self, key: str) -> data.Customer | None:
        return self.seeded.get(key) or data.by_customer_key(key)

    def fail_job(self, jid: str) -> None:
        """Force a job into `error` (the newer API generation's failed state)."""
        self.force_status(jid, "error")

    def force_status(self, jid: str, status: str | None) -> None:
        """Make job-status answer `status` for this job from now on (None: back to the timeline)."""
        with self.lock:
            self.jobs[jid].forced_status = status

    def jobs_created(self, kind: Literal["export", "remove"] | None = None) -> int:
        """How many jobs the vendor created (of this kind), including jobs already downloaded and forgotten."""
        with self.lock:
            return sum(1 for job in self.created_jobs if kind is None or job.kind == kind)

    def is_destructive(self, call: Call) -> bool:
        return call.method == "POST" and call.path.endswith("/create-remove-customer-job")

    def status_of(self, jid: str) -> str:
        with self.lock:
            job = self.jobs.get(jid)
            return "not_found" if job is None else self._status(job)

    # --- calls --------------------------------------------------------------------------------------
    def create_export(self, req: Request) -> Response:
        return self._create(req, "export")

    def create_remove(self, req: Request) -> Response:
        return self._create(req, "remove")

    def _create(self, req: Request, kind: Literal["export", "remove"]) -> Response:
        refused = self._refuse(req, "customerKey")
        if refused:
            return refused
        key = req.query["customerKey"]
        if not CUSTOMER_KEY.fullmatch(key):
            # Echoes the argument, as many APIs do: connectors must keep it out of their messages.
            return Response.json(
                {"message": f"Invalid customerKey '{key}': expected a visitor UUID or a SHA-256 hex string"}, 400
            )
        first = "created" if kind == "export" else self.removal_initial_status
        job = SimJob(str(uuid.uuid4()), kind, key, self.clock.now(), first)
        with self.lock:
            self.jobs[job.jid] = job
            self.created_jobs.append(job)
            self._acted()
        return Response.json({"jid": job.jid, "status": first})

    def job_status(self, req: Request) -> Response:
        refused = self._refuse(req, "jid")
        if refused:
            return refused
        jid = req.query["jid"]
        return Response.json({"jid": jid, "status": self.status_of(jid)})

    def download(self, req: Request) -> Response:
        refused = self._refuse(req, "jid")
        if refused:
            return refused
        jid = req.query["jid"]
        with self.lock:
            job = self.jobs.get(jid)
            if job is None:
                return Response.json({"jid": jid, "status": "not_found"})
            status = self._status(job)
            if job.kind != "export":
                return Response.json({"message": "Job is not an export job; it has nothing to download"}, 400)
            if status != "done":
                return Response.json({"message": f"Job is not done (status {status}); nothing to download"}, 400)
            archive = self.download_override if self.download_override is not None else self._archive(job.customer_key)
        return Response(
            body=chunked(archive, self.chunk_size),
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="export-{jid}.zip"'},
            length=len(archive),
            download=True,
            on_complete=lambda: self._forget(jid),
        )

    # --- internals ----------------------------------------------------------------------------------
    def refusal(self, req: Request) -> Response | None:
        if not self._authorised(req):
            if self.auth_mode == "api_key":
                return Response.json({"message": "Invalid or missing Api-Key"}, 403)
            return Response.json({"message": "Invalid cluster credentials"}, 403)
        return None

    def _refuse(self, req: Request, needed: str) -> Response | None:
        refused = self.refusal(req)
        if refused is not None:
            return refused
        if not req.query.get(needed, "").strip():
            return Response.json({"message": f"Missing required argument: {needed}"}, 400)
        return None

    def _authorised(self, req: Request) -> bool:
        if self.auth_mode == "api_key":
            return hmac.compare_digest(req.headers.get("api-key", "").encode(), self.api_key.encode())
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value, validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, f"{self.username}:{self.password}".encode())

    def _status(self, job: SimJob) -> str:
        """The job's status now, in vendor time; a finished removal erases the customer (lock held)."""
        if job.forced_status is not None:
            return job.forced_status
        now = self.clock.now()
        next_midnight = datetime.combine(job.created_at.date() + timedelta(days=1), time(), job.created_at.tzinfo)
        done_at = max(job.created_at + timedelta(days=self.days_to_done), next_midnight)
        if now < next_midnight:
            return job.first_status if now < job.created_at + QUEUED_FOR else "waiting"
        if now < done_at:
            return "running"
        if job.kind == "remove" and not job.applied:
            customer = self._customer(job.customer_key)
            if customer is not None:
                self.removed.add(customer.registered)
            job.applied = True
        return "done"

    def _forget(self, jid: str) -> None:
        with self.lock:
            self.jobs.pop(jid, None)

    def _archive(self, customer_key: str) -> bytes:
        customer = self._customer(customer_key)
        self._apply_finished_removals()
        if customer is None or customer.registered in self.removed or not customer.events:
            return zip_bytes({"empty.txt": b""})
        files: dict[str, list[dict]] = {}
        for event in customer.events:
            name = EVENT_FILES.get(event["type"], OTHER_EVENTS)
            files.setdefault(name, []).append(
                {
                    "customerKey": customer_key,
                    "eventType": event["type"],
                    "timestamp": event["timestamp"],
                    "productKey": event["product_id"],
                }
            )
        return zip_bytes({name: jsonl(rows) for name, rows in sorted(files.items())})

    def _apply_finished_removals(self) -> None:
        # Status is computed when asked; a removal that finished unobserved still erases (lock held).
        for job in self.jobs.values():
            if job.kind == "remove" and not job.applied:
                self._status(job)
