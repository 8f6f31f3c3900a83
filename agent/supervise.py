"""Run a driver (or any session) forever: restart with jittered backoff, report, never spin.

Transient errors (link dropped, port vanished) retry with full-jitter exponential backoff;
permanent ones (wrong serial, missing pairing) go straight to the cap and are reported as
ERROR. Anything else is a bug: it propagates, the TaskGroup cancels the agent, the process
exits non-zero and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from agent.errors import DeviceError, OutboxError, PermanentDeviceError
from drivers.base import DeviceReporter, DeviceState

if TYPE_CHECKING:
    from drivers.base import Driver

log = logging.getLogger(__name__)

STORAGE_RETRY_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff (AWS architecture blog "Exponential Backoff And Jitter")."""

    min_s: float = 1.0
    max_s: float = 120.0
    # A session that lasted this long counts as healthy: the next failure starts small again.
    healthy_after_s: float = 60.0

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (0-based)."""
        ceiling = min(self.max_s, self.min_s * (2 ** min(attempt, 30)))
        return (rng or random).uniform(self.min_s, max(self.min_s, ceiling))


def delay_for_error(exc: BaseException, attempt: int, backoff: Backoff) -> float:
    """Permanent errors wait the full cap; transient ones back off with jitter."""
    if isinstance(exc, PermanentDeviceError):
        return backoff.max_s
    if isinstance(exc, OutboxError):
        # Storage (disk full, I/O) is not the device's fault: retry soon and steadily, so
        # capture resumes within seconds of space returning, not after a long backoff.
        return min(STORAGE_RETRY_S, backoff.max_s)
    return backoff.delay_s(attempt)


async def supervise_driver(
    driver: Driver,
    reporter: DeviceReporter,
    backoff: Backoff,
    *,
    sleep_scale: float = 1.0,
    restart_now: asyncio.Event | None = None,
) -> None:
    """Run ``driver.run()`` until cancelled, restarting it after device failures.

    Setting ``restart_now`` (a technician's reconnect request) ends the current session
    the way a shutdown does (the driver stores what it holds) and starts a new one, or
    ends a backoff wait at once, so a device fixed in the home need not wait out a
    two-minute error backoff.
    """
    attempt = 0
    while True:
        started = time.monotonic()
        reporter.count("sessions")  # a device whose sessions keep restarting shows it here
        try:
            restarted = await _session(driver, restart_now)
            # A driver returning normally means the session ended (e.g. device went away).
            exc: BaseException | None = None
        except (DeviceError, OutboxError) as err:
            exc = err
            restarted = False
        finally:
            await driver.close()
        if restarted:
            log.info("device %s: session restarted on request", driver.name)
            continue
        if time.monotonic() - started >= backoff.healthy_after_s:
            attempt = 0
        if exc is None:
            delay = backoff.min_s
        else:
            delay = delay_for_error(exc, attempt, backoff)
            state = (
                DeviceState.ERROR
                if isinstance(exc, PermanentDeviceError)
                else (DeviceState.DISCONNECTED)
            )
            reporter.set_state(state, str(exc))
            reporter.count("session_failures")
            # The status reason may name the device's serial or address; the log says
            # only the error's log text (docs/ble.md), the full reason at DEBUG.
            log.warning(
                "device %s: %s (%s); retrying in %.1f s",
                driver.name,
                type(exc).__name__,
                exc.log_text if isinstance(exc, DeviceError) else exc,
                delay,
            )
            log.debug("device %s: %s", driver.name, exc)
            attempt += 1
        await _backoff_wait(delay * sleep_scale, restart_now)


async def _session(driver: Driver, restart_now: asyncio.Event | None) -> bool:
    """One ``driver.run()``; True if ``restart_now`` ended it (it was cancelled for that)."""
    if restart_now is None:
        await driver.run()
        return False
    restart_now.clear()  # a request is for the session running when it is made
    run = asyncio.ensure_future(driver.run())
    wake = asyncio.ensure_future(restart_now.wait())
    try:
        await asyncio.wait({run, wake}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        wake.cancel()
        if not run.done():
            run.cancel()
            # asyncio.wait, not await: our own cancellation must still propagate.
            await asyncio.wait({run})
    if run.cancelled():
        return True
    run.result()  # the driver's own ending: normal, or its DeviceError / OutboxError
    return False


async def _backoff_wait(delay_s: float, restart_now: asyncio.Event | None) -> None:
    if restart_now is None:
        await asyncio.sleep(delay_s)
        return
    # Not cleared first: a request made while the session was failing still counts.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay_s):
            await restart_now.wait()
    restart_now.clear()
