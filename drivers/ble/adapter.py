"""The Bluetooth adapter recovery ladder (reliability.md §6.5, fault T18).

A Pi's Bluetooth controller hangs in the field: ``hci0`` vanishes, bluetoothd stops
answering, or every call fails with ``org.bluez.Error.InProgress``. Waiting does not fix
it, and restarting the agent would not either (and would drop the MQTT session and the
hub's status). So the ladder climbs, one rung at a time, while the adapter stays failing:

1. ``retrying``: the drivers keep retrying their devices with backoff (agent/supervise.py);
2. ``power_cycled``: ``Adapter1.Powered`` false, then true (``AdapterControl``);
3. ``bluetooth_restart_requested``: a request file the privileged
   ``wardlink-bluetooth-restart`` unit acts on (the agent keeps no capabilities);
4. ``reboot_requested``: the same through ``wardlink-reboot``; only when configured, and at
   most ``max_reboots`` times until the adapter is seen working again.

Every rung raises the health alarm ``ble_adapter`` and logs a WARNING (no patient data:
the adapter name, the D-Bus error name, times). "Failing" means: the probe (is the adapter
there and powered?) fails, or ``error_threshold`` adapter-level errors arrived from the
drivers with no successful connection in between, or (optionally) no advertisement at all
for ``advert_silence_s``. Each rung's time counts from the moment the adapter was first
judged failing, and a tick happens every ``probe_interval_s``, so a rung is reached at
most one probe interval after its time. After a rung, one more adapter error (before any
success) means it did not help. Recovery: a successful connection or scan start, or
``recovered_after_s`` without failing; the ladder then starts again from the bottom.

The ladder is a side task: its ticks never block the event loop (every D-Bus call and
file write is awaited under a timeout) and nothing it meets, not even a bug of its own,
ends the agent. The systemd watchdog knows nothing of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping

    from agent.clock import Clock
    from agent.config import BluetoothConfig, Config

log = logging.getLogger(__name__)

ALARM: Final = "ble_adapter"
NS_PER_S: Final = 1_000_000_000
ACTION_TIMEOUT_S: Final = 20.0  # a probe or power cycle of a wedged bluetoothd gives up here
RequestAction = Literal["bluetooth-restart", "reboot"]


class Rung(IntEnum):
    """How far up the ladder the adapter's trouble has gone."""

    OK = 0
    RETRYING = 1
    POWER_CYCLED = 2
    BLUETOOTH_RESTART_REQUESTED = 3
    REBOOT_REQUESTED = 4


class AdapterError(Exception):
    """The adapter cannot be used; ``name`` is the D-Bus error name (or ours)."""

    def __init__(self, name: str, detail: str = "") -> None:
        """``detail`` is BlueZ's text, for DEBUG logs only."""
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


class AdapterControl(Protocol):
    """The adapter as the ladder sees it (production: ``BluezAdapter`` over D-Bus)."""

    async def probe(self) -> None:
        """Return if the adapter is there and powered; raise AdapterError otherwise."""
        ...

    async def power_cycle(self) -> None:
        """Power the adapter off, then on; raise AdapterError if BlueZ refuses."""
        ...


class RecoveryRequests(Protocol):
    """Asks the privileged units for what the agent may not do itself."""

    async def request(self, action: RequestAction) -> None:
        """Ask for ``action``; raises OSError when the request cannot be written."""
        ...

    async def reboots_requested(self) -> int:
        """Reboots asked for since the adapter last worked (survives the reboot)."""
        ...

    async def set_reboots_requested(self, count: int) -> None:
        """Record the count (0 once the adapter works again)."""
        ...


class AlarmSink(Protocol):
    """Where alarms go (``agent.health.Health``)."""

    def raise_alarm(self, name: str, detail: str) -> None:
        """Raise or refresh an alarm."""
        ...

    def clear_alarm(self, name: str) -> None:
        """The condition is over."""
        ...


