"""How the client rides out a failing upstream: retries with jittered backoff, and a breaker.

- `RetryPolicy`: the idempotent GET is tried again after a connection that failed (refused or
  timed out: the request never left) and after 502, 503 and 504 (not after a slow answer: that
  would only add load), waiting `backoff * 2**attempt`, jittered, or what `Retry-After` asks;
  never past the fetch deadline.
- `CircuitBreaker`: after `failures` failed fetches in a row the upstream is left alone for
  `reset_seconds` (callers fail fast; the cache serves stale entries where it has them), then
  one probe goes through: its success closes the breaker, its failure opens it again.

    breaker = CircuitBreaker(failures=5, reset_seconds=5)
    if breaker.allow(): ...; breaker.record(ok=True)
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    backoff: float = 0.1

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return retry_after
        return self.backoff * 2.0**attempt * random.uniform(0.5, 1.5)  # noqa: S311 - jitter


class CircuitBreaker:
    """closed -> (failures in a row) -> open -> (reset_seconds) -> half-open -> one probe."""

    def __init__(self, failures: int = 5, reset_seconds: float = 5.0) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._failed_in_a_row = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probing or time.monotonic() >= self._opened_at + self.reset_seconds:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a fetch go to the upstream now? In half-open, only one at a time (the probe)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """The probe ended without a verdict (cancelled, or a body too large): let another
        one through. Harmless after `record`."""
        self._probing = False

    def record(self, ok: bool) -> None:
        self._probing = False
        if ok:
            self._failed_in_a_row, self._opened_at = 0, None
            return
        self._failed_in_a_row += 1
        if self._opened_at is not None or self._failed_in_a_row >= self.failures:
            self._opened_at = time.monotonic()
