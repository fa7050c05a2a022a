"""Time, and the local time-scale that shrinks vendor days into seconds.

Production runs with scale 1. Locally `DSRFLOW_TIME_SCALE=86400` makes one vendor day last one real second:
the connectors' schedules divide their durations by the scale and the simulators multiply elapsed real time
by it, so both sides agree on "the next day" and "after 5 days of archiving".
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

TIME_SCALE_ENV = "DSRFLOW_TIME_SCALE"


def utcnow() -> datetime:
    return datetime.now(UTC)


def time_scale() -> float:
    raw = os.environ.get(TIME_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{TIME_SCALE_ENV} must be a number, got {raw!r}") from None
    if scale <= 0:
        raise ValueError(f"{TIME_SCALE_ENV} must be positive, got {raw!r}")
    return scale


def scaled(duration: timedelta, scale: float | None = None) -> timedelta:
    """A vendor-time duration expressed in real time."""
    return duration / (time_scale() if scale is None else scale)


def iso_z(moment: datetime) -> str:
    """The timestamp format Step Functions' Wait TimestampPath accepts: whole seconds, UTC, 'Z'."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
