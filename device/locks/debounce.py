"""Software debounce for door sensors: a reading counts only once it has held for a set time.

Reed switches bounce: when a door closes, the contact makes and breaks several times within a few
milliseconds, and a slammed door can rattle it for longer (HARDWARE.md section 6). Without a
debounce, one closing would be reported as a burst of open/closed changes. This module is pure (no
clock, no I/O): the caller passes each raw sample with the time it was taken, so tests drive it
with plain numbers.
"""

from __future__ import annotations

import math

TIME_SLACK_S = 1e-9
"""Holds shorter than ``stable_s`` by at most this much still count: times are float sums, and
``0.145 - 0.115`` falls just short of ``0.030``, which would delay a report by a whole sample."""


class Debouncer:
    """Turns raw samples of one two-state input into stable values.

    A raw value becomes the stable value once every sample since it was first seen has had that
    value for at least ``stable_s`` seconds. The "hold" is measured between samples: a change that
    happens and reverts between two samples is never seen, so sample more often than ``stable_s``.
    """

    def __init__(self, stable_s: float) -> None:
        if not math.isfinite(stable_s) or stable_s < 0:
            raise ValueError(
                f"debounce time must be a finite number >= 0 seconds, got {stable_s!r}"
            )
        self.stable_s = stable_s
        self.state: bool | None = None
        """The stable value; None (unknown) until the first reading has held for ``stable_s``."""
        self._raw: bool | None = None
        self._since = 0.0

    def update(self, raw: bool, now: float) -> bool | None:
        """Feed one sample taken at ``now`` (monotonic seconds, never decreasing).

        Returns the new stable value when this sample confirms a change (including the first stable
        value after start), and None otherwise, so each change is reported exactly once.
        """
        if raw != self._raw:
            self._raw, self._since = raw, now
        if raw != self.state and now - self._since >= self.stable_s - TIME_SLACK_S:
            self.state = raw
            return raw
        return None
