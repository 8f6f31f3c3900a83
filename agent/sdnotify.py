"""systemd notification protocol (sd_notify), without a library.

READY=1 once the config is valid and the outbox is open; WATCHDOG=1 at half of
WATCHDOG_USEC, and only while the event loop and the outbox make progress; STOPPING=1 on
shutdown. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

_MAX_INTERVAL_S: Final = 30.0  # reliability.md R11: ping at least every 30 s


class Notifier:
    """Sends datagrams to $NOTIFY_SOCKET; a no-op when it is unset."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        """Read the socket address and watchdog interval from the environment (no I/O)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # A leading '@' is an abstract-namespace socket (sd_notify(3)).
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        is_for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval_s: float | None = (
            min(int(usec) / 2e6, _MAX_INTERVAL_S) if usec.isdigit() and is_for_us else None
        )

    @property
    def is_enabled(self) -> bool:
        """Whether we run under systemd with a notify socket."""
        return bool(self._address)

    def notify(self, state: str) -> None:
        """Send one state line, e.g. ``READY=1``. Failures are logged, never raised."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(state.encode())
        except OSError as exc:
            # systemd gone or socket not ours: the watchdog will tell systemd if it matters.
            log.warning("sd_notify %s failed: %s", state.split("=", 1)[0], exc)

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is complete."""
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        """Keep-alive ping; only call while the agent is making progress."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd we are shutting down."""
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        """Free-form status line shown by ``systemctl status``."""
        self.notify(f"STATUS={text}")


async def watchdog_loop(
    notifier: Notifier,
    is_making_progress: Callable[[], Awaitable[bool]],
    *,
    interval_s: float | None = None,
    probe_timeout_s: float = 10.0,
) -> None:
    """Ping WATCHDOG=1 every interval, but only after a successful progress probe.

    If the event loop is blocked this coroutine cannot run, so pings stop and systemd
    kills and restarts the agent. If the probe (e.g. an outbox round trip) hangs or says
    no, the ping is skipped for the same effect.
    """
    period_s = interval_s or notifier.watchdog_interval_s
    if period_s is None:
        return
    while True:
        try:
            async with asyncio.timeout(probe_timeout_s):
                healthy = await is_making_progress()
        except TimeoutError:
            healthy = False
        if healthy:
            notifier.watchdog()
        else:
            log.error("watchdog: no progress; withholding the systemd keep-alive")
        await asyncio.sleep(period_s)
