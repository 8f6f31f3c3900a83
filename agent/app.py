"""The composition root: builds everything from the validated Config and runs it.

One event loop, one TaskGroup, every long-lived task named (``driver:<id>``,
``publisher``, ``watchdog``, ``housekeeping``). A driver failure is retried by its
supervisor and never stops another task; an unexpected exception anywhere propagates,
the TaskGroup cancels everything and the process exits non-zero for systemd to restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent import __version__
from agent.clock import Clock, SystemClock
from agent.configload import load_config, load_config_text
from agent.crashpoints import crash_point
from agent.errors import ConfigError, OutboxError
from agent.outbox import Outbox
from agent.readings import PatientBinding
from agent.sdnotify import Notifier, watchdog_loop
from agent.signals import EarlySignals
from agent.supervise import Backoff, supervise_driver
from drivers import DRIVERS
from drivers.base import CaptureResult, DriverContext

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from agent.config import Config
    from agent.health import Health
    from agent.publisher import Publisher
    from agent.readings import Reading
    from agent.requests import LogLevelOverride
    from drivers.base import DeviceSettings, Driver
    from drivers.ble.adapter import AdapterLadder

    DriverFactory = Callable[[DeviceSettings, DriverContext], Driver]

log = logging.getLogger(__name__)

EX_OK: Final = 0
EX_CONFIG: Final = 78
SHUTDOWN_BUDGET_S: Final = 8.0  # SIGTERM -> exit within 10 s (systemd TimeoutStopSec=15)
HOUSEKEEPING_INTERVAL_S: Final = 300.0
DRIVER_BACKOFF: Final = Backoff(min_s=1.0, max_s=120.0)


class CaptureSink:
    """The ReadingSink drivers get: outbox COMMIT, then health bookkeeping and a publisher wake."""

    def __init__(self, outbox: Outbox, health: Health, on_stored: Callable[[], None]) -> None:
        """Store collaborators (no I/O)."""
        self._outbox = outbox
        self._health = health
        self._on_stored = on_stored

    async def capture(self, readings: Sequence[Reading]) -> CaptureResult:
        """Commit readings, then tell health and the publisher. Raises OutboxError."""
        try:
            result = await self._outbox.capture(readings)
        except OutboxError as exc:
            # Disk full or I/O error: nothing was stored, the device is told nothing.
            self._health.raise_alarm("outbox_write_failed", str(exc))
            raise
        self._health.clear_alarm("outbox_write_failed")
        for reading in readings:
            self._health.note_reading(
                reading.device.device_id, reading.kind.value, reading.received.utc
            )
            log.debug("captured %s %s %s", reading.device.device_id, reading.kind, reading.values)
        crash_point("after_commit_before_publish")
        if result.stored:
            self._on_stored()
        return result


@dataclass
class Agent:
    """One built generation of the agent (a config reload builds the next one)."""

    config: Config
    outbox: Outbox
    health: Health
    publisher: Publisher
    drivers: dict[str, Driver]
    info: dict[str, Any]
    driver_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Set by a reconnect request: ends the device's session or backoff wait (supervise.py).
    restart_now: dict[str, asyncio.Event] = field(default_factory=dict)
    # The Bluetooth adapter recovery ladder (drivers/ble/adapter.py); None without BlueZ devices.
    ble_adapter: AdapterLadder | None = None


def build_agent(
    config: Config,
    outbox: Outbox,
    clock: Clock,
    driver_factories: Mapping[str, DriverFactory] | None = None,
) -> Agent:
    """Build every component from the config around an open outbox (no I/O).

    ``driver_factories`` replaces the registry's factory for some drivers: the demo
    uses it to put BLE drivers on bumble's in-process radio instead of BlueZ.
    """
    # The publishing stack is imported here, after READY=1: systemd hears "ready" as soon
    # as the config is valid and the outbox open (bench/footprint.py times it).
    from agent.configcheck import config_hash  # noqa: PLC0415
    from agent.health import Health  # noqa: PLC0415
    from agent.payloads import PayloadContext, make_encoder  # noqa: PLC0415
    from agent.publisher import Publisher  # noqa: PLC0415

    health = Health(hub_id=config.hub.id, clock=clock)
    if outbox.quarantined is not None:
        health.raise_alarm("outbox_quarantined", f"corrupt outbox moved to {outbox.quarantined}")
    if outbox.data_loss is not None:
        health.raise_alarm("outbox_data_lost", outbox.data_loss)
    encoder = make_encoder(
        config.payload.format,
        PayloadContext(
            hub_id=config.hub.id,
            agent_version=__version__,
            timezone_name=config.hub.timezone,
            patient_id_system=config.payload.patient_id_system,
            compression=config.payload.compression,
        ),
    )
    info: dict[str, Any] = {
        "wardlink": __version__,
        "python": sys.version.split()[0],
        "config_hash": config_hash(config),
        "payload_format": config.payload.format,
        "devices": [{"id": d.id, "driver": getattr(d, "driver", "?")} for d in config.devices],
    }
    publisher = Publisher(
        config=config, outbox=outbox, encode=encoder, health=health, clock=clock, info=info
    )
    sink = CaptureSink(outbox, health, publisher.notify_new_readings)
    from drivers.ble.adapter import (  # noqa: PLC0415
        build_ladder,
        ladder_driver_factories,
        restart_ble_sessions,
    )

    restart_now: dict[str, asyncio.Event] = {}
    ladder = build_ladder(
        config,
        health,
        clock,
        overridden=set(driver_factories or {}),
        on_change=publisher.status.trigger_full,
        on_recovered=functools.partial(restart_ble_sessions, config, restart_now),
    )
    if ladder is not None:
        publisher.status.reports["ble_adapter"] = ladder.report
        driver_factories = {**ladder_driver_factories(ladder), **(driver_factories or {})}
    patient = PatientBinding(config.patient.id, config.patient.binding_version)
    drivers: dict[str, Driver] = {}
    for settings in config.devices:
        ctx = DriverContext(
            sink=sink,
            clock=clock,
            reporter=health.device(settings.id, expected_interval_s=settings.expected_interval_s),
            patient=patient,
            timezone_name=config.hub.timezone,
            state_dir=config.storage.path.parent,
        )
        name = getattr(settings, "driver", "")
        override = (driver_factories or {}).get(name)
        drivers[settings.id] = (
            override(settings, ctx) if override else DRIVERS[name].build(settings, ctx)
        )
    return Agent(
        config,
        outbox,
        health,
        publisher,
        drivers,
        info,
        restart_now=restart_now,
        ble_adapter=ladder,
    )


async def open_outbox(config: Config, clock: Clock) -> Outbox:
    """Open (or create, or quarantine and recreate) the outbox the config names."""
    storage = config.storage
    return await Outbox.open(
        storage.path,
        capacity_readings=storage.capacity_readings,
        audit_window_s=timedelta(hours=storage.audit_window_h).total_seconds(),
        receipts=storage.receipts,
        group_commit_s=storage.group_commit_ms / 1000,
        clock=clock,
    )


class Runtime:
    """Runs agent generations until SIGTERM; implements the remote-request AgentControl."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        driver_factories: Mapping[str, DriverFactory] | None = None,
    ) -> None:
        """Store the starting config (no I/O)."""
        self.config = config
        self._config_path = config_path
        self._clock = clock or SystemClock()
        self._notifier = notifier or Notifier()
        self._driver_factories = driver_factories
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._agent: Agent | None = None
        self._log_override: LogLevelOverride | None = None

    def request_stop(self) -> None:
        """Begin a graceful shutdown (SIGTERM, SIGINT)."""
        self._stop.set()

    @property
    def agent(self) -> Agent:
        """The running generation."""
        if self._agent is None:
            raise RuntimeError("agent not started")
        return self._agent

    async def run(self) -> int:
        """Open the outbox, tell systemd we are ready, run until stopped."""
        outbox = await open_outbox(self.config, self._clock)
        self._notifier.ready(f"{len(self.config.devices)} devices")
        from agent.requests import LogLevelOverride  # noqa: PLC0415 - after READY

        self._log_override = LogLevelOverride(logging.getLogger(), self.config.logging.level)
        previous: Health | None = None
        try:
            while True:
                agent = build_agent(self.config, outbox, self._clock, self._driver_factories)
                if previous is not None:
                    agent.health.carry_over(previous)
                else:
                    agent.health.restore_devices(_saved_devices(self.config), self._clock.now())
                self._agent = agent
                previous = agent.health
                await self._run_generation(agent)
                if self._stop.is_set():
                    break
                log.info("configuration reloaded; restarting devices and the broker session")
        finally:
            self._notifier.stopping()
            self._log_override.cancel()
            await outbox.close()
        return EX_OK

    async def _run_generation(self, agent: Agent) -> None:
        from agent.receipts import ReceiptHandler  # noqa: PLC0415 - after READY
        from agent.requests import RequestHandler  # noqa: PLC0415

        self._reload.clear()
        topics = agent.publisher.topics
        requests = RequestHandler(
            topics=topics,
            control=self,
            responder=agent.publisher,
            clock=self._clock,
            counters=agent.health.requests,
        )
        agent.publisher.add_subscription(requests.subscription, requests.on_message)
        if agent.config.storage.receipts:
            receipts = ReceiptHandler(agent.outbox)
            agent.publisher.add_subscription(f"{topics.base}/receipts", receipts.on_message)
        async with asyncio.TaskGroup() as group:
            publisher_task = group.create_task(agent.publisher.run(), name="publisher")
            for device_id in agent.drivers:
                self._start_driver(group, agent, device_id)
            helpers = [
                group.create_task(
                    watchdog_loop(self._notifier, self._is_making_progress), name="watchdog"
                ),
                group.create_task(self._housekeeping(agent), name="housekeeping"),
            ]
            if agent.ble_adapter is not None:
                # Beside the watchdog, never feeding it: a dead radio must not restart us.
                helpers.append(group.create_task(agent.ble_adapter.run(), name="ble-adapter"))
            await _first_of(self._stop, self._reload)
            await self._stop_generation(agent, publisher_task, helpers)
            await requests.aclose()

    def _start_driver(self, group: asyncio.TaskGroup, agent: Agent, device_id: str) -> None:
        driver = agent.drivers[device_id]
        reporter = agent.health.device(device_id)
        restart_now = agent.restart_now.setdefault(device_id, asyncio.Event())
        agent.driver_tasks[device_id] = group.create_task(
            supervise_driver(driver, reporter, DRIVER_BACKOFF, restart_now=restart_now),
            name=f"driver:{device_id}",
        )

    async def _stop_generation(
        self, agent: Agent, publisher_task: asyncio.Task[None], helpers: list[asyncio.Task[None]]
    ) -> None:
        """Drivers first (their in-flight commits finish), then offline status, then the rest."""
        tasks = list(agent.driver_tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_BUDGET_S / 2)
        # The devices' last word goes to the state file, so the next start (or `wardlink
        # status`) knows when each was last seen, not what the last periodic write knew.
        await self._write_state(agent)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_BUDGET_S / 2):
                # A reload reconnects at once (perhaps to another broker): say why the
                # hub is briefly offline, so the fleet does not page anybody for it.
                reason = "shutdown" if self._stop.is_set() else "reloading configuration"
                await agent.publisher.close(timeout_s=SHUTDOWN_BUDGET_S / 4, reason=reason)
        publisher_task.cancel()
        for task in helpers:
            task.cancel()

    async def _is_making_progress(self) -> bool:
        """The watchdog probe: the outbox executor answers (so the loop and the DB are alive)."""
        try:
            await self.agent.outbox.stats()
        except OutboxError:
            return False
        return True

    async def _housekeeping(self, agent: Agent) -> None:
        """Purge rows past the audit window and keep the local state file fresh."""
        while True:
            now = self._clock.now()
            try:
                purged = await agent.outbox.purge(now.utc)
                if purged:
                    log.info("purged %d readings past the audit window", purged)
            except OutboxError as exc:
                log.error("audit purge failed: %s", exc)
            await self._write_state(agent)
            await asyncio.sleep(min(HOUSEKEEPING_INTERVAL_S, agent.config.health.interval_s))

    async def _write_state(self, agent: Agent) -> None:
        from agent.localstatus import state_file_path, write_state_file  # noqa: PLC0415

        state_path = state_file_path(agent.config.storage.path)
        try:
            # fsyncs: off the event loop
            await asyncio.to_thread(write_state_file, state_path, await self.health_now())
        except OSError as exc:
            log.warning("state file %s not written: %s", state_path, exc)

    # --- AgentControl (remote requests) -------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Versions, config hash, bound devices."""
        return dict(self.agent.info)

    async def health_now(self) -> dict[str, Any]:
        """The health document, made now."""
        return await self.agent.publisher.status.health_document()

    def config_redacted(self) -> dict[str, Any]:
        """The running config without secrets or patient identifiers."""
        from agent.configcheck import redacted  # noqa: PLC0415

        return redacted(self.config)

    async def reload_config(self, text: str | None) -> list[str]:
        """Validate first; apply only a config with no problems, else keep the running one."""
        try:
            if text is not None:
                new = load_config_text(text, filename="<remote reload>")
            elif self._config_path is not None:
                new = await asyncio.to_thread(load_config, self._config_path)
            else:
                return ["no config file to re-read; send the config text"]
        except ConfigError as exc:
            return list(exc.problems)
        if new.storage.path != self.config.storage.path:
            return ["storage.path cannot change while running; restart the agent instead"]
        self.config = new
        self._reload.set()
        return []

    def device_ids(self) -> list[str]:
        """Configured device ids."""
        return list(self.agent.drivers)

    async def reconnect_device(self, device_id: str) -> None:
        """End the device's session (what it holds is stored); its supervisor opens a new one.

        Also ends an error backoff at once. Not ``driver.close()``: a serial session
        whose port is closed under it waits for data that can never come.
        """
        self.agent.restart_now[device_id].set()

    async def rescan(self) -> None:
        """Re-open every device session (a fresh discovery for BLE devices)."""
        for event in self.agent.restart_now.values():
            event.set()

    async def requeue_rejected(self, seqs: Sequence[int] | None) -> int:
        """Rejected -> pending, then make the publisher start again from the oldest row."""
        moved = await self.agent.outbox.requeue_rejected(seqs)
        self.agent.publisher.rescan()
        return moved

    def set_log_level(self, level: str, duration_s: float) -> None:
        """Temporarily change the log level."""
        if self._log_override is not None:
            self._log_override.apply(level, duration_s)

    async def flush(self) -> dict[str, Any]:
        """Publish pending readings now (bounded); report what is left."""
        self.agent.publisher.notify_new_readings()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.agent.publisher.flush()
        stats = await self.agent.outbox.stats()
        return {"pending": stats.pending, "rejected": stats.rejected}