class RequestFiles:
    """``RecoveryRequests`` as files in the agent's StateDirectory, watched by .path units.

    ``<dir>/bluetooth-restart.request`` and ``<dir>/reboot.request``: the unit removes the
    file and acts; it never reads what is in it (a short note for a person). The reboot
    count is kept in ``<dir>/ble-adapter-reboots`` so a reboot cannot loop.
    """

    def __init__(self, directory: Path) -> None:
        """Store the directory (the systemd units watch /var/lib/wardlink)."""
        self.directory = directory
        self._count_path = directory / "ble-adapter-reboots"

    def path(self, action: RequestAction) -> Path:
        """The request file of ``action``."""
        return self.directory / f"{action}.request"

    async def request(self, action: RequestAction) -> None:
        """Write the request file atomically (the .path unit fires on the rename)."""
        note = f"requested by wardlink pid {os.getpid()} at {_utc_now()}\n"
        await asyncio.to_thread(_write_atomically, self.path(action), note)

    async def reboots_requested(self) -> int:
        """The persisted count; a missing or damaged file counts as 0."""
        return await asyncio.to_thread(self._read_count)

    def _read_count(self) -> int:
        try:
            return max(0, int(self._count_path.read_text(encoding="ascii").strip()))
        except (OSError, ValueError):
            return 0

    async def set_reboots_requested(self, count: int) -> None:
        """Persist the count (fsynced: it must survive the reboot it precedes)."""
        await asyncio.to_thread(_write_atomically, self._count_path, f"{count}\n")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)


