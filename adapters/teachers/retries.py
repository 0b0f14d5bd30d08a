"""Usage accounting and retries for the HTTP teachers.

429, 5xx and connection failures are retried with exponential backoff and jitter (honouring the
server's ``retry-after``); 401/403/404 stop the teacher; any other 4xx refuses one request only.
Every retry is counted in ``Usage`` so that the stage manifest shows it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from adapters.teachers.protocol import TeacherError, TeacherReply, TeacherUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Usage:
    """Cumulative requests, retries, tokens and cost of one teacher, for the stage manifest."""

    requests: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True

    def add(self, reply: TeacherReply) -> TeacherReply:
        self.requests += 1
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        self.cost_usd += reply.cost_usd
        return reply

    def as_dict(self) -> dict:
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6)}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt k waits backoff_s·2^k (capped), halved plus a random half."""

    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        cap = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return cap / 2 + random.uniform(0, cap / 2)


@dataclass(frozen=True)
class Failure:
    """A failed HTTP call, classified: retry it or not, after how long the server asked, and what to say."""

    retryable: bool
    message: str
    retry_after: float | None = None
    fatal: bool = False  # auth/not-found: no other request can succeed either


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait from ``retry-after-ms`` or ``retry-after`` (seconds), if it gave one."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers[name]) / scale
        except (KeyError, TypeError, ValueError):  # absent, no headers, or an HTTP date (then: our own backoff)
            continue
    return None


def status_failure(status: int, message: str, headers: Any = None) -> Failure:
    """429 and 5xx are transient; 401/403/404 mean nothing will work; other 4xx refuse this request only."""
    return Failure(retryable=status == 429 or status >= 500, message=f"HTTP {status}: {message}",
                   retry_after=retry_after_seconds(headers), fatal=status in (401, 403, 404))


def call_with_retries(call: Callable[[], T], classify: Callable[[Exception], Failure | None], *, what: str,
                      policy: RetryPolicy, usage: Usage, redact: Callable[[str], str] = str,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``call``; retry transient failures per ``policy`` (counted in ``usage.retries``), fail at once otherwise."""
    for attempt in range(policy.retries + 1):
        try:
            return call()
        except Exception as e:  # classified right below; what classify does not know re-raises
            failure = classify(e)
            if failure is None:
                raise
            message = redact(failure.message)
        if not failure.retryable:
            raise (TeacherUnavailable if failure.fatal else TeacherError)(f"{what}: {message}") from None
        if attempt == policy.retries:
            raise TeacherUnavailable(f"{what}: still failing after {policy.retries + 1} attempt(s): {message}") from None
        wait = policy.delay(attempt, failure.retry_after)
        log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", what, message, wait, attempt + 2, policy.retries + 1)
        usage.retries += 1
        sleep(wait)
    raise AssertionError("unreachable")


def redactor(secret: str | None) -> Callable[[str], str]:
    """A function that replaces ``secret`` by ``***`` in a message (identity when there is no secret)."""
    return (lambda text: text.replace(secret, "***")) if secret else str
