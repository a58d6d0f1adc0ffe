"""Retry policy: exponential backoff with full jitter.

The delay before retry ``n`` (``n`` = 1 after the first failed attempt) is drawn uniformly from
``[0, min(cap, base * 2 ** (n - 1))]`` ("full jitter", as in the AWS architecture blog's
analysis): retries of many failed tasks spread out instead of arriving in waves. With
``jitter=False`` the delay is the upper bound itself.

Defaults: ``max_attempts=5`` (the first attempt included), ``base=1.0`` s, ``cap=60.0`` s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["RetryPolicy", "Uniform", "backoff_bound"]


class Uniform(Protocol):
    """What the policy needs of a random generator (``random.Random`` fits)."""

    def uniform(self, a: float, b: float) -> float: ...


def backoff_bound(retry: int, base: float, cap: float) -> float:
    """The upper bound of the delay before retry ``retry`` (1-based)."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    exponent = min(retry - 1, 1024)  # 2.0**1024 overflows; the cap wins long before
    try:
        return min(cap, base * 2.0**exponent)
    except OverflowError:
        return cap


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, a failing task or workflow step is tried."""

    max_attempts: int = 5
    base: float = 1.0
    cap: float = 60.0
    jitter: bool = True
    rng: Uniform = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError("max_attempts must be an int >= 1")
        if not self.base > 0 or not self.cap > 0:
            raise ValueError("base and cap must be > 0 seconds")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry ``retry`` (1 = the first retry)."""
        bound = backoff_bound(retry, self.base, self.cap)
        return self.rng.uniform(0.0, bound) if self.jitter else bound