class AdapterLadder:
    """Watches the adapter and climbs the recovery ladder; an ``AdapterObserver``."""

    def __init__(
        self,
        config: BluetoothConfig,
        *,
        control: AdapterControl,
        requests: RecoveryRequests,
        clock: Clock,
        alarms: AlarmSink,
        on_change: Callable[[], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Store collaborators; no I/O. ``on_change`` fires at every rung and recovery.

        ``on_recovered`` fires on a recovery after a power cycle or more: the drivers'
        scans and links died with the adapter, so their sessions must start afresh.
        ``sleep`` waits between ticks (tests pass one that moves their clock).
        """
        self._config = config
        self._on_recovered = on_recovered
        self._sleep = sleep
        self._control = control
        self._requests = requests
        self._clock = clock
        self._alarms = alarms
        self._on_change = on_change
        self.rung = Rung.OK
        self.consecutive_errors = 0
        self.last_error: str | None = None
        self.counters = {
            "adapter_errors": 0,
            "probe_failures": 0,
            "power_cycles": 0,
            "bluetooth_restarts_requested": 0,
            "recoveries": 0,
            "ladder_faults": 0,
        }
        self._failing_since_ns: int | None = None
        self._healthy_since_ns: int | None = None
        self._success_since_tick = False
        self._advert_since_tick = False
        self._last_advert_ns: int | None = None
        self._started_ns = clock.now().monotonic_ns
        self._reboots: int | None = None  # persisted count, read on the first tick

    # --- AdapterObserver (called by the BLE links and scanners) -------------------------

    def note_error(self, name: str) -> None:
        """An adapter-level error from BLE work."""
        self.consecutive_errors += 1
        self.counters["adapter_errors"] += 1
        self.last_error = name

    def note_ok(self) -> None:
        """A connection or scan start went through."""
        self.consecutive_errors = 0
        self._success_since_tick = True

    def note_advert(self) -> None:
        """An advertisement was heard (a busy street calls this often: just a flag)."""
        self._advert_since_tick = True

    # --- the ladder ---------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every ``probe_interval_s`` until cancelled; never raises otherwise."""
        while True:
            try:
                await self.tick()
            except Exception:
                # A bug in the ladder must not end the agent: that would drop the broker
                # session and the hub's status, which is what the ladder exists to avoid.
                self.counters["ladder_faults"] += 1
                log.exception("Bluetooth adapter ladder: unexpected fault; carrying on")
            await self._sleep(self._config.probe_interval_s)

    async def tick(self) -> None:
        """Probe once, then climb, hold or recover."""
        if self._reboots is None:
            self._reboots = await self._requests.reboots_requested()
        probe_error = await self._probe()
        now_ns = self._clock.now().monotonic_ns
        success, self._success_since_tick = self._success_since_tick, False
        if self._advert_since_tick:
            self._advert_since_tick, self._last_advert_ns = False, now_ns
        reason = probe_error or self._failing_reason(now_ns)
        if reason is None:
            await self._maybe_recover(now_ns, confirmed=success)
            return
        self._healthy_since_ns = None
        if self._failing_since_ns is None:
            self._failing_since_ns = now_ns
        if self.rung < Rung.REBOOT_REQUESTED:
            target = Rung(self.rung + 1)
            if (now_ns - self._failing_since_ns) / NS_PER_S >= self._window_s(target):
                await self._climb(target, reason, now_ns)

    async def _probe(self) -> str | None:
        try:
            async with asyncio.timeout(ACTION_TIMEOUT_S):
                await self._control.probe()
        except AdapterError as fault:
            self.counters["probe_failures"] += 1
            self.last_error = fault.name
            log.debug("adapter probe failed: %s", fault)
            return f"probe: {fault.name}"
        except TimeoutError:
            self.counters["probe_failures"] += 1
            self.last_error = "timeout"
            return f"probe: no answer within {ACTION_TIMEOUT_S:g} s"
        return None

    def _failing_reason(self, now_ns: int) -> str | None:
        config = self._config
        if self.consecutive_errors >= config.error_threshold:
            return f"{self.consecutive_errors} adapter errors in a row (last: {self.last_error})"
        silence_s = config.advert_silence_s
        if silence_s is not None:
            heard_ns = self._started_ns if self._last_advert_ns is None else self._last_advert_ns
            if (now_ns - heard_ns) / NS_PER_S >= silence_s:
                return f"no advertisement heard for {silence_s:g} s"
        return None

    def _window_s(self, rung: Rung) -> float:
        """Seconds of failing after which ``rung`` applies (infinite: never)."""
        config = self._config
        if rung is Rung.RETRYING:
            return 0.0
        if rung is Rung.POWER_CYCLED:
            return config.power_cycle_after_s
        if rung is Rung.BLUETOOTH_RESTART_REQUESTED:
            return config.restart_bluetooth_after_s
        reboots_left = config.max_reboots - (self._reboots or 0)
        if config.reboot_after_s is None or reboots_left <= 0:
            return float("inf")
        return config.reboot_after_s

    async def _climb(self, rung: Rung, reason: str, now_ns: int) -> None:
        outcome = await self._apply(rung)
        self.rung = rung
        if rung > Rung.RETRYING:
            # Judge the rung by what comes next: one more adapter error before any
            # success means it did not help.
            self.consecutive_errors = max(0, self._config.error_threshold - 1)
        failing_s = self._failing_for_s(now_ns)
        detail = (
            f"adapter {self._config.adapter} failing for {failing_s:.0f} s ({reason}); "
            f"rung {int(rung)} {rung.name.lower()}: {outcome}"
        )
        if rung is Rung.BLUETOOTH_RESTART_REQUESTED and self._config.reboot_after_s is None:
            detail += "; no reboot configured: a technician must look if this persists"
        self._alarms.raise_alarm(ALARM, detail)
        log.warning("Bluetooth %s", detail)
        self._changed()

    async def _apply(self, rung: Rung) -> str:
        """Do what the rung does; a short outcome for the alarm."""
        if rung is Rung.RETRYING:
            return "devices retry with backoff"
        if rung is Rung.POWER_CYCLED:
            return await self._power_cycle()
        if rung is Rung.BLUETOOTH_RESTART_REQUESTED:
            self.counters["bluetooth_restarts_requested"] += 1
            return await self._request("bluetooth-restart")
        self._reboots = (self._reboots or 0) + 1
        try:
            # Counted before asking: the reboot may come before anything else is written.
            await self._requests.set_reboots_requested(self._reboots)
        except OSError as exc:
            log.error("Bluetooth ladder: reboot count not written, no reboot asked: %s", exc)
            return f"reboot not requested: its count could not be written ({exc.strerror})"
        return await self._request("reboot")

    async def _power_cycle(self) -> str:
        self.counters["power_cycles"] += 1
        try:
            async with asyncio.timeout(ACTION_TIMEOUT_S):
                await self._control.power_cycle()
        except AdapterError as fault:
            return f"power cycle failed ({fault.name})"
        except TimeoutError:
            return f"power cycle got no answer within {ACTION_TIMEOUT_S:g} s"
        return "adapter powered off and on"

    async def _request(self, action: RequestAction) -> str:
        try:
            await self._requests.request(action)
        except OSError as exc:
            log.error("Bluetooth ladder: %s request not written: %s", action, exc)
            return f"{action} request could not be written ({exc.strerror or exc})"
        return f"{action} requested from the privileged unit"

    async def _maybe_recover(self, now_ns: int, *, confirmed: bool) -> None:
        if self.rung is Rung.OK:
            self._failing_since_ns = None
            return
        if self._healthy_since_ns is None:
            self._healthy_since_ns = now_ns
        quiet_s = (now_ns - self._healthy_since_ns) / NS_PER_S
        if not confirmed and quiet_s < self._config.recovered_after_s:
            return
        failing_s = self._failing_for_s(now_ns)
        log.info(
            "Bluetooth adapter %s recovered at rung %d %s (%.0f s after it began failing)",
            self._config.adapter,
            int(self.rung),
            self.rung.name.lower(),
            failing_s,
        )
        if self.rung >= Rung.POWER_CYCLED and self._on_recovered is not None:
            self._on_recovered()
        self.rung = Rung.OK
        self.consecutive_errors = 0
        self._failing_since_ns = self._healthy_since_ns = None
        self.counters["recoveries"] += 1
        self._alarms.clear_alarm(ALARM)
        self._changed()
        if self._reboots:
            self._reboots = 0
            try:
                await self._requests.set_reboots_requested(0)
            except OSError as exc:
                log.error("Bluetooth ladder: reboot count not reset: %s", exc)

    def _failing_for_s(self, now_ns: int) -> float:
        since = self._failing_since_ns
        return 0.0 if since is None else (now_ns - since) / NS_PER_S

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def report(self) -> dict[str, Any]:
        """The ``ble_adapter`` part of the health document (no device or patient data)."""
        now_ns = self._clock.now().monotonic_ns
        since = self._failing_since_ns
        advert = self._last_advert_ns
        return {
            "adapter": self._config.adapter,
            "state": "ok" if self.rung is Rung.OK else "failing",
            "rung": int(self.rung),
            "rung_name": self.rung.name.lower(),
            "failing_for_s": None if since is None else round((now_ns - since) / NS_PER_S, 1),
            "consecutive_errors": self.consecutive_errors,
            "last_error": self.last_error,
            "last_advert_age_s": None if advert is None else round((now_ns - advert) / NS_PER_S),
            "reboots_requested": self._reboots or 0,
            **self.counters,
        }


def build_ladder(
    config: Config,
    alarms: AlarmSink,
    clock: Clock,
    *,
    overridden: Collection[str] = (),
    on_change: Callable[[], None] | None = None,
    on_recovered: Callable[[], None] | None = None,
) -> AdapterLadder | None:
    """The ladder for a config with BLE devices on BlueZ (no I/O); None when there are none.

    ``overridden``: driver names the composition root puts on another radio (the demo's
    bumble), which have no BlueZ adapter to recover.
    """
    names = {getattr(d, "driver", "") for d in config.devices} - set(overridden)
    if not any(name.startswith("ble-") for name in names):
        return None
    from drivers.ble.bluez_adapter import BluezAdapter  # noqa: PLC0415 - loads dbus-fast

    # The directory the .path units watch is the unit's StateDirectory (/var/lib/wardlink);
    # outside systemd, the outbox's directory.
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return AdapterLadder(
        config.bluetooth,
        control=BluezAdapter(config.bluetooth.adapter),
        requests=RequestFiles(Path(state_dir) if state_dir else config.storage.path.parent),
        clock=clock,
        alarms=alarms,
        on_change=on_change,
        on_recovered=on_recovered,
    )


def ladder_driver_factories(ladder: AdapterLadder) -> dict[str, Any]:
    """BLE driver factories whose bleak links and scanners report to ``ladder``."""
    from drivers import DRIVERS  # noqa: PLC0415
    from drivers.ble.driver import build  # noqa: PLC0415

    factory = functools.partial(build, adapter=ladder)
    return {name: factory for name in DRIVERS if name.startswith("ble-")}


def restart_ble_sessions(config: Config, restart_now: Mapping[str, asyncio.Event]) -> None:
    """Ask every BLE driver's supervisor for a fresh session (scan and link died with hci0)."""
    for settings in config.devices:
        event = restart_now.get(settings.id)
        if event is not None and getattr(settings, "driver", "").startswith("ble-"):
            event.set()