def _saved_devices(config: Config) -> dict[str, Any]:
    """Device history from the state file the last run left (none after a decommission)."""
    from agent.localstatus import read_state_file, state_file_path  # noqa: PLC0415

    state = read_state_file(state_file_path(config.storage.path)) or {}
    health = state.get("health")
    devices = health.get("devices") if isinstance(health, dict) else None
    return devices if isinstance(devices, dict) else {}


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def configure_logging(level: str) -> None:
    """Plain one-line records on stderr (journald adds time and unit)."""
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


async def _serve(runtime: Runtime, early: EarlySignals) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.request_stop)
    if early.received:
        runtime.request_stop()
    return await runtime.run()


def run_main(config_path: str, early: EarlySignals | None = None) -> int:
    """``wardlink run -c FILE``: exit 0 on SIGTERM, 78 on a config error."""
    early = early or EarlySignals()  # a stop during start-up is still a clean stop (exit 0)
    path = Path(config_path)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)  # noqa: T201 - the technician's console
        print(  # noqa: T201
            f"wardlink: not started: fix {path} and run `wardlink check-config {path}`",
            file=sys.stderr,
        )
        return EX_CONFIG
    configure_logging(config.logging.level)
    log.info("wardlink %s starting (pid %d)", __version__, os.getpid())
    try:
        return asyncio.run(_serve(Runtime(config, config_path=path), early))
    except OutboxError as exc:
        log.critical("outbox unusable: %s", exc)
        return 74  # EX_IOERR: systemd restarts us; the outbox may be on a failing card
