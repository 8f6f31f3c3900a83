"""The driver supervisor: failures retried with jittered backoff and reported; bugs propagate."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.errors import PermanentDeviceError, TransientDeviceError
from agent.readings import DeviceIdentity
from agent.supervise import Backoff, supervise_driver
from drivers.base import DeviceState


class RecordingReporter:
    """Our own DeviceReporter seam, recording what the supervisor reports."""

    def __init__(self) -> None:
        self.states: list[tuple[DeviceState, str | None]] = []
        self.counters: dict[str, int] = {}

    def set_state(self, state: DeviceState, reason: str | None = None) -> None:
        self.states.append((state, reason))

    def set_identity(self, identity: DeviceIdentity) -> None: ...
    def set_battery(self, percent: int) -> None: ...
    def set_signal(self, rssi_dbm: int) -> None: ...
    def set_clock_offset(self, offset_s: float) -> None: ...

    def count(self, counter: str, n: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + n


class ScriptedDriver:
    """A driver (our seam) whose sessions fail as scripted; records run and close calls."""

    name = "scripted"

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.runs = 0
        self.closes = 0
        self.done = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.failures:
            raise self.failures.pop(0)
        self.done.set()
        await asyncio.sleep(3600)

    async def close(self) -> None:
        self.closes += 1


async def test_transient_failures_are_retried_and_reported() -> None:
    driver = ScriptedDriver([TransientDeviceError("link lost"), TransientDeviceError("again")])
    reporter = RecordingReporter()
    task = asyncio.create_task(supervise_driver(driver, reporter, Backoff(min_s=0.01, max_s=0.05)))
    await asyncio.wait_for(driver.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert driver.runs == 3
    assert driver.closes == 3  # every session released, including the cancelled one
    assert reporter.states == [
        (DeviceState.DISCONNECTED, "link lost"),
        (DeviceState.DISCONNECTED, "again"),
    ]
    assert reporter.counters == {"session_failures": 2, "sessions": 3}


async def test_permanent_failure_is_an_error_state_at_the_cap() -> None:
    driver = ScriptedDriver([PermanentDeviceError("serial mismatch")])
    reporter = RecordingReporter()
    backoff = Backoff(min_s=0.01, max_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(supervise_driver(driver, reporter, backoff))
    await asyncio.wait_for(driver.done.wait(), 5)
    elapsed = loop.time() - started
    task.cancel()
    assert reporter.states == [(DeviceState.ERROR, "serial mismatch")]
    assert elapsed >= 0.3  # waited the cap, not the minimum: no hot loop on a permanent fault


async def test_a_reconnect_request_ends_a_long_error_backoff() -> None:
    # The technician swapped the wrong device for the right one and asks to reconnect:
    # the hub must not sit out the error backoff (two minutes on a real hub) first.
    driver = ScriptedDriver([PermanentDeviceError("serial mismatch")])
    restart_now = asyncio.Event()
    task = asyncio.create_task(
        supervise_driver(
            driver, RecordingReporter(), Backoff(min_s=0.01, max_s=3600), restart_now=restart_now
        )
    )
    try:
        while driver.runs < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not driver.done.is_set()  # in its hour-long backoff
        restart_now.set()
        await asyncio.wait_for(driver.done.wait(), 5)
        assert driver.runs == 2
        assert not restart_now.is_set()  # consumed: the next failure backs off again
    finally:
        task.cancel()


async def test_a_reconnect_request_restarts_a_running_session() -> None:
    driver = ScriptedDriver([])
    reporter = RecordingReporter()
    restart_now = asyncio.Event()
    task = asyncio.create_task(
        supervise_driver(driver, reporter, Backoff(min_s=0.01, max_s=1), restart_now=restart_now)
    )
    try:
        await asyncio.wait_for(driver.done.wait(), 5)  # streaming
        driver.done.clear()
        restart_now.set()
        await asyncio.wait_for(driver.done.wait(), 5)  # a new session
        assert (driver.runs, reporter.counters["sessions"]) == (2, 2)
        assert driver.closes >= 1  # the old one was released
        assert reporter.states == []  # a requested restart is not a failure
    finally:
        task.cancel()


async def test_a_bug_propagates_instead_of_being_swallowed() -> None:
    driver = ScriptedDriver([ZeroDivisionError("bug")])
    with pytest.raises(ZeroDivisionError):
        await supervise_driver(driver, RecordingReporter(), Backoff(min_s=0.01, max_s=0.02))
    assert driver.closes == 1


def test_full_jitter_stays_within_bounds_and_grows() -> None:
    backoff = Backoff(min_s=1.0, max_s=60.0)
    rng = random.Random(4)
    for attempt in range(12):
        delays = [backoff.delay_s(attempt, rng) for _ in range(200)]
        ceiling = min(60.0, 2.0**attempt)
        assert all(1.0 <= d <= ceiling for d in delays)
    late = [backoff.delay_s(10, rng) for _ in range(500)]
    assert max(late) > 45  # spread across the whole window, not clustered at the minimum
    assert min(late) < 15


def test_storage_errors_retry_soon_whatever_the_attempt() -> None:
    from agent.errors import OutboxError
    from agent.supervise import STORAGE_RETRY_S, delay_for_error

    backoff = Backoff(min_s=1.0, max_s=120.0)
    delays = {delay_for_error(OutboxError("disk full"), n, backoff) for n in range(20)}
    assert delays == {STORAGE_RETRY_S}
