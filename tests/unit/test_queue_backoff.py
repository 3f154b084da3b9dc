"""Retry backoff: exponential with equal jitter, capped (services.tasks.retry_delay_s)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhongshu.services.tasks import retry_delay_s

attempts = st.integers(min_value=1, max_value=1000)
bases = st.floats(min_value=1e-3, max_value=1e3)
caps = st.floats(min_value=1e-3, max_value=1e5)
jitter = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def ceiling(attempt: int, base_s: float, cap_s: float) -> float:
    return min(cap_s, base_s * 2 ** (attempt - 1))


@given(attempts, bases, caps, jitter)
def test_delay_is_between_half_the_ceiling_and_the_ceiling(
    attempt: int, base_s: float, cap_s: float, r: float
) -> None:
    c = ceiling(attempt, base_s, cap_s)
    delay = retry_delay_s(attempt, base_s, cap_s, rand=lambda: r)
    assert c / 2 <= delay <= c
    assert delay <= cap_s


@given(attempts, bases, caps)
def test_delay_with_real_randomness_never_exceeds_the_cap(
    attempt: int, base_s: float, cap_s: float
) -> None:
    delay = retry_delay_s(attempt, base_s, cap_s)
    assert ceiling(attempt, base_s, cap_s) / 2 <= delay <= cap_s


@given(attempts, bases, caps, jitter, jitter)
def test_later_attempts_never_wait_less_until_the_cap(
    attempt: int, base_s: float, cap_s: float, r1: float, r2: float
) -> None:
    # Equal jitter keeps consecutive windows [c/2, c] and [c, 2c] apart, so below the cap
    # even the luckiest next attempt waits at least as long as the unluckiest current one.
    now = retry_delay_s(attempt, base_s, cap_s, rand=lambda: r1)
    nxt = retry_delay_s(attempt + 1, base_s, cap_s, rand=lambda: r2)
    if base_s * 2**attempt <= cap_s:
        assert nxt >= now
    assert ceiling(attempt + 1, base_s, cap_s) >= ceiling(attempt, base_s, cap_s)


def test_first_attempts_double_until_the_cap() -> None:
    top = [retry_delay_s(a, 1.0, 10.0, rand=lambda: 0.999999) for a in range(1, 7)]
    assert top == pytest.approx([1, 2, 4, 8, 10, 10], rel=1e-5)
    bottom = [retry_delay_s(a, 1.0, 10.0, rand=lambda: 0.0) for a in range(1, 7)]
    assert bottom == [0.5, 1, 2, 4, 5, 5]


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempt_below_one_counts_as_the_first(attempt: int) -> None:
    assert retry_delay_s(attempt, 2.0, 60.0, rand=lambda: 0.0) == 1.0


@given(st.integers(min_value=1025, max_value=100_000), bases, caps)
def test_huge_attempt_numbers_still_stay_within_the_cap(
    attempt: int, base_s: float, cap_s: float
) -> None:
    assert cap_s / 2 <= retry_delay_s(attempt, base_s, cap_s) <= cap_s
