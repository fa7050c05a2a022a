"""Qualifio GDPR API simulator (docs/VENDORS.md section 3).

- auth: header `x-api-token` (401 when missing, 403 when wrong); every API call needs `?clientId=` of this
  account (400 when missing or wrong);
- profiles are per participation: the SAMPLE customer has two profiles (two campaigns), the others one,
  UNKNOWN_EMAIL none;
- rules: created NEW; `PUT .../validate` by the DPO user -> APPROVED; `processing_minutes` of vendor time
  later -> FINISHED. An export rule then carries a top-level `archive` id whose location names a download
  URL on this simulator (a real zip, one JSON file per profile). An erasure rule deletes its profiles when it
  finishes, unless it was created with `"test": true` (dry run: full process, nothing deleted);
- helpers for tests and the demo: `approve(rule_id)` (a human DPO validating in the Qualifio UI),
  `deny(rule_id, status)` (any status word, documented or not), `rule(rule_id)`, `profiles_of(email)`;
  `sim.archive_url = "http://169.254.169.254/x"` makes every archive location answer that URL instead of
  the simulator's own download link;
- faults (base.py): auth (token, clientId) is decided before any pre-action fault; the archive download
  (`/archives/{token}`, no auth: the URL is the credential) is what the download faults act on; an error
  that echoes the request on rule creation is `faults.reject` with a `reject_body` built from the request;
- counting for tests: `jobs_created(kind=None)` counts rules created ("exportData", "forgottenRight" or
  both); `destructive_calls()` lists every `POST /v1/gdpr/rules/forgottenRight` sent whose body did not say
  `"test": true` (a dry run destroys nothing), however it was answered; `destructive_acted()` counts those
  that created an erasure rule (which deletes the profiles once approved and processed).

Status changes are computed from the vendor clock whenever the API is used, so `sim.clock.advance(...)`
is all a test needs to let time pass.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from local.simulators.base import Call, Faults, Request, Response, Route, Simulator, chunked, zip_bytes
from local.simulators.data import CUSTOMERS, SAMPLE, Customer

RULE_TYPES = {"exportData": "GDPR_ExportData", "forgottenRight": "GDPR_ForgottenRight"}
_RULE = r"/v1/gdpr/rules/(?P<rule>[0-9a-f]+)"

_CAMPAIGNS = (
    (5101, "Summer photo contest"),
    (5102, "Black Friday wheel of fortune"),
    (5103, "Newsletter quiz"),
    (5104, "Advent calendar"),
)


@dataclass
class _Rule:
    id: str
    rule_type: str
    profiles: list[Any]
    justification: str
    user_id: int
    test: bool
    callback_url: str | None
    created_at: datetime
    status: str = "NEW"
    status_at: datetime | None = None
    dpo: int | None = None
    approved_at: datetime | None = None
    archive: str | None = None
    deleted: int = 0
    body: dict[str, Any] = field(default_factory=dict)  # the create request as received, for tests

    def to_json(self, client_id: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "_id": self.id,
            "clientId": client_id,
            "ruleType": self.rule_type,
            "ruleTypePayload": {"profiles": list(self.profiles)},
            "justification": self.justification,
            "userId": self.user_id,
            "test": self.test,
            "createdAt": self.created_at.isoformat(),
            "ruleStatus": {
                "status": self.status,
                "date": (self.status_at or self.created_at).isoformat(),
                "dpo": self.dpo,
            },
        }
        if self.callback_url:
            out["callBackUrl"] = self.callback_url
        if self.archive:
            out["archive"] = self.archive
        if self.status == "FINISHED" and self.rule_type == "GDPR_ForgottenRight":
            out["report"] = {"profiles": len(self.profiles), "deleted": self.deleted}
        return out


@dataclass
class _Archive:
    id: str
    rule_id: str
    token: str
    data: bytes
    downloads: list[datetime] = field(default_factory=list)


def _profiles_for(index: int, customer: Customer) -> list[dict[str, Any]]:
    """One profile per participation; the SAMPLE customer took part in two campaigns."""
    count = 2 if customer == SAMPLE else 1
    profiles = []
    for n in range(count):
        campaign_id, title = _CAMPAIGNS[(index + n) % len(_CAMPAIGNS)]
        joined = datetime.fromisoformat(customer.events[0]["timestamp"]) + timedelta(days=7 * n)
        profiles.append(
            {
                "id": 700000 + index * 10 + n,
                "email": customer.email,
                "firstName": customer.first_name,
                "lastName": customer.last_name,
                "createdAt": joined.isoformat(),
                "optins": {"newsletter": n == 0, "partners": False},
                "participations": [
                    {
                        "campaignId": campaign_id,
                        "campaignTitle": title,
                        "participatedAt": joined.isoformat(),
                        "answers": {"favourite_product": customer.events[0]["product_id"]},
                        "won": (index + n) % 3 == 0,
                    }
                ],
            }
        )
    return profiles


class QualifioSimulator(Simulator):
    name = "qualifio"

    def __init__(
        self,
        time_scale: float = 1.0,
        faults: Faults | None = None,
        *,
        api_token: str = "sim-qualifio-token",
        client_id: int = 4242,
        dpo_user_id: int = 77,
        auto_validate: bool = True,
        processing_minutes: float = 30,
        max_open_rules: int | None = None,
        send_callbacks: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.api_token = api_token
        self.client_id = client_id
        self.dpo_user_id = dpo_user_id
        self.auto_validate = auto_validate
        self.processing = timedelta(minutes=processing_minutes)
        # A vendor that runs only so many jobs at once: a rule created while `max_open_rules` are unfinished is
        # refused with 429. `peak_open` and `refused_busy` tell a test what the vendor saw.
        self.max_open_rules = max_open_rules
        self.peak_open = 0
        self.refused_busy = 0
        # A rule created with a `callBackUrl` gets a GET to it once it finished (Qualifio: "once the archive is
        # ready"), unless told not to (a vendor whose callback never arrives). `callbacks_sent` counts them.
        self.send_callbacks = send_callbacks
        self.callbacks_sent = 0
        self.callback_answers: list[int] = []
        super().__init__(time_scale=time_scale, faults=faults, host=host, port=port)
        self.profiles: dict[Any, dict[str, Any]] = {}
        for i, customer in enumerate(CUSTOMERS, start=1):
            for profile in _profiles_for(i, customer):
                self.profiles[profile["id"]] = profile
        self.rules: dict[str, _Rule] = {}
        self.archives: dict[str, _Archive] = {}
        self._serial = 0
        self.archive_url: str | None = None  # when set, every archive location answers this URL

    def credentials(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_token": self.api_token,
            "client_id": self.client_id,
            "dpo_user_id": self.dpo_user_id,
            "auto_validate": self.auto_validate,
        }

    def routes(self) -> list[Route]:
        return [
            ("GET", r"/v1/gdpr/profiles", self.find_profiles),
            ("POST", r"/v1/gdpr/rules/(?P<kind>exportData|forgottenRight)", self.create_rule),
            ("PUT", _RULE + r"/validate", self.validate),
            ("GET", _RULE + r"/archive/(?P<archive>[0-9a-f]+)", self.archive_location),
            ("GET", _RULE, self.get_rule),
            ("GET", r"/archives/(?P<token>[A-Za-z0-9_-]+)", self.download),
        ]

    # --- helpers for tests and the demo -------------------------------------------------------------

    def seed(self, customers: Iterable[Customer]) -> None:
        """Hold profiles for these customers too (besides data.CUSTOMERS), one participation each."""
        with self.lock:
            first = 1 + max((int(pid) - 700000) // 10 for pid in self.profiles) if self.profiles else 1
            for i, customer in enumerate(customers, start=first):
                for profile in _profiles_for(i, customer):
                    self.profiles[profile["id"]] = profile

    def approve(self, rule_id: str) -> None:
        """A human DPO validating the rule in the Qualifio back office."""
        with self.lock:
            rule = self.rules[rule_id]
            if rule.status != "NEW":
                raise ValueError(f"rule {rule_id} is {rule.status}, not NEW")
            self._set(rule, "APPROVED", dpo=self.dpo_user_id)

    def deny(self, rule_id: str, status: str = "REJECTED") -> None:
        """A DPO refusing the rule; Qualifio's real word for it is undocumented."""
        with self.lock:
            self._set(self.rules[rule_id], status, dpo=self.dpo_user_id)

    def rule(self, rule_id: str) -> dict[str, Any]:
        """The rule as the API shows it, plus `body`: the create request exactly as received."""
        with self.lock:
            self._tick()
            rule = self.rules[rule_id]
            return {**rule.to_json(self.client_id), "body": copy.deepcopy(rule.body)}

    def jobs_created(self, kind: str | None = None) -> int:
        """Rules created (of kind "exportData" / "forgottenRight", or the GDPR_... rule type, when given)."""
        wanted = RULE_TYPES.get(kind, kind) if kind is not None else None
        with self.lock:
            return sum(1 for rule in self.rules.values() if wanted is None or rule.rule_type == wanted)

    def is_destructive(self, call: Call) -> bool:
        if call.method != "POST" or not call.path.endswith("/rules/forgottenRight"):
            return False
        try:
            body = json.loads(call.body or b"null")
        except ValueError:
            return True  # not a readable dry run: treat it as the real thing
        return not (isinstance(body, dict) and body.get("test") is True)

    def refusal(self, req: Request) -> Response | None:
        if req.path.startswith("/archives/"):
            return None  # the download URL itself is the credential
        return self._refuse(req)

    def profiles_of(self, email: str) -> list[dict[str, Any]]:
        with self.lock:
            self._tick()
            return [copy.deepcopy(p) for p in self.profiles.values() if p["email"].lower() == email.lower()]

    # --- API ----------------------------------------------------------------------------------------

    def find_profiles(self, req: Request) -> Response:
        if (refused := self._refuse(req)) is not None:
            return refused
        email = req.query.get("email", "").strip().lower()
        first, last = req.query.get("firstName", "").lower(), req.query.get("lastName", "").lower()
        if not (email or first or last):
            return Response.json({"message": "one of email, firstName, lastName is required"}, 400)
        with self.lock:
            self._tick()
            found = [
                copy.deepcopy(p)
                for p in self.profiles.values()
                if (not email or p["email"].lower() == email)
                and (not first or p["firstName"].lower() == first)
                and (not last or p["lastName"].lower() == last)
            ]
        # The lookup lists profiles; participations are what an export delivers.
        for p in found:
            p.pop("participations", None)
        return Response.json(found)

    def create_rule(self, req: Request) -> Response:
        if (refused := self._refuse(req)) is not None:
            return refused
        rule_type = RULE_TYPES[req.path.rsplit("/", 1)[1]]
        try:
            body = req.json()
        except ValueError:
            return Response.json({"message": "body is not JSON"}, 400)
        if not isinstance(body, dict):
            return Response.json({"message": "body must be a JSON object"}, 400)
        problem = self._rule_body_problem(body, rule_type)
        if problem:
            return Response.json({"message": problem}, 400)
        with self.lock:
            self._tick()
            unknown = [p for p in body["ruleTypePayload"]["profiles"] if p not in self.profiles]
            if unknown:
                return Response.json({"message": f"{len(unknown)} profile id(s) unknown to this client"}, 400)
            open_now = sum(1 for r in self.rules.values() if r.status in ("NEW", "APPROVED"))
            if self.max_open_rules is not None and open_now >= self.max_open_rules:
                self.refused_busy += 1
                return Response.json({"message": "too many rules in progress for this client"}, 429)
            self.peak_open = max(self.peak_open, open_now + 1)
            self._serial += 1
            rule = _Rule(
                id=f"65f0c0de{self._serial:016x}",
                rule_type=rule_type,
                profiles=list(body["ruleTypePayload"]["profiles"]),
                justification=body["justification"],
                user_id=body["userId"],
                test=bool(body.get("test", False)),
                callback_url=body.get("callBackUrl"),
                created_at=self.clock.now(),
                body=copy.deepcopy(body),
            )
            self.rules[rule.id] = rule
            self._acted()
            return Response.json(rule.to_json(self.client_id), 201)

    def validate(self, req: Request) -> Response:
        if (refused := self._refuse(req)) is not None:
            return refused
        try:
            dpo = (req.json() or {}).get("dpo")
        except (ValueError, AttributeError):
            return Response.json({"message": 'body must be {"dpo": <user id>}'}, 400)
        if not isinstance(dpo, int) or isinstance(dpo, bool):
            return Response.json({"message": "dpo must be a user id"}, 400)
        if dpo != self.dpo_user_id:
            return Response.json({"message": "this user is not a DPO of the client"}, 403)
        with self.lock:
            self._tick()
            rule = self.rules.get(self._match(_RULE + r"/validate", req.path)["rule"])
            if rule is None:
                return Response.json({"message": "rule not found"}, 404)
            if rule.status == "NEW":
                self._set(rule, "APPROVED", dpo=dpo)
            elif rule.status not in ("APPROVED", "FINISHED"):  # validating twice is harmless; a denial is final
                return Response.json({"message": f"rule is {rule.status} and cannot be validated"}, 409)
            return Response.json(rule.to_json(self.client_id))

    def get_rule(self, req: Request) -> Response:
        if (refused := self._refuse(req)) is not None:
            return refused
        with self.lock:
            self._tick()
            rule = self.rules.get(self._match(_RULE, req.path)["rule"])
            if rule is None:
                return Response.json({"message": "rule not found"}, 404)
            return Response.json(rule.to_json(self.client_id))

    def archive_location(self, req: Request) -> Response:
        if (refused := self._refuse(req)) is not None:
            return refused
        ids = self._match(_RULE + r"/archive/(?P<archive>[0-9a-f]+)", req.path)
        with self.lock:
            self._tick()
            archive = self.archives.get(ids["archive"])
            if archive is None or archive.rule_id != ids["rule"]:
                return Response.json({"message": "archive not found"}, 404)
            return Response.json(
                {
                    "_id": archive.id,
                    "url": self.archive_url or f"{self.base_url}/archives/{archive.token}",
                    "downloadCount": len(archive.downloads),
                    "download": [{"date": d.isoformat()} for d in archive.downloads],
                }
            )

    def download(self, req: Request) -> Response:
        # The URL itself is the credential (an unguessable token), like a pre-signed link.
        token = self._match(r"/archives/(?P<token>[A-Za-z0-9_-]+)", req.path)["token"]
        with self.lock:
            archive = next((a for a in self.archives.values() if secrets.compare_digest(a.token, token)), None)
            if archive is None:
                return Response.json({"message": "archive not found or expired"}, 404)
            archive.downloads.append(self.clock.now())
            data = archive.data
        return Response(
            body=chunked(data, 16 * 1024),
            content_type="application/zip",
            length=len(data),
            headers={"Content-Disposition": f'attachment; filename="gdpr-export-{archive.rule_id}.zip"'},
            download=True,
        )

    # --- internals ----------------------------------------------------------------------------------

    def _refuse(self, req: Request) -> Response | None:
        token = req.headers.get("x-api-token")
        if not token:
            return Response.json({"message": "missing x-api-token header"}, 401)
        if not secrets.compare_digest(token.encode(), self.api_token.encode()):
            return Response.json({"message": "invalid API token"}, 403)
        client = req.query.get("clientId")
        if not client:
            return Response.json({"message": "clientId query parameter is required"}, 400)
        if client != str(self.client_id):
            return Response.json({"message": "clientId does not match the client of this API token"}, 400)
        return None

    def _rule_body_problem(self, body: dict[str, Any], rule_type: str) -> str | None:
        if body.get("ruleType") != rule_type:
            return f"ruleType must be {rule_type} on this endpoint"
        if body.get("clientId") != self.client_id:
            return "clientId in the body does not match the client"
        payload = body.get("ruleTypePayload")
        profiles = payload.get("profiles") if isinstance(payload, dict) else None
        if not isinstance(profiles, list) or not profiles:
            return "ruleTypePayload.profiles must be a non-empty list of profile ids"
        if len(set(map(json.dumps, profiles))) != len(profiles):
            return "ruleTypePayload.profiles holds duplicates"
        if not isinstance(body.get("justification"), str) or not body["justification"].strip():
            return "justification is required"
        user = body.get("userId")
        if not isinstance(user, int) or isinstance(user, bool) or user != self.dpo_user_id:
            return "userId must be a user of this client"
        if "test" in body and not isinstance(body["test"], bool):
            return "test must be a boolean"
        callback = body.get("callBackUrl")
        if callback is not None and not (isinstance(callback, str) and callback.startswith(("https://", "http://"))):
            return "callBackUrl must be an http(s) URL"
        return None

    def _set(self, rule: _Rule, status: str, dpo: int | None = None) -> None:
        rule.status = status
        rule.status_at = self.clock.now()
        if dpo is not None:
            rule.dpo = dpo
        if status == "APPROVED":
            rule.approved_at = rule.status_at
            if rule.callback_url and self.send_callbacks:
                delay = self.processing.total_seconds() / self.clock.scale + 0.05
                timer = threading.Timer(delay, self._call_back, args=(rule.id,))
                timer.daemon = True
                timer.start()

    def _call_back(self, rule_id: str) -> None:
        """The GET to the rule's callBackUrl once it finished (real HTTP, from a thread of its own)."""
        with self.lock:
            self._tick()
            rule = self.rules.get(rule_id)
            url = rule.callback_url if rule is not None and rule.status == "FINISHED" else None
        if url is None:
            return
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:  # the URL dsrflow handed us
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        with self.lock:
            self.callbacks_sent += 1
            self.callback_answers.append(status)

    def _tick(self) -> None:
        """Finish every approved rule whose processing time has passed (vendor time). Caller holds the lock."""
        now = self.clock.now()
        for rule in self.rules.values():
            if rule.status != "APPROVED" or rule.approved_at is None or now < rule.approved_at + self.processing:
                continue
            if rule.rule_type == "GDPR_ExportData":
                rule.archive = self._build_archive(rule, now)
            elif not rule.test:
                for profile_id in rule.profiles:
                    if self.profiles.pop(profile_id, None) is not None:
                        rule.deleted += 1
            rule.status = "FINISHED"
            rule.status_at = rule.approved_at + self.processing

    def _build_archive(self, rule: _Rule, now: datetime) -> str:
        files: dict[str, bytes] = {}
        included = []
        for profile_id in rule.profiles:
            profile = self.profiles.get(profile_id)
            if profile is None:  # erased meanwhile: nothing left to export
                continue
            data = copy.deepcopy(profile)
            participations = data.pop("participations", [])
            files[f"profiles/profile-{profile_id}.json"] = json.dumps(
                {"profile": data, "participations": participations}, indent=2, sort_keys=True
            ).encode()
            included.append(profile_id)
        files["rule.json"] = json.dumps(
            {"rule": rule.id, "ruleType": rule.rule_type, "generatedAt": now.isoformat(), "profiles": included},
            indent=2,
        ).encode()
        archive_id = f"a7c41e00{len(self.archives) + 1:016x}"
        self.archives[archive_id] = _Archive(
            id=archive_id, rule_id=rule.id, token=secrets.token_urlsafe(24), data=zip_bytes(files)
        )
        return archive_id

    @staticmethod
    def _match(pattern: str, path: str) -> dict[str, str]:
        match = re.match(pattern + r"$", path)
        assert match is not None, path
        return match.groupdict()


__all__ = ["QualifioSimulator"]
