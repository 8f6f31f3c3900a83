"""The real agent (``agent.app.Runtime``) in-process, fed by a generator driver of our own.

``GenDriver`` implements the ``drivers.base.Driver`` seam (an allowed fake: our own seam,
STYLE.md 9): it captures readings through the very ``ReadingSink`` a serial or BLE driver
gets (outbox COMMIT, health, publisher wake), as fast as the test asks, so a week of 1 Hz
readings fits in seconds. Everything behind the seam is real: config models, outbox,
publisher, status/health, paho and a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from agent.app import Runtime
from agent.clock import HubTime, read_boot_id
from agent.config import (
    Config,
    HealthConfig,
    HubConfig,
    MqttConfig,
    PatientConfig,
    PayloadConfig,
    StorageConfig,
)
from agent.readings import Cadence, DeviceIdentity, Kind, Quantity, make_reading
from drivers import DRIVERS, DriverSpec
from drivers.base import DeviceSettings, DeviceState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import pytest

    from agent.clock import Clock
    from agent.health import Health
    from agent.outbox import Outbox
    from agent.readings import Reading
    from drivers.base import DriverContext

HUB_ID = "fault-hub"
PATIENT_ID = "patient-fault-0001"
GEN_DRIVER: Final = "fault-gen"
NS_PER_S = 1_000_000_000


class GenSettings(DeviceSettings):
    """Config entry of the generator driver (tests only)."""

    driver: Literal["fault-gen"] = "fault-gen"


@dataclass
class _Order:
    count: int
    per_call: int
    tick_s: float
    done: asyncio.Future[int]


class GenDriver:
    """A driver whose device is the test: ``produce`` asks it for readings."""

    def __init__(self, settings: GenSettings, ctx: DriverContext) -> None:
        """Store arguments (no I/O)."""
        self.name = settings.id
        self._ctx = ctx
        self._device = DeviceIdentity(device_id=settings.id, driver=GEN_DRIVER)
        self._orders: asyncio.Queue[_Order] = asyncio.Queue()
        self.captured = 0

    async def produce(self, count: int, *, per_call: int = 50, tick_s: float = 0.0) -> int:
        """Capture ``count`` SpO2 readings, ``per_call`` per COMMIT; return how many stored.

        ``tick_s`` advances a ``CompressedClock`` by that much per reading (1.0 = 1 Hz).
        """
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._orders.put(_Order(count, per_call, tick_s, done))
        return await done

    async def run(self) -> None:
        """Serve orders until cancelled."""
        self._ctx.reporter.set_state(DeviceState.CONNECTED)
        while True:
            order = await self._orders.get()
            try:
                stored = await self._serve(order)
            except BaseException as exc:
                if not order.done.done():
                    order.done.set_exception(exc)
                raise
            order.done.set_result(stored)

    async def _serve(self, order: _Order) -> int:
        stored = 0
        left = order.count
        clock = self._ctx.clock
        while left > 0:
            batch = []
            for _ in range(min(order.per_call, left)):
                if order.tick_s and isinstance(clock, CompressedClock):
                    clock.advance(order.tick_s)
                batch.append(self._reading(clock.now()))
            result = await self._ctx.sink.capture(batch)
            stored += result.stored
            left -= len(batch)
            self.captured += result.stored
        return stored

    def _reading(self, now: HubTime) -> Reading:
        n = self.captured
        return make_reading(
            device=self._device,
            patient=self._ctx.patient,
            kind=Kind.SPO2,
            cadence=Cadence.CONTINUOUS,
            values=(Quantity("spo2", 90.0 + n % 9, "%"), Quantity("pulse_rate", 60.0, "/min")),
            received=now,
            driver_version="fault-gen-1",
        )

    async def close(self) -> None:
        """Nothing to release."""


def build(settings: GenSettings, ctx: DriverContext) -> GenDriver:
    """The DRIVERS factory for ``fault-gen``."""
    return GenDriver(settings, ctx)


def register_gen_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add ``fault-gen`` to the driver registry for one test."""
    spec = DriverSpec("tests.faults.agentrun:GenSettings", "tests.faults.agentrun:build")
    monkeypatch.setitem(DRIVERS, GEN_DRIVER, spec)


