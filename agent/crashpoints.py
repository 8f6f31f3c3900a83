"""Named crash points: a TEST-ONLY hook that kills the agent with SIGKILL at a chosen place.

The fault tests (tests/faults/test_crash_points.py) and bench/crash_soak.py start the real
agent process with

    WARDLINK_CRASH_AT=<point name>    # one of CRASH_POINTS
    WARDLINK_CRASH_AFTER=<n>          # optional: fire on the n-th pass (default 1)

and the process SIGKILLs itself when it passes that point, exactly as a power cut or the
OOM killer would stop it: no ``finally``, no offline status, no WAL checkpoint. Production
never sets these variables; unset, ``crash_point`` is one string comparison.

The points, in the order a reading meets them:

- ``after_commit_before_publish``: the capture COMMIT returned, the publisher not yet woken.
- ``after_publish_before_puback``: the PUBLISH was written to the broker's socket, its PUBACK
  not yet processed (the broker may hold a message the outbox still calls pending).
- ``after_puback_before_mark``: PUBACKs received, ``mark_sent`` not yet committed.

In every case the outbox must still hold every committed reading, and a restart must send
again (at least once) whatever was not marked sent, with the same ``reading_id`` and ``seq``.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

CRASH_AT_ENV: Final = "WARDLINK_CRASH_AT"
CRASH_AFTER_ENV: Final = "WARDLINK_CRASH_AFTER"
CRASH_POINTS: Final = (
    "after_commit_before_publish",
    "after_publish_before_puback",
    "after_puback_before_mark",
)


def _armed_point() -> str | None:
    name = os.environ.get(CRASH_AT_ENV) or None
    if name is not None and name not in CRASH_POINTS:
        # A typo would make a crash test wait for a crash that never comes: say so.
        log.warning("%s=%r is not a crash point (known: %s)", CRASH_AT_ENV, name, CRASH_POINTS)
    return name


def _crash_after() -> int:
    text = os.environ.get(CRASH_AFTER_ENV, "1")
    try:
        passes = int(text)
    except ValueError:
        log.warning(
            "%s=%r is not a whole number; crashing on the first pass", CRASH_AFTER_ENV, text
        )
        return 1
    return max(passes, 1)


# Read once at import: the hot paths pay one comparison when no crash is armed.
_ARMED: Final = _armed_point()
_passes_left = _crash_after() if _ARMED else 0


def crash_point(name: str, before_kill: Callable[[], object] | None = None) -> None:
    """SIGKILL this process if ``name`` is the armed crash point and its pass count is reached.

    Args:
        name: one of ``CRASH_POINTS``.
        before_kill: called just before the kill when the point fires (e.g. to push bytes
            already handed to paho onto the socket, so the broker really has them).
    """
    global _passes_left  # noqa: PLW0603 - one process-wide counter, test-only
    if name != _ARMED:
        return
    _passes_left -= 1
    if _passes_left > 0:
        return
    if before_kill is not None:
        before_kill()
    os.kill(os.getpid(), signal.SIGKILL)
