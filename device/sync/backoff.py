"""Jittered exponential backoff for reconnecting: pure, seeded in tests."""

from __future__ import annotations

import random


class Backoff:
    """Delays doubling from ``minimum`` to ``maximum``, each drawn from the upper half of its step.

    The jitter matters after a power cut: every device of a site boots together, and without it
    they would all knock on the broker in the same second, again and again.
    """

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if minimum <= 0 or maximum < minimum:
            raise ValueError(f"need 0 < minimum <= maximum, got {minimum} and {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        step = min(self.maximum, self.minimum * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        """After a successful connection the next failure starts again from ``minimum``."""
        self.failures = 0
