"""Bloomreach Engagement simulator: the GDPR customer calls of VENDORS.md section 2, on loopback.

    POST /data/v2/projects/{projectToken}/customers/export-one      one customer: ids, properties, events
    POST /data/v2/projects/{projectToken}/customers/export          every customer, csv or table_json, streamed
    POST /data/v2/projects/{projectToken}/customers/anonymize       PII properties + external ids removed
    POST /data/v2/projects/{projectToken}/customers/anonymize_bulk  at most 1000 customers, answers a bulk_id

Auth is HTTP Basic (api key id : secret): an unknown key id answers 401 "Access key not found", a wrong
secret 403 "invalid secret", a missing permission 403. Errors carry `{"success": false, "errors": [...]}`.
`fail_next(suffix, errors)` makes the next call to an endpoint answer HTTP 200 with `success: false`, the
vendor behaviour that bites. Every parsed request body is kept in `received` for assertions.

Segmentation `SEGMENTATION_ID` ("sim-engagement") is evaluated at the export's `execution_time`:
index 0 = customers with a purchase, 1 = customers who opened a newsletter but bought nothing,
-1 = customers in no segment. The computed property `last_event_day` (the calendar day of the customer's
last event up to `execution_time`) is rendered in the export's `timezone`, so both fields show in the data.

Faults (base.py): auth (401/403, unknown project 404) is decided before any pre-action fault. Downloads, for
`html_instead`, `short_length` and `cut_download_after`, are export-one answers and the streamed exports.

Counting for tests: `jobs_created()` counts the anonymize and anonymize_bulk calls the vendor accepted
(answered `success: true`; `jobs_created("anonymize")` / `("anonymize_bulk")` for one endpoint);
`customers_anonymized()` counts record anonymizations (a customer anonymized twice counts twice);
`destructive_calls()` lists every anonymize / anonymize_bulk call sent, however it was answered (refused,
faulted, `fail_next`, unknown customer); `destructive_acted()` counts those that anonymized at least one
customer.
"""

from __future__ import annotations

import base64
import binascii
import copy
import csv
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from local.simulators.base import Call, Faults, Request, Response, Route, Simulator
from local.simulators.data import CUSTOMERS, Customer

PREFIX = r"/data/v2/projects/[^/]+/customers/"
EXPORT_CUSTOMERS = "GDPR > Export customers"
ANONYMIZE_CUSTOMER = "GDPR > Anonymize customer"
ALL_PERMISSIONS = frozenset({EXPORT_CUSTOMERS, ANONYMIZE_CUSTOMER})
NEEDS = {"export": EXPORT_CUSTOMERS, "anonymize": ANONYMIZE_CUSTOMER, "anonymize_bulk": ANONYMIZE_CUSTOMER}

SEGMENTATION_ID = "sim-engagement"
SEGMENTS = ("purchasers", "newsletter readers without a purchase")
PII_PROPERTIES = ("email", "first_name", "last_name")
ID_TYPES = ("registered", "cookie")
PROPERTY_NAMES = ("email", "first_name", "last_name", "language", "loyalty_points", "last_event_day")
MAX_BULK_ANONYMIZE = 1000
INT32_MAX = 2**31 - 1


@dataclass
class _Record:
    seed: Customer | None  # None for padding rows
    ids: dict[str, Any]  # registered: str, cookie: [str, ...]
    properties: dict[str, Any]
    events: list[dict[str, Any]]
    anonymized_at: datetime | None = None


def _seeded(c: Customer, n: int) -> _Record:
    return _Record(
        seed=c,
        ids={"registered": c.registered, "cookie": [c.cookie]},
        properties={
            "email": c.email,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "language": "en",
            "loyalty_points": 100 * n,
        },
        events=[
            {
                "type": e["type"],
                "timestamp": datetime.fromisoformat(e["timestamp"]).timestamp(),
                "properties": {"product_id": e["product_id"]},
            }
            for e in c.events
        ],
    )


def _padding(i: int) -> _Record:
    return _Record(
        seed=None,
        ids={"registered": f"pad-{i:07d}", "cookie": [f"ck-pad-{i:07d}"]},
        properties={
            "email": f"pad{i}@example.invalid",
            "first_name": "Pad",
            "last_name": f"Row{i}",
            "language": "en",
            "loyalty_points": 0,
        },
        events=[],
    )


