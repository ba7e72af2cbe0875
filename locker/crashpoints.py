"""Named steps at which the crash tests kill the locker process (docs/locker.md, "Crash safety").

``LINLI_CRASH_AT=name`` (or ``name#n`` for its n-th passage) makes :func:`reached` send SIGKILL
to this process at that step: no cleanup, no ``finally``, as a power cut or the OOM killer would.
Unset (always, outside those tests) it costs one comparison. :data:`POINTS` lists the steps.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

POINTS: Final = (
    "scan-accepted",  # the credential is used and the open request journaled, nothing pulsed
    "command-accepted",  # a server command's executor ran, its transaction not yet committed
    "before-pulse",  # about to energise the relay
    "after-pulse",  # the relay was pulsed, the pulse is not yet recorded
    "pulse-recorded",  # the pulse and its event are committed
    "door-opened",  # the door was seen open and it is recorded
    "door-closed",  # the flow's end (deposit or pickup) is committed
)


def _target() -> tuple[str, int] | None:
    value = os.environ.get("LINLI_CRASH_AT", "")
    if not value:
        return None
    name, _, nth = value.partition("#")
    if name not in POINTS:
        raise ValueError(f"LINLI_CRASH_AT: unknown crash point {name!r}; one of {POINTS}")
    return name, int(nth or "1")


_TARGET = _target()
_passed: dict[str, int] = {}
_lock = threading.Lock()


def reached(name: str) -> None:
    """Mark step ``name``; die here if this is the step (and passage) the test asked for."""
    if _TARGET is None or _TARGET[0] != name:
        return
    with _lock:
        _passed[name] = _passed.get(name, 0) + 1
        if _passed[name] == _TARGET[1]:
            os.kill(os.getpid(), signal.SIGKILL)