class CompressedClock:
    """Wall time that ``advance`` moves forward (a week in seconds), synced or not.

    UTC and monotonic move together, so ages computed either way agree; ``jump`` moves
    only UTC (an NTP step or a bad RTC), as a real clock step does.
    """

    def __init__(self, start: datetime, *, synced: bool = True) -> None:
        """Start at ``start`` (aware UTC)."""
        self._base_utc = start
        self._base_mono_ns = time.monotonic_ns()
        self._advanced_ns = 0
        self._step = timedelta(0)
        self.synced = synced
        self._boot_id = read_boot_id()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (both clocks)."""
        self._advanced_ns += int(seconds * NS_PER_S)

    def jump(self, delta: timedelta, *, synced: bool | None = None) -> None:
        """Step the wall clock only (monotonic time is unaffected, as in the kernel)."""
        self._step += delta
        if synced is not None:
            self.synced = synced

    def now(self) -> HubTime:
        """The current simulated hub time."""
        mono_ns = time.monotonic_ns() + self._advanced_ns
        elapsed = timedelta(microseconds=(mono_ns - self._base_mono_ns) // 1000)
        return HubTime(
            utc=self._base_utc + elapsed + self._step,
            monotonic_ns=mono_ns,
            boot_id=self._boot_id,
            clock_synced=self.synced,
        )


def make_config(
    tmp: Path,
    port: int,
    prefix: str,
    *,
    tls: Any = None,
    keepalive_s: int = 5,
    reconnect_min_s: float = 0.1,
    reconnect_max_s: float = 1.0,
    health_interval_s: float = 2.0,
    batch_size: int = 50,
    connect_timeout_s: float = 3.0,
    devices: bool = True,
) -> Config:
    """A config for one hub with one generator device (plaintext unless ``tls``)."""
    return Config(
        hub=HubConfig(id=HUB_ID),
        patient=PatientConfig(id=PATIENT_ID, binding_version=2),
        mqtt=MqttConfig(
            host="127.0.0.1",
            port=port,
            topic_prefix=prefix,
            tls=tls,
            insecure_plaintext=tls is None,
            keepalive_s=keepalive_s,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            connect_timeout_s=connect_timeout_s,
            batch_size=batch_size,
        ),
        storage=StorageConfig(path=tmp / "outbox.db", group_commit_ms=2),
        payload=PayloadConfig(format="compact"),
        health=HealthConfig(interval_s=health_interval_s),
        devices=(GenSettings(id="gen", expected_interval_s=600),) if devices else (),
    )


@dataclass
class RunningAgent:
    """A started Runtime and handles on its parts."""

    runtime: Runtime
    task: asyncio.Task[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def health(self) -> Health:
        """The running generation's health model."""
        return self.runtime.agent.health

    @property
    def gen(self) -> GenDriver:
        """The generator driver."""
        driver = self.runtime.agent.drivers["gen"]
        assert isinstance(driver, GenDriver)
        return driver

    @property
    def is_connected(self) -> bool:
        """Whether the publisher has a broker connection now."""
        return self.runtime.agent.publisher.is_connected


@contextlib.asynccontextmanager
async def running_agent(config: Config, clock: Clock | None = None) -> AsyncIterator[RunningAgent]:
    """Run ``Runtime(config)`` in a task until the block ends (a SIGTERM-like stop)."""
    runtime = Runtime(config, clock=clock)
    task = asyncio.create_task(runtime.run(), name="runtime")
    await wait_for(lambda: runtime._agent is not None or task.done(), 10)
    if task.done():
        task.result()  # raises what stopped it
    try:
        yield RunningAgent(runtime, task)
    finally:
        runtime.request_stop()
        try:
            async with asyncio.timeout(20):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise


async def wait_for(check: Any, timeout_s: float = 10.0, poll_s: float = 0.02) -> float:
    """Poll ``check()`` (sync or async) until truthy; return seconds waited. Raises on timeout."""
    started = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            msg = f"condition not met within {timeout_s} s"
            raise AssertionError(msg)
        await asyncio.sleep(poll_s)


async def no_pending(outbox: Outbox) -> bool:
    """Whether every reading got its PUBACK (PUBACKs may trail the subscriber's copy)."""
    return (await outbox.stats()).pending == 0


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:  # noqa: PTH123
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    msg = "VmRSS not found in /proc/self/status"
    raise RuntimeError(msg)


EPOCH_1970 = datetime(1970, 1, 1, 0, 0, 10, tzinfo=UTC)
