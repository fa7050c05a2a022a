"""Qualifio: GDPR "rules" over the participation profiles that match an email (VENDORS.md section 3).

    submit  GET profiles by email -> POST one exportData / forgottenRight rule holding every profile id
            -> PUT validate as the configured DPO user when `auto_validate` (otherwise a human DPO does it)
    check   GET the rule: NEW (waiting for a DPO) -> APPROVED (processing) -> FINISHED (+ top-level archive id)
    collect GET the rule's archive location -> stream GET {url} (a zip of JSON; the link is checked and the
            API token goes only to Qualifio's own origin); erasure has no deliverable

No matching profile is a normal outcome ("no data held"): no rule is created. The Job keeps the rule id
(job_id) and counts/flags only; never the email nor anything from a profile.

Kept records: rule and archive ids enter a Job, a reason or an archive name only when they are Mongo
ObjectIds (`job_id_pattern`), status words only when documented (`statuses`); anything else Qualifio says
(error bodies, other status words, shape complaints, content types) goes to the error's `detail` or
`ctx.vendor_said`. Rule creation is flagged `creates_job`; an erasure rule is `destructive` unless it carries
`test: true`, Qualifio's own dry run (`native_dry_run`): the whole process runs and nothing is deleted.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote, urljoin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, ValidationError, field_validator

from connectors.base import (
    Action,
    Archive,
    Credentials,
    DryRunPlan,
    Job,
    JobContext,
    Progress,
    Schedule,
    Subject,
    new_job,
)
from core.clock import iso_z, scaled
from core.errors import DETAIL_LIMIT, ArchiveInvalid, UnsupportedAction, VendorError, VendorTransientError, cap
from core.model import Model
from core.safe import UNDOCUMENTED, holds_subject, safe_id, safe_word, shown_word

# The vendor HTTP client (core.http, requests) is imported in the methods that call the vendor: intake and
# bulk_item load this module only to ask the class what a subject lacks (cannot_act_on), and never call it.
if TYPE_CHECKING:
    from core.http import VendorHttp

log = logging.getLogger(__name__)
_ModelT = TypeVar("_ModelT", bound=BaseModel)

NO_DATA_REASON = "no data held: no Qualifio profile matches the subject's email"
# A rule waiting for a human DPO: looking every few minutes would only burn invocations.
APPROVAL_WAIT = timedelta(hours=6)
DOWNLOAD_CHUNK = 64 * 1024

EXPORT_RULE = "GDPR_ExportData"
ERASE_RULE = "GDPR_ForgottenRight"

STATUSES = frozenset({"NEW", "APPROVED", "FINISHED"})
OBJECT_ID = r"[0-9a-f]{24}"  # rule and archive ids are Mongo ObjectIds
# What a zip download may be labelled (binary/octet-stream: S3's default for a pre-signed object link).
ZIP_TYPES = frozenset(
    {"application/zip", "application/x-zip-compressed", "application/octet-stream", "binary/octet-stream"}
)
ERASE_CALL = "POST /v1/gdpr/rules/forgottenRight?clientId={clientId}"


class QualifioCredentials(Credentials):
    api_token: SecretStr = Field(min_length=1)
    client_id: int = Field(gt=0)
    dpo_user_id: int = Field(gt=0)
    # Strict: a string like "false" must not silently switch on automatic DPO validation.
    auto_validate: StrictBool


# --- vendor answers (only the fields we use; profile contents are never kept) ---------------------------


class _Profile(Model):
    model_config = ConfigDict(extra="ignore")

    id: int | str
    email: str | None = None


class _RuleStatus(Model):
    model_config = ConfigDict(extra="ignore")

    status: str


class _Rule(Model):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")
    rule_status: _RuleStatus = Field(alias="ruleStatus")
    archive: str | None = None

    @field_validator("id", "archive", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def status(self) -> str:
        return self.rule_status.status


class _ArchiveLocation(Model):
    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1)
    download_count: int | None = Field(default=None, alias="downloadCount")


class QualifioConnector:
    name: ClassVar[str] = "qualifio"
    actions: ClassVar[frozenset[Action]] = frozenset({Action.EXPORT, Action.ERASE})
    # Rules finish within minutes to hours once validated: looked at within minutes, backing off to hourly.
    # A rule not done after a day waits on something slow (a DPO, a Qualifio backlog): every 6 hours then,
    # like a rule waiting for a DPO's validation (APPROVAL_WAIT), which keeps 20 days of looks within the
    # execution's history quota (connectors/base.Schedule, core/history.py). 20 days leaves a human DPO
    # time to validate and still answer within the GDPR month.
    schedule: ClassVar[Schedule] = Schedule(
        first_check=timedelta(minutes=2),
        interval=timedelta(minutes=5),
        backoff=1.5,
        max_interval=timedelta(hours=1),
        slow_after=timedelta(days=1),
        slow_interval=timedelta(hours=6),
        deadline=timedelta(days=20),
    )
    credentials_model: ClassVar[type[Credentials]] = QualifioCredentials
    statuses: ClassVar[frozenset[str]] = STATUSES
    job_id_pattern: ClassVar[str] = OBJECT_ID
    # A `test: true` erasure rule runs the whole process and deletes nothing.
    native_dry_run: ClassVar[frozenset[Action]] = frozenset({Action.ERASE})
    # Qualifio documents a GET to `callBackUrl` "once the archive is ready": for exports. An erasure rule has no
    # archive, and whether it calls back is not documented, so erasures are polled (core/callbacks.py).
    callbacks: ClassVar[frozenset[Action]] = frozenset({Action.EXPORT})

    def __init__(self, credentials: QualifioCredentials, http: VendorHttp | None = None):
        from core.http import VendorHttp

        self.credentials = credentials
        self.http = http or VendorHttp(self.name)
        self.http.redact[credentials.api_token.get_secret_value()] = "***"

    # --- protocol -----------------------------------------------------------------------------------

    @classmethod
    def cannot_act_on(cls, subject: Subject, action: Action) -> str | None:
        if action not in cls.actions:
            return f"Qualifio does not offer the '{action.value}' action"
        if not (subject.email and subject.email.strip()):
            return "Qualifio finds profiles by email only, and the request has no email address"
        return None

    def submit(self, action: Action, subject: Subject, ctx: JobContext) -> Job:
        reason = self.cannot_act_on(subject, action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: {reason}")
        assert subject.email is not None

        profile_ids = self._find_profiles(subject.email.strip())
        if not profile_ids:
            # Nothing to export or erase: a reportable success, and no rule is created at Qualifio.
            job = new_job(self, action, ctx, None, no_profiles=True)
            return job.model_copy(update={"next_check_at": ctx.now})

        dry_run = action is Action.ERASE and ctx.dry_run
        rule = self._create_rule(action, profile_ids, ctx, dry_run)
        validated = False
        if self.credentials.auto_validate:
            validated = self._validate(rule.id, on_failure="at submission")
        log.info(
            "qualifio rule created",
            extra={"vendor": self.name, "rule_id": rule.id, "profiles": len(profile_ids), "validated": validated},
        )
        state: dict[str, Any] = {"profiles": len(profile_ids), "validated": validated}
        if action is Action.ERASE:
            state["dry_run"] = dry_run
        return new_job(self, action, ctx, rule.id, **state)

    def check(self, job: Job, ctx: JobContext) -> Progress:
        if job.state.get("no_profiles"):
            return Progress.ready(NO_DATA_REASON)
        rule_id = self._rule_id(job)
        rule = self._get_rule(rule_id, ctx)
        status = ctx.documented_word(rule.status, STATUSES, "rule-status")

        if status == "FINISHED":
            if job.action is Action.ERASE:
                if job.state.get("dry_run"):
                    return Progress.ready(
                        f"erasure dry run of rule {rule_id} finished; Qualifio deleted nothing", status
                    )
                return Progress.ready(f"erasure rule {rule_id} finished; Qualifio reports the profiles deleted", status)
            if not rule.archive:
                return Progress.failed(
                    f"export rule {rule_id} reports 'FINISHED' but names no archive; ask Qualifio support", status
                )
            archive_id = self._archive_id(rule, rule_id, ctx)
            return Progress.ready(f"export rule {rule_id} finished with archive {archive_id}", status)

        if status not in ("NEW", "APPROVED"):
            # Denied by a DPO, or a status the contract does not document: never guess it is fine.
            return Progress.failed(
                f"Qualifio rule {rule_id} reports {UNDOCUMENTED}; it will not be processed "
                f"(a DPO may have denied it); review it in Qualifio and submit again if needed"
            )

        if ctx.now > job.deadline_at:
            waiting = "no DPO validated it" if status == "NEW" else "Qualifio was still processing it"
            return Progress.deadline_exceeded(
                f"DeadlineExceeded: Qualifio rule {rule_id} was still {shown_word(status, STATUSES)} at its "
                f"deadline {iso_z(job.deadline_at)} ({waiting})",
                status,
            )

        if status == "NEW":
            if not self.credentials.auto_validate:
                return Progress.needs_approval(
                    min(ctx.now + scaled(APPROVAL_WAIT), max(job.deadline_at, ctx.now)),
                    f"waiting for a DPO to validate rule {rule_id} in Qualifio",
                    status,
                )
            # Validation failed transiently at submission; validating here (not re-submitting)
            # avoids a second rule for the same request.
            validated = job.state.get("validated") or self._validate(rule_id, on_failure="on a later check")
            return Progress.pending(
                self.schedule.next_check_at(job, ctx.now),
                f"rule {rule_id} is validated and waiting to be processed by Qualifio"
                if validated
                else f"validating rule {rule_id} failed for now (Qualifio unavailable); retrying at the next check",
                status,
            )

        return Progress.pending(
            self.schedule.next_check_at(job, ctx.now), f"Qualifio is processing rule {rule_id}", status
        )

    def collect(self, job: Job, ctx: JobContext) -> list[Archive]:
        from core.http import check_download_url, checked_chunks, content_length

        # Erasure has no deliverable; "no data held" has nothing to deliver.
        if job.action is Action.ERASE or job.state.get("no_profiles"):
            return []
        rule_id = self._rule_id(job)
        rule = self._get_rule(rule_id, ctx)
        status = ctx.documented_word(rule.status, STATUSES, "rule-status")
        if status != "FINISHED" or not rule.archive:
            raise VendorError(
                self.name,
                f"export rule {rule_id} has no archive to download yet (status {shown_word(status, STATUSES)})",
            )
        archive_id = self._archive_id(rule, rule_id, ctx)
        location = self._parse(
            _ArchiveLocation,
            self.http.json(
                "GET",
                self._url(f"/v1/gdpr/rules/{rule_id}/archive/{archive_id}"),
                call="archive location",
                params=self._client(),
                headers=self._headers(),
                hide=_hide(ctx),
            ),
            "the archive location",
        )
        if location.download_count:
            # Someone (or an earlier attempt) already downloaded it; worth knowing when auditing.
            log.info(
                "qualifio archive downloaded before",
                extra={"vendor": self.name, "rule_id": rule_id, "download_count": location.download_count},
            )

        url = urljoin(self.credentials.base_url + "/", location.url)
        # Refused before any connection: not https (unless Qualifio's own base is http: a simulator), or a
        # private/loopback target for a public Qualifio. download() checks every redirect hop the same way
        # and sends the API token only to Qualifio's own origin, never to wherever a link points.
        check_download_url(
            url, self.credentials.base_url, vendor=self.name, call="archive download", resolve=self.http.resolve
        )
        response = self.http.download(
            url, call="archive download", base_url=self.credentials.base_url, headers=self._headers(), hide=_hide(ctx)
        )
        raw_type = response.headers.get("Content-Type", "")
        content_type = raw_type.split(";")[0].strip().lower()
        if content_type not in ZIP_TYPES:
            response.close()
            raise ArchiveInvalid(
                f"{self.name}: the archive download of rule {rule_id} answered {_kind_of(content_type)} instead "
                "of a zip; nothing was stored",
                detail=f"Content-Type: {_text(raw_type)}",
            )
        length = content_length(response)
        return [
            Archive(
                name=f"qualifio-export-{rule_id}-{archive_id}.zip",  # both ids matched OBJECT_ID
                content_type="application/zip",
                chunks=checked_chunks(
                    response,
                    f"{self.name}: download of export rule {rule_id}",
                    length,
                    DOWNLOAD_CHUNK,
                    "The archive link can be downloaded again: retry",
                ),
                length=length,
                close=response.close,
                kind="zip",
            )
        ]

    def dry_run(self, action: Action, subject: Subject, ctx: JobContext) -> DryRunPlan:
        """The erasure's plan, with the profile lookup (read-only) as the probe. Erasure is normally dry-run
        natively (a `test: true` rule); this serves a task layer that plans instead."""
        reason = self.cannot_act_on(subject, action)
        if reason is not None:
            raise UnsupportedAction(f"{self.name}: {reason}")
        if action is not Action.ERASE:
            raise UnsupportedAction(f"{self.name}: {action.value} changes nothing at Qualifio; it needs no dry run")
        assert subject.email is not None
        found = len(self._find_profiles(subject.email.strip()))
        verified = (
            f"credentials accepted; Qualifio holds {found} profile(s) matching the subject's email"
            if found
            else "credentials accepted; no Qualifio profile matches the subject's email, so there would be "
            "nothing to erase"
        )
        return DryRunPlan(call=ERASE_CALL, verified=verified, subject_found=bool(found))

    # --- vendor calls -------------------------------------------------------------------------------

    def _find_profiles(self, email: str) -> list[int | str]:
        raw = self.http.json(
            "GET",
            self._url("/v1/gdpr/profiles"),
            call="profile lookup",
            params={**self._client(), "email": email},
            headers=self._headers(),
            hide=(email,),  # should Qualifio echo it in an error
        )
        if not isinstance(raw, list):
            raise VendorError(self.name, "the profile lookup did not answer with a list of profiles")
        profiles = [self._parse(_Profile, item, "a profile from the lookup") for item in raw]
        wanted = email.casefold()
        ids: list[int | str] = []
        ignored = 0
        for profile in profiles:
            # Never put someone else's profile into a rule (an erasure would delete it): a profile that
            # states a different email is left out.
            if profile.email is not None and profile.email.strip().casefold() != wanted:
                ignored += 1
                continue
            if profile.id not in ids:
                ids.append(profile.id)
        if ignored:
            log.warning(
                "qualifio lookup returned profiles for other emails; left out",
                extra={"vendor": self.name, "ignored": ignored},
            )
        return ids

    def _create_rule(self, action: Action, profile_ids: list[int | str], ctx: JobContext, dry_run: bool) -> _Rule:
        if action is Action.EXPORT:
            path, rule_type = "/v1/gdpr/rules/exportData", EXPORT_RULE
            default = f"GDPR Art. 15/20 access request {ctx.request_id}"
        else:
            path, rule_type = "/v1/gdpr/rules/forgottenRight", ERASE_RULE
            default = f"GDPR Art. 17 erasure request {ctx.request_id}"
        body: dict[str, Any] = {
            "ruleType": rule_type,
            "clientId": self.credentials.client_id,
            "ruleTypePayload": {"profiles": profile_ids},
            "justification": (ctx.justification or "").strip() or default,
            "userId": self.credentials.dpo_user_id,
        }
        if dry_run:
            body["test"] = True
        if ctx.callback_url and action in self.callbacks:
            body["callBackUrl"] = ctx.callback_url
        raw = self.http.json(
            "POST",
            self._url(path),
            call="rule creation",
            creates_job=True,
            # A test rule deletes nothing: it is how a dry run reaches Qualifio at all.
            destructive=action is Action.ERASE and not dry_run,
            params=self._client(),
            headers=self._headers(),
            json=body,
        )
        rule = self._parse(_Rule, raw, f"the new {rule_type} rule")
        if safe_id(rule.id, OBJECT_ID) is None or holds_subject(rule.id, ctx.subject):
            raise VendorError(
                self.name,
                f"rule creation answered a rule id that is not in Qualifio's documented format; a {rule_type} "
                "rule may have been created: review the rules in Qualifio before submitting again",
                detail=f"_id: {_text(rule.id)}",
                acted=True,
            )
        word = safe_word(rule.status, STATUSES)
        if word != "NEW":
            log.info(
                "qualifio rule not NEW at creation",
                extra={"vendor": self.name, "status": word or UNDOCUMENTED, "rule_id": rule.id},
            )
            if word is None:
                ctx.note("rule-status", cap(rule.status, DETAIL_LIMIT))
        return rule

    def _validate(self, rule_id: str, on_failure: str) -> bool:
        """Validate as the configured DPO user. A transient failure is left to `check` to retry."""
        try:
            self.http.json(
                "PUT",
                self._url(f"/v1/gdpr/rules/{quote(rule_id, safe='')}/validate"),
                call="rule validation",
                params=self._client(),
                headers=self._headers(),
                json={"dpo": self.credentials.dpo_user_id},
            )
        except VendorTransientError:
            log.warning(
                "qualifio rule validation deferred",
                extra={"vendor": self.name, "rule_id": rule_id, "when": on_failure},
            )
            return False
        except VendorError as exc:
            # The rule exists but stays NEW: say which one, so a DPO can validate or delete it by hand. The
            # client's message is allow-listed; the vendor's words stay in exc.detail.
            said = exc.message.removeprefix(f"{self.name}: ")
            raise exc.with_message(
                f"{self.name}: rule {rule_id} was created but could not be validated {on_failure} as the "
                f"configured DPO user (dpo_user_id): {said}"
            ) from None
        return True

    def _get_rule(self, rule_id: str, ctx: JobContext) -> _Rule:
        raw = self.http.json(
            "GET",
            self._url(f"/v1/gdpr/rules/{quote(rule_id, safe='')}"),
            call="rule status",
            params=self._client(),
            headers=self._headers(),
            hide=_hide(ctx),
        )
        return self._parse(_Rule, raw, f"rule {rule_id}")

    # --- helpers ------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.credentials.base_url + path

    def _client(self) -> dict[str, str]:
        return {"clientId": str(self.credentials.client_id)}

    def _headers(self) -> dict[str, str]:
        return {"x-api-token": self.credentials.api_token.get_secret_value(), "Accept": "application/json"}

    def _rule_id(self, job: Job) -> str:
        if not job.job_id:
            raise VendorError(self.name, "the job carries no Qualifio rule id; it cannot be checked")
        rule_id = safe_id(job.job_id, OBJECT_ID)
        if rule_id is None:
            raise VendorError(self.name, "the job carries a rule id that is not in Qualifio's format")
        return rule_id

    def _archive_id(self, rule: _Rule, rule_id: str, ctx: JobContext) -> str:
        archive_id = safe_id(rule.archive, OBJECT_ID)
        if archive_id is None or holds_subject(archive_id, ctx.subject):
            raise VendorError(
                self.name,
                f"export rule {rule_id} names an archive id that is not in Qualifio's documented format; "
                "ask Qualifio support",
                detail=f"archive: {_text(rule.archive)}",
            )
        return archive_id

    def _parse(self, model: type[_ModelT], raw: Any, what: str) -> _ModelT:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            # Only the location (our model's field names) may show; pydantic's complaint goes to detail.
            first = exc.errors(include_input=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or "(body)"
            shown = f" (field '{field}')" if _FIELD.fullmatch(field) else ""
            raise VendorError(
                self.name,
                f"{what} has an unexpected shape{shown}",
                detail=f"field '{field}': {first['msg']}",
            ) from None


# A pydantic location made of our own field names and list positions (no dict keys from the answer).
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+)){0,5}")


def _hide(ctx: JobContext) -> tuple[str, ...]:
    """The subject's email, for the client to mask should a message ever carry it."""
    email = (ctx.subject.email or "").strip()
    return (email,) if email else ()


def _kind_of(content_type: str) -> str:
    """A fixed description of a content type that is not a zip (the raw value is kept privately)."""
    if not content_type:
        return "no content type"
    if content_type in ("text/html", "application/xhtml+xml"):
        return "an HTML page"
    if content_type.startswith("text/"):
        return "a text document"
    if content_type.endswith("json"):
        return "a JSON document"
    return "an unexpected content type"


def _text(value: Any) -> str:
    """A vendor value as private detail text, capped."""
    return cap(value if isinstance(value, str) else repr(value), DETAIL_LIMIT)


__all__ = ["QualifioConnector", "QualifioCredentials", "NO_DATA_REASON", "APPROVAL_WAIT"]