def segment_of(record: _Record, execution_time: float) -> int:
    """The record's segment index in SEGMENTATION_ID as of `execution_time` (-1: none)."""
    kinds = {e["type"] for e in record.events if e["timestamp"] <= execution_time}
    if "purchase" in kinds:
        return 0
    if "newsletter_open" in kinds:
        return 1
    return -1


def last_event_day(record: _Record, execution_time: float, tz: ZoneInfo) -> str | None:
    times = [e["timestamp"] for e in record.events if e["timestamp"] <= execution_time]
    if not times:
        return None
    return datetime.fromtimestamp(max(times), tz).date().isoformat()


class _BadRequest(Exception):
    pass


class BloomreachSimulator(Simulator):
    name = "bloomreach"

    def __init__(
        self,
        time_scale: float = 1.0,
        faults: Faults | None = None,
        *,
        project_token: str = "sim-project",
        api_key_id: str = "sim-key-id",
        api_secret: str = "sim-secret",
        permissions: frozenset[str] | set[str] = ALL_PERMISSIONS,
        pad_rows: int = 0,
        rows_per_chunk: int = 200,
        **server: Any,
    ):
        self.project_token = project_token
        self.api_key_id = api_key_id
        self.api_secret = api_secret
        self.permissions = set(permissions)
        self.pad_rows = pad_rows  # synthetic customers (no events) appended to bulk exports
        self.rows_per_chunk = rows_per_chunk
        self.records = [_seeded(c, n) for n, c in enumerate(CUSTOMERS, start=1)]
        self.received: list[tuple[str, Any]] = []  # (path suffix, parsed body), in order
        self.bulk_ids: dict[str, int] = {}  # anonymize_bulk id -> customers anonymized
        self._fail_next: dict[str, list[list[str]]] = {}
        self.accepted: list[str] = []  # path suffix of every anonymize / anonymize_bulk call answered success
        self.anonymizations = 0  # records anonymized, repeats included
        super().__init__(time_scale=time_scale, faults=faults, **server)

    def routes(self) -> list[Route]:
        return [
            ("POST", PREFIX + "export-one", self._endpoint("export-one", self._export_one)),
            ("POST", PREFIX + "export", self._endpoint("export", self._export)),
            ("POST", PREFIX + "anonymize", self._endpoint("anonymize", self._anonymize)),
            ("POST", PREFIX + "anonymize_bulk", self._endpoint("anonymize_bulk", self._anonymize_bulk)),
        ]

    # --- for tests and the local CLI --------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        return {
            "base_url": self.base_url,
            "project_token": self.project_token,
            "api_key_id": self.api_key_id,
            "api_secret": self.api_secret,
        }

    def fail_next(self, path_suffix: str, errors: list[str] | None = None, times: int = 1) -> None:
        """The next `times` authorised calls to `path_suffix` answer HTTP 200 {"success": false, ...}."""
        with self.lock:
            self._fail_next.setdefault(path_suffix, []).extend(
                [list(errors or ["Internal error, please try again later"])] * times
            )

    def seed(self, customers: Iterable[Customer]) -> None:
        """Hold records for these customers too (besides data.CUSTOMERS)."""
        with self.lock:
            for c in customers:
                self.records.append(_seeded(c, len(self.records) + 1))

    def record_of(self, customer: Customer) -> dict[str, Any]:
        """A copy of what the vendor holds now for a seeded customer (found even after anonymization)."""
        with self.lock:
            record = next(r for r in self.records if r.seed == customer)
            return {
                "ids": copy.deepcopy(record.ids),
                "properties": copy.deepcopy(record.properties),
                "events": copy.deepcopy(record.events),
                "anonymized": record.anonymized_at is not None,
            }

    def jobs_created(self, kind: str | None = None) -> int:
        """Anonymize and anonymize_bulk calls the vendor accepted (of this endpoint, when `kind` is given)."""
        with self.lock:
            return sum(1 for suffix in self.accepted if kind is None or suffix == kind)

    def customers_anonymized(self) -> int:
        with self.lock:
            return self.anonymizations

    def is_destructive(self, call: Call) -> bool:
        return call.method == "POST" and call.path.rsplit("/", 1)[-1] in ("anonymize", "anonymize_bulk")

    def refusal(self, req: Request) -> Response | None:
        return self._authorise(req, req.path.rsplit("/", 1)[-1])

    # --- request handling ----------------------------------------------------------------------------------

    def _endpoint(self, suffix: str, handler: Callable[[Any], Response]) -> Callable[[Request], Response]:
        def handle(req: Request) -> Response:
            refused = self._authorise(req, suffix)
            if refused is not None:
                return refused
            try:
                body = req.json()
            except ValueError:
                return _error(400, "Invalid JSON")
            with self.lock:
                self.received.append((suffix, body))
                queued = self._fail_next.get(suffix)
                if queued:
                    return Response.json({"success": False, "errors": queued.pop(0)})
            try:
                return handler(body)
            except _BadRequest as exc:
                return _error(400, str(exc))

        return handle

    def _authorise(self, req: Request, suffix: str) -> Response | None:
        with self.lock:
            return self._refusal(req, suffix)

    def _refusal(self, req: Request, suffix: str) -> Response | None:
        key_id, secret = _basic_auth(req.headers.get("authorization", ""))
        if key_id != self.api_key_id:
            return _error(401, "Access key not found")
        if secret != self.api_secret:
            return _error(403, "invalid secret")
        token = req.path.split("/")[4]
        if token != self.project_token:
            return _error(404, "Project not found")
        needed = NEEDS.get(suffix)
        if needed is not None and needed not in self.permissions:
            return _error(403, f"Access key is missing the permission '{needed}'")
        return None

    def _find(self, customer_ids: Any) -> _Record | None:
        if not isinstance(customer_ids, dict) or not customer_ids:
            raise _BadRequest("customer_ids must be an object with at least one id")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in customer_ids.items()):
            raise _BadRequest("customer_ids values must be strings")
        for record in self.records:
            for kind, value in customer_ids.items():
                held = record.ids.get(kind)
                if held == value or (isinstance(held, list) and value in held):
                    return record
        return None

    def _export_one(self, body: Any) -> Response:
        with self.lock:
            record = self._find(_get(body, "customer_ids"))
            if record is None:
                return _error(404, "Customer does not exist")
            payload = {
                "success": True,
                "ids": copy.deepcopy(record.ids),
                "properties": copy.deepcopy(record.properties),
                "events": copy.deepcopy(record.events),
            }
        response = Response.json(payload)
        response.download = True  # the data itself: what `cut_download_after` cuts
        return response

    def _anonymize_record(self, record: _Record) -> None:
        # Vendor docs: PII-flagged properties and every external id go; a new cookie id is assigned.
        for prop in PII_PROPERTIES:
            record.properties.pop(prop, None)
        record.ids = {"cookie": [f"ck-anon-{uuid.uuid4().hex[:12]}"]}
        record.anonymized_at = self.clock.now()
        self.anonymizations += 1
        self._acted()

    def _anonymize(self, body: Any) -> Response:
        with self.lock:
            record = self._find(_get(body, "customer_ids"))
            if record is None:
                return _error(404, "Customer does not exist")
            self._anonymize_record(record)
            self.accepted.append("anonymize")
        return Response.json({"success": True})

    def _anonymize_bulk(self, body: Any) -> Response:
        customers = _get(body, "customers")
        if not isinstance(customers, list) or not customers:
            raise _BadRequest("customers must be a non-empty list")
        if len(customers) > MAX_BULK_ANONYMIZE:
            raise _BadRequest(f"At most {MAX_BULK_ANONYMIZE} customers can be anonymized in one request")
        with self.lock:
            found = [self._find(_get(c, "customer_ids")) for c in customers]
            for record in found:
                if record is not None:
                    self._anonymize_record(record)
            bulk_id = uuid.uuid4().hex
            self.bulk_ids[bulk_id] = sum(r is not None for r in found)
            self.accepted.append("anonymize_bulk")
        return Response.json({"success": True, "bulk_id": bulk_id})

    def _export(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        fmt = body.get("format")
        if fmt not in ("csv", "table_json", "native_json"):
            raise _BadRequest("format must be one of csv, table_json")
        columns = _columns(body.get("attributes", {"type": "properties_and_ids"}))
        wanted = _segment_filter(body.get("filter", {"type": "all"}))
        at = body.get("execution_time")
        if at is None:
            at = int(self.clock.now().timestamp())
        elif type(at) is not int or not 0 <= at <= INT32_MAX:
            raise _BadRequest("execution_time must be an int32 unix timestamp")
        tz = _zone(body.get("timezone", "UTC"))

        with self.lock:  # a consistent snapshot; padding rows are generated while streaming
            rows = [_row(r, columns, at, tz) for r in self.records if wanted is None or segment_of(r, at) == wanted]
        pad = self.pad_rows if wanted in (None, -1) else 0
        rows_iter = _chain_rows(rows, (_row(_padding(i), columns, at, tz) for i in range(pad)))
        if fmt == "csv":
            return Response(
                body=_csv_stream(columns, rows_iter, self.rows_per_chunk), content_type="text/csv", download=True
            )
        # native_json (older clients) is answered like table_json: its own shape is not documented.
        return Response(body=_table_json_stream(columns, rows_iter, self.rows_per_chunk), download=True)


# --- helpers ----------------------------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    return Response.json({"errors": [message], "success": False}, status)


def _get(body: Any, key: str) -> Any:
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body.get(key)


def _zone(name: Any) -> ZoneInfo:
    # Continent/City names (or UTC) only, as the vendor documents; ZoneInfo says whether it exists.
    if isinstance(name, str) and (name == "UTC" or "/" in name):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise _BadRequest("timezone must be a time zone database name like 'Africa/Lagos'")


def _basic_auth(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        key_id, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (key_id, secret) if sep else (None, None)


def _columns(attributes: Any) -> list[str]:
    if not isinstance(attributes, dict):
        raise _BadRequest("attributes must be an object")
    kind = attributes.get("type")
    if kind == "properties_and_ids":
        return [*ID_TYPES, *PROPERTY_NAMES]
    if kind != "some":
        raise _BadRequest("attributes.type must be 'some' or 'properties_and_ids'")
    items = attributes.get("list")
    if not isinstance(items, list) or not items:
        raise _BadRequest("attributes.list must be a non-empty list")
    columns = []
    for item in items:
        if isinstance(item, dict) and item.get("type") == "id" and isinstance(item.get("id"), str):
            columns.append(item["id"])
        elif isinstance(item, dict) and item.get("type") == "property" and isinstance(item.get("property"), str):
            columns.append(item["property"])
        else:
            raise _BadRequest("each attribute must be {type: id, id} or {type: property, property}")
    return columns


def _segment_filter(spec: Any) -> int | None:
    """None for every customer, else the wanted segment index."""
    if not isinstance(spec, dict):
        raise _BadRequest("filter must be an object")
    if spec.get("type") == "all":
        return None
    if spec.get("type") != "segment":
        raise _BadRequest("filter.type must be 'segment' or 'all'")
    if spec.get("segmentation_id") != SEGMENTATION_ID:
        raise _BadRequest("Segmentation not found")
    index = spec.get("segment_index")
    if type(index) is not int or not -1 <= index < len(SEGMENTS):
        raise _BadRequest(f"segment_index must be -1 or 0..{len(SEGMENTS) - 1}")
    return index


def _row(record: _Record, columns: list[str], at: float, tz: ZoneInfo) -> list[Any]:
    values: list[Any] = []
    for column in columns:
        if column == "last_event_day":
            values.append(last_event_day(record, at, tz))
        elif column in record.ids:
            held = record.ids[column]
            values.append(",".join(held) if isinstance(held, list) else held)
        else:
            values.append(record.properties.get(column))
    return values


def _chain_rows(first: list[list[Any]], rest: Iterator[list[Any]]) -> Iterator[list[Any]]:
    yield from first
    yield from rest


def _batches(rows: Iterator[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    batch: list[list[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv_stream(columns: list[str], rows: Iterator[list[Any]], per_chunk: int) -> Iterator[bytes]:
    def encode(batch: list[list[Any]]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([["" if v is None else v for v in r] for r in batch])
        return buf.getvalue().encode()

    yield encode([columns])
    for batch in _batches(rows, per_chunk):
        yield encode(batch)


def _table_json_stream(columns: list[str], rows: Iterator[list[Any]], per_chunk: int) -> Iterator[bytes]:
    yield b'{"fields": ' + json.dumps(columns).encode() + b', "data": ['
    first = True
    for batch in _batches(rows, per_chunk):
        text = ", ".join(json.dumps(r) for r in batch)
        yield (text if first else ", " + text).encode()
        first = False
    yield b"]}"


__all__ = ["BloomreachSimulator", "SEGMENTATION_ID", "SEGMENTS", "last_event_day", "segment_of"]
