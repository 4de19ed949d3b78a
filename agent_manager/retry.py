"""Retry policy and a pure backoff function, shared by the server, workers and the LLM client."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


def exponential_backoff(
    attempt: int,
    *,
    base: float = 1.0,
    factor: float = 2.0,
    maximum: float = 60.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    ``base * factor**(attempt-1)``, capped at ``maximum``, then spread by up to
    ``±jitter`` of itself so that many clients failing together do not retry together.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    try:
        raw = base * factor ** (attempt - 1)
    except OverflowError:  # a worker retrying for days: just wait the maximum
        raw = math.inf
    delay = min(maximum, raw)
    if jitter:
        spread = (rng or random).uniform(-jitter, jitter)
        delay = max(0.0, delay * (1.0 + spread))
    return delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to try, and how long to wait between tries."""

    max_attempts: int = 3
    base: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number ``attempt``."""
        return exponential_backoff(
            attempt,
            base=self.base,
            factor=self.factor,
            maximum=self.maximum,
            jitter=self.jitter,
            rng=rng,
        )

    def gives_up_after(self, attempt: int) -> bool:
        """True when ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts
