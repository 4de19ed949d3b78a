"""exponential_backoff and RetryPolicy: growth, cap, jitter bounds, the last attempt."""

from __future__ import annotations

import random

import pytest

from agent_manager.retry import RetryPolicy, exponential_backoff


def test_grows_exponentially_from_base() -> None:
    delays = [
        exponential_backoff(n, base=0.5, factor=3.0, maximum=1e9, jitter=0) for n in (1, 2, 3, 4)
    ]
    assert delays == [0.5, 1.5, 4.5, 13.5]


def test_defaults_double_from_one_second() -> None:
    assert [exponential_backoff(n, jitter=0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 16]


def test_is_capped_at_maximum() -> None:
    delays = [exponential_backoff(n, base=1, maximum=10, jitter=0) for n in range(1, 12)]
    assert delays[:4] == [1, 2, 4, 8]
    assert delays[4:] == [10] * 7
    assert delays == sorted(delays)


def test_zero_base_means_no_wait() -> None:
    assert exponential_backoff(7, base=0.0) == 0.0


@pytest.mark.parametrize("attempt", [1_100, 10_000, 1_000_000])
def test_a_very_late_attempt_still_waits_the_maximum(attempt: int) -> None:
    # A worker retrying an unreachable server for hours counts attempts this high;
    # factor**attempt overflows a float long before, and the delay must stay capped.
    assert exponential_backoff(attempt, maximum=30, jitter=0) == 30
    delay = exponential_backoff(attempt, maximum=30, jitter=0.5, rng=random.Random(1))
    assert 15 <= delay <= 45


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempt_below_one_is_rejected(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        exponential_backoff(attempt)


@pytest.mark.parametrize("jitter", [0.1, 0.5, 1.0])
def test_jitter_stays_within_its_bounds(jitter: float) -> None:
    rng = random.Random(1234)
    for attempt in range(1, 10):
        nominal = min(60.0, 2.0 ** (attempt - 1))
        delays = [exponential_backoff(attempt, jitter=jitter, rng=rng) for _ in range(500)]
        assert all(nominal * (1 - jitter) <= d <= nominal * (1 + jitter) for d in delays)
        assert all(d >= 0 for d in delays)
        # Spread over the whole band, not clustered at the nominal value.
        assert min(delays) < nominal * (1 - jitter / 2)
        assert max(delays) > nominal * (1 + jitter / 2)


def test_jitter_above_the_cap_goes_both_ways() -> None:
    # The cap applies before the spread, so capped delays still spread around it.
    rng = random.Random(7)
    delays = [exponential_backoff(20, maximum=10, jitter=0.2, rng=rng) for _ in range(200)]
    assert min(delays) < 10 < max(delays)
    assert all(8 <= d <= 12 for d in delays)


def test_jitter_larger_than_one_never_goes_negative() -> None:
    rng = random.Random(99)
    delays = [exponential_backoff(3, jitter=3.0, rng=rng) for _ in range(500)]
    assert all(d >= 0.0 for d in delays)
    assert 0.0 in delays


def test_same_seed_same_delays() -> None:
    first = [exponential_backoff(n, rng=random.Random(42)) for n in range(1, 8)]
    again = [exponential_backoff(n, rng=random.Random(42)) for n in range(1, 8)]
    assert first == again
    other = [exponential_backoff(n, rng=random.Random(43)) for n in range(1, 8)]
    assert first != other


def test_no_jitter_never_touches_the_random_source() -> None:
    class Exploding(random.Random):
        def uniform(self, a: float, b: float) -> float:
            raise AssertionError("jitter=0 must not draw")

    assert exponential_backoff(3, jitter=0, rng=Exploding()) == 4


# -- RetryPolicy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_attempts", "attempt", "gives_up"),
    [(3, 1, False), (3, 2, False), (3, 3, True), (3, 4, True), (1, 1, True), (5, 4, False)],
)
def test_gives_up_after_the_last_allowed_attempt(
    max_attempts: int, attempt: int, gives_up: bool
) -> None:
    assert RetryPolicy(max_attempts=max_attempts).gives_up_after(attempt) is gives_up


def test_policy_delay_is_the_backoff_with_its_settings() -> None:
    policy = RetryPolicy(base=0.25, factor=4.0, maximum=5.0, jitter=0.3)
    for attempt in range(1, 6):
        assert policy.delay(attempt, random.Random(attempt)) == exponential_backoff(
            attempt,
            base=0.25,
            factor=4.0,
            maximum=5.0,
            jitter=0.3,
            rng=random.Random(attempt),
        )
    assert RetryPolicy(base=0.25, factor=4.0, maximum=5.0, jitter=0).delay(3) == 4.0
    assert RetryPolicy(base=0.25, factor=4.0, maximum=5.0, jitter=0).delay(4) == 5.0


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 10  # type: ignore[misc]
