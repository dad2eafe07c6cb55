"""Retry timing for delivery: capped exponential backoff with jitter, and ``Retry-After``.

Pure functions; the ``Deliverer`` keeps the schedule, the HTTP sender parses the header.
"""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime

#: a Retry-After longer than this is treated as this (a misconfigured endpoint must not
#: park a package for days).
RETRY_AFTER_CAP = 3600.0


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float,
    retry_after: float | None,
    rng: random.Random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: capped exponential, "equal" jitter.

    ``attempt`` counts failures so far (1 after the first). The delay is drawn from the
    upper half of the exponential step, so jitter spreads many agents apart while a
    failing endpoint still gets at most one attempt per half step (no retry storm). A
    ``retry_after`` from the endpoint is a floor, itself capped at ``RETRY_AFTER_CAP``.
    """
    exponent = min(max(attempt - 1, 0), 60)
    step = min(cap, base * 2.0**exponent)
    delay = rng.uniform(step / 2.0, step)
    if retry_after is not None:
        delay = max(delay, min(max(retry_after, 0.0), RETRY_AFTER_CAP))
    return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
