"""Failure limits for authentication: exponential lockout per username, key and client IP.

Counts live in memory (a lockout is a speed bump, not state worth a database write per
failed guess), so checks stay synchronous and free. With several replicas and Redis,
``RedisFailureSync`` shares them: every failure is also counted in Redis, a replica that
sees the shared count cross the limit publishes the lock, and every replica pulls locks
once a second — an attacker spreading guesses over replicas gets the limit once, not once
per replica (give or take a second's worth).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from zhongshu import errors

# Bounds memory under a flood of distinct usernames/IPs; the oldest entries are dropped.
MAX_TRACKED = 100_000


@dataclass(slots=True)
class _Record:
    failures: int
    last_at: float
    locked_until: float


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """After ``max_failures`` failures within ``window_s`` a subject is locked for
    ``base_s * 2**(extra failures)`` seconds, capped at ``cap_s``."""

    max_failures: int = 5
    window_s: float = 900.0
    base_s: float = 1.0
    cap_s: float = 900.0


class FailureLimiter:
    """Counts failures per subject (``user:alice``, ``ip:10.0.0.1``, ``key:WK…``).

    Parameters
    ----------
    policies:
        The lockout policy for each subject kind (the part before the first colon);
        ``"*"`` is the fallback.
    clock:
        Seconds; injectable for tests.
    """

    def __init__(
        self,
        policies: dict[str, LockoutPolicy],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert "*" in policies, "a fallback policy ('*') is required"
        self.policies = policies
        self.clock = clock
        self._records: dict[str, _Record] = {}
        # Told of every failure and success (RedisFailureSync shares them across replicas).
        self.on_fail: Callable[[str], None] | None = None
        self.on_succeed: Callable[[str], None] | None = None

    def _policy(self, subject: str) -> LockoutPolicy:
        return self.policies.get(subject.partition(":")[0], self.policies["*"])

    def check(self, subjects: Iterable[str]) -> None:
        """Raise ``TooManyRequests`` while any subject is locked out."""
        now = self.clock()
        wait = 0.0
        for s in subjects:
            rec = self._records.get(s)
            if rec is not None and rec.locked_until > now:
                wait = max(wait, rec.locked_until - now)
        if wait > 0:
            raise errors.TooManyRequests(
                f"too many failed attempts: try again in {max(1, int(wait + 0.999))} s",
                retry_after_s=wait,
            )

    def fail(self, subjects: Iterable[str]) -> None:
        now = self.clock()
        for s in subjects:
            policy = self._policy(s)
            rec = self._records.pop(s, None)
            if rec is None or now - rec.last_at > policy.window_s:
                rec = _Record(0, now, 0.0)
            rec.failures += 1
            rec.last_at = now
            extra = rec.failures - policy.max_failures
            if extra >= 0:
                rec.locked_until = now + min(policy.cap_s, policy.base_s * 2 ** min(extra, 30))
            self._records[s] = rec  # re-inserted last: dicts keep insertion order
            if self.on_fail is not None:
                self.on_fail(s)
        while len(self._records) > MAX_TRACKED:
            self._records.pop(next(iter(self._records)))

    def succeed(self, subjects: Iterable[str]) -> None:
        for s in subjects:
            if self._records.pop(s, None) is not None and self.on_succeed is not None:
                self.on_succeed(s)

    def lock_for(self, subject: str, failures: int) -> float:
        """How long ``failures`` failures within the window lock ``subject`` (0: not)."""
        policy = self._policy(subject)
        extra = failures - policy.max_failures
        return min(policy.cap_s, policy.base_s * 2 ** min(extra, 30)) if extra >= 0 else 0.0

    def window_of(self, subject: str) -> float:
        return self._policy(subject).window_s

    def lock_until(self, subject: str, until: float) -> None:
        """Lock ``subject`` until ``until`` (this limiter's clock) unless locked longer."""
        rec = self._records.get(subject)
        if rec is None:
            rec = self._records[subject] = _Record(0, self.clock(), 0.0)
        rec.locked_until = max(rec.locked_until, until)

    def reset(self) -> None:
        self._records.clear()
