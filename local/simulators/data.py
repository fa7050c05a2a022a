"""The seeded customers every simulator knows, so one sample subject has data at every vendor.

Deterministic: the same ids on every run, so tests and the demo can name them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Customer:
    email: str
    first_name: str
    last_name: str
    registered: str  # the CRM's customer id (Bloomreach "registered" id)
    cookie: str
    visitor_key: str  # Elevate visitor id (UUID)
    events: tuple[dict, ...] = field(default=())

    @property
    def customer_key(self) -> str:
        """Elevate's signed-in customerKey: SHA-256 hex of the customer id."""
        return hashlib.sha256(self.registered.encode()).hexdigest()


_BASE = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)


def _events(seed: int) -> tuple[dict, ...]:
    kinds = ["view", "add_to_cart", "purchase", "view", "newsletter_open"]
    return tuple(
        {
            "type": kinds[(seed + i) % len(kinds)],
            "timestamp": (_BASE + timedelta(days=seed, hours=i * 5)).isoformat(),
            "product_id": f"P-{1000 + seed * 10 + i}",
        }
        for i in range(3 + seed % 3)
    )


def _customer(i: int, first: str, last: str) -> Customer:
    return Customer(
        email=f"{first.lower()}.{last.lower()}@example.com",
        first_name=first,
        last_name=last,
        registered=f"crm-{1000 + i}",
        cookie=f"ck-{i:04d}-{first.lower()}",
        visitor_key=f"7d3f0c2e-5b1a-4c8e-9f00-{i:012d}",
        events=_events(i),
    )


CUSTOMERS: tuple[Customer, ...] = (
    _customer(1, "Ada", "Lovelace"),
    _customer(2, "Alan", "Turing"),
    _customer(3, "Grace", "Hopper"),
    _customer(4, "Edsger", "Dijkstra"),
    _customer(5, "Barbara", "Liskov"),
)

# The subject `make demo` asks about: present at every vendor.
SAMPLE = CUSTOMERS[0]
# An address no simulator knows ("no data held").
UNKNOWN_EMAIL = "nobody@example.com"


def many_customers(count: int) -> tuple[Customer, ...]:
    """`count` more customers, each its own subject (bench/bench_scale.py): the same ids on every run, none of
    them one of CUSTOMERS. A simulator knows them once given to its `seed`."""
    return tuple(_customer(1000 + i, "Subject", f"Number{i}") for i in range(1, count + 1))


def by_customer_key(key: str) -> Customer | None:
    """Elevate accepts the visitor id or the SHA-256 of the customer id."""
    for c in CUSTOMERS:
        if key in (c.visitor_key, c.customer_key):
            return c
    return None
