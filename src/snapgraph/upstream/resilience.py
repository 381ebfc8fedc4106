"""How the client rides out a failing upstream: retries with jittered backoff, and a breaker.

- `RetryPolicy`: the idempotent GET is tried again after a connection that failed (refused or
  timed out: the request never left) and after 502, 503 and 504 (not after a slow answer: that
  would only add load), waiting `backoff * 2**attempt`, jittered, or what `Retry-After` asks;
  never past the fetch deadline.
- `CircuitBreaker`: after `failures` failed fetches in a row, from several callers or from an
  unreachable upstream, the upstream is left alone for `reset_seconds` (callers fail fast; the
  cache serves stale entries where it has them), then one probe goes through: its success
  closes the breaker, its failure opens it again. One caller's own failures back off that
  caller alone.

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
    """closed -> (failures in a row) -> open -> (reset_seconds) -> half-open -> one probe.

    It measures the upstream, not one caller: a 500 or a slow answer may be about one caller's
    data (a list the upstream cannot serialize, or builds slowly), so such failures open it
    for everyone only when they come from at least `callers` different callers; an outage
    (no connection at all, or a 502/503/504 from the upstream's infrastructure) counts
    whoever asked. A caller whose own fetches keep failing is backed off alone, for
    `reset_seconds`, after `failures` in a row. `caller` is an opaque name for who asks
    (an HMAC of their credential's value, whichever header and list type carried it; never a
    credential); None means "not a caller's fetch", which counts as the upstream's.
    """

    def __init__(
        self,
        failures: int = 5,
        reset_seconds: float = 5.0,
        *,
        callers: int = 3,
        tracked_callers: int = 10_000,
    ) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._callers_to_open = callers
        self._failed_in_a_row = 0
        self._failing_callers: set[str | None] = set()
        self._outage_in_run = False
        self._opened_at: float | None = None
        self._probing = False
        self._backoff = _CallerBackoff(failures, reset_seconds, tracked_callers)

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probing or time.monotonic() >= self._opened_at + self.reset_seconds:
            return "half-open"
        return "open"

    def allow(self, caller: str | None = None) -> bool:
        """May a fetch go to the upstream now? In half-open, only one at a time (the probe);
        never for a caller in its own backoff."""
        if caller is not None and self._backoff.waiting(caller):
            return False
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def backing_off(self, caller: str | None) -> bool:
        """Whether `caller` alone is being held back (the breaker itself may be closed)."""
        return caller is not None and self._backoff.waiting(caller)

    def release(self) -> None:
        """The probe ended without a verdict (cancelled, or a body too large): let another
        one through. Harmless after `record`."""
        self._probing = False

    def record(self, ok: bool, caller: str | None = None, *, outage: bool = False) -> None:
        """One fetch's verdict; `outage`: the upstream could not be reached or timed out."""
        self._probing = False
        if caller is not None:
            self._backoff.record(caller, ok)
        if ok:
            self._failed_in_a_row, self._opened_at = 0, None
            self._failing_callers.clear()
            self._outage_in_run = False
            return
        self._failed_in_a_row += 1
        self._outage_in_run |= outage or caller is None
        if len(self._failing_callers) < self._callers_to_open:
            self._failing_callers.add(caller)
        if self._opened_at is not None or (
            self._failed_in_a_row >= self.failures and self._upstream_to_blame()
        ):
            self._opened_at = time.monotonic()

    def _upstream_to_blame(self) -> bool:
        return self._outage_in_run or len(self._failing_callers) >= self._callers_to_open


class _CallerBackoff:
    """Callers whose own fetches failed `failures` times in a row, each held back for
    `reset_seconds` after its last failure. Only failing callers are remembered, at most
    `tracked` of them (the oldest forgotten first: a flood of failing callers cannot grow
    it, and a forgotten one merely gets its next fetch tried)."""

    def __init__(self, failures: int, reset_seconds: float, tracked: int) -> None:
        self._failures = failures
        self._reset_seconds = reset_seconds
        self._tracked = tracked
        self._callers: dict[str, tuple[int, float]] = {}  # caller: (failures, last failure)

    def waiting(self, caller: str) -> bool:
        failed, at = self._callers.get(caller, (0, 0.0))
        return failed >= self._failures and time.monotonic() < at + self._reset_seconds

    def record(self, caller: str, ok: bool) -> None:
        failed, _ = self._callers.pop(caller, (0, 0.0))
        if ok:
            return
        self._callers[caller] = (failed + 1, time.monotonic())  # re-inserted: the newest
        while len(self._callers) > self._tracked:
            del self._callers[next(iter(self._callers))]
