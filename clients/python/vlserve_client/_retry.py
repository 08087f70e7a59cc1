"""When to retry, and how long to wait first."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

# Failures where the request surely did no work, or where repeating it is harmless: inference
# has no side effects. Read timeouts are not retried: the server is already busy with it.
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
RETRY_STATUSES = frozenset({503})


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter, at most `max_retries` times after the first try.

    A `Retry-After` header is honoured as given; one longer than `max_delay` is not waited
    for: the error is raised, and its `retry_after` says how long the server asked for.
    """

    max_retries: int = 2
    backoff: float = 0.5  # the first wait; each later one doubles
    max_delay: float = 8.0
    jitter: bool = True

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number `attempt` (0-based), or None: give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_delay else None
        wait = min(self.max_delay, self.backoff * 2 ** attempt)
        # "equal jitter": spread clients out but never retry at once
        return wait / 2 + random.uniform(0, wait / 2) if self.jitter else wait

    def after_response(self, attempt: int, response: httpx.Response) -> float | None:
        if response.status_code not in RETRY_STATUSES:
            return None
        return self.delay(attempt, parse_retry_after(response.headers.get("retry-after")))

    def after_error(self, attempt: int, error: Exception) -> float | None:
        return self.delay(attempt) if isinstance(error, RETRY_ERRORS) else None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
