"""Catch SIGTERM/SIGINT from the first instant of ``wardlink run``.

systemd may stop the agent while it is still importing its libraries; without this
the default action would kill it mid-start (exit -15) instead of a clean exit 0.
Standard library only, so it can be installed before anything heavy is imported.
"""

from __future__ import annotations

import signal


class EarlySignals:
    """Remembers a stop request that arrives before the event loop takes over."""

    def __init__(self) -> None:
        """Install the handlers now."""
        self.received = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)

    def _note(self, _signum: int, _frame: object) -> None:
        self.received = True
