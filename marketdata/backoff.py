"""Capped, jittered exponential backoff (full jitter), reset after a period of health."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float = 0.25, cap: float = 30.0, factor: float = 2.0, rng: random.Random | None = None):
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base, self.cap, self.factor = base, cap, factor
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [base/2, min(cap, base*factor^n)]."""
        ceiling = min(self.cap, self.base * (self.factor ** self.attempt))
        self.attempt += 1
        return self._rng.uniform(min(self.base / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempt = 0
