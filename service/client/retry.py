"""When to try a request again, and how long to wait first.

A 429 (the model's queue is full) or 503 (not ready) means the service did nothing, so any
request may be retried, after the `Retry-After` it sent. A connection that could not be opened
sent nothing either. Any other transport failure (a reset, a timeout) may have lost the answer
to a request that was applied; only idempotent requests are retried then: reads, predictions,
and partial-fit batches with a batch id, which the service applies at most once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({429, 503})
NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries per request in all; `backoff` seconds before the first retry after a
    connection failure (doubling each time), also used for a 429 without `Retry-After`;
    `max_wait` caps any single wait, `Retry-After` included."""

    attempts: int = 8
    backoff: float = 0.2
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_wait < 0:
            raise ValueError("attempts must be at least 1; backoff and max_wait not negative")


@dataclass
class Tally:
    """Retries made while sending, for a caller that reports them."""

    throttled: int = 0
    reconnects: int = 0


Outcome = httpx.Response | httpx.TransportError


def wait_before_retry(
    outcome: Outcome, *, attempt: int, idempotent: bool, policy: RetryPolicy, tally: Tally
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when `outcome` is final."""
    if attempt + 1 >= policy.attempts:
        return None
    if isinstance(outcome, httpx.Response):
        if outcome.status_code not in RETRY_STATUSES:
            return None
        tally.throttled += 1
        told = retry_after_seconds(outcome.headers.get("retry-after"))
        return min(policy.backoff if told is None else told, policy.max_wait)
    if not (idempotent or isinstance(outcome, NOTHING_SENT)):
        return None
    tally.reconnects += 1
    return min(policy.backoff * 2.0**attempt, policy.max_wait)


@dataclass
class Attempts:
    """One request's tries, for the sending loop of either client: after each outcome, the
    seconds to wait before the next try, or None when the outcome is final."""

    policy: RetryPolicy
    idempotent: bool
    tally: Tally = field(default_factory=Tally)
    made: int = 0

    def wait_after(self, outcome: Outcome) -> float | None:
        wait = wait_before_retry(
            outcome, attempt=self.made, idempotent=self.idempotent, policy=self.policy,
            tally=self.tally,
        )  # fmt: skip
        self.made += 1
        return wait


def retry_after_seconds(header: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date (RFC 9110); None if absent or bad."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
