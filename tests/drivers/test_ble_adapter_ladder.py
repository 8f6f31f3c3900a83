"""The Bluetooth adapter recovery ladder (T18) against a fake adapter behind our own seam.

BlueZ cannot run here, so ``FakeAdapter`` plays the adapter: it fails with the real D-Bus
error names BlueZ and the bus use (NotReady, InProgress, UnknownObject for a vanished
hci0, ServiceUnknown for a dead bluetoothd) and is cured only by the rung that cures it in
the field. Time is a manual clock and the ladder is ticked once per probe interval, as its
``run()`` does, so the assertions are about which rung happened at which configured time,
never about wall speed. Alarms go to the real ``agent.health.Health``; request files are
real files.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from bleak.exc import BleakDBusError
from bleak_retry_connector import BleakAbortedError

from agent.config import BluetoothConfig
from agent.health import Health
from agent.sdnotify import Notifier, watchdog_loop
from drivers._ble import BleakLink
from drivers.ble.adapter import ALARM, AdapterError, AdapterLadder, RequestFiles, Rung
from tests.lifecycle.test_sdnotify import FakeSystemd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

    from agent.clock import HubTime

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
NOT_READY = "org.bluez.Error.NotReady"
IN_PROGRESS = "org.bluez.Error.InProgress"
GONE = "org.freedesktop.DBus.Error.UnknownObject"
NO_BLUEZ = "org.freedesktop.DBus.Error.ServiceUnknown"
CUFF = "A4:C1:38:00:00:01"


class ManualClock:
    """Our Clock seam, moved by the test."""

    def __init__(self) -> None:
        self.elapsed_s = 0.0

    def now(self) -> HubTime:
        from agent.clock import HubTime

        return HubTime(
            utc=T0 + timedelta(seconds=self.elapsed_s),
            monotonic_ns=int(self.elapsed_s * 1e9),
            boot_id="b",
            clock_synced=True,
        )


class FakeAdapter:
    """An ``AdapterControl`` in one of BlueZ's broken states until ``cured_by`` is applied.

    ``fault``: the D-Bus error the probe raises (None: the probe passes; storms come from
    the links instead). ``cured_by``: "power_cycle", "bluetooth-restart", "reboot" or None.
    """

    def __init__(self, clock: ManualClock, fault: str | None, cured_by: str | None) -> None:
        self.clock = clock
        self.fault = fault
        self.cured_by = cured_by
        self.broken = True
        self.actions: list[tuple[str, float]] = []

    async def probe(self) -> None:
        await asyncio.sleep(0)  # a real round trip yields to the loop
        if self.broken and self.fault is not None:
            raise AdapterError(self.fault, "from the fake")

    async def power_cycle(self) -> None:
        await asyncio.sleep(0)
        self.apply("power_cycle")
        if self.fault == NO_BLUEZ:
            raise AdapterError(NO_BLUEZ)  # nobody to ask to power the adapter

    def apply(self, action: str) -> None:
        self.actions.append((action, self.clock.elapsed_s))
        if action == self.cured_by:
            self.broken = False


class Units(RequestFiles):
    """The real request files, plus the privileged units' effect on the fake adapter."""

    def __init__(self, directory: Path, adapter: FakeAdapter) -> None:
        super().__init__(directory)
        self.adapter = adapter

    async def request(self, action: Any) -> None:
        await super().request(action)
        assert self.path(action).exists()  # what the .path unit would see
        self.path(action).unlink()  # the unit removes it first, then acts
        self.adapter.apply(action)


class Rig:
    def __init__(self, tmp_path: Path, config: BluetoothConfig, adapter: FakeAdapter) -> None:
        self.clock = adapter.clock
        self.adapter = adapter
        self.health = Health(hub_id="hub", clock=self.clock)
        self.alarm_log: list[str] = []
        self.units = Units(tmp_path, adapter)
        self.ladder = AdapterLadder(
            config,
            control=adapter,
            requests=self.units,
            clock=self.clock,
            alarms=self.health,
            on_change=self._changed,
        )

    def _changed(self) -> None:
        alarm = self.health.alarms.get(ALARM)
        self.alarm_log.append(alarm.detail if alarm else "cleared")

    async def run_for(self, seconds: float, step_s: float | None = None) -> None:
        """Tick once per probe interval (what ``run()`` does) for ``seconds``."""
        step = step_s or self.ladder._config.probe_interval_s
        end = self.clock.elapsed_s + seconds
        while self.clock.elapsed_s < end:
            await self.ladder.tick()
            self.clock.elapsed_s += step


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


DEFAULTS = BluetoothConfig()  # probe 30 s, power cycle at 60 s, bluetooth restart at 300 s


async def test_vanished_hci0_climbs_in_order_and_a_bluetooth_restart_brings_it_back(
    tmp_path: Path, clock: ManualClock
) -> None:
    rig = Rig(tmp_path, DEFAULTS, FakeAdapter(clock, GONE, cured_by="bluetooth-restart"))
    await rig.run_for(700)
    # Rung 2 at 60 s and rung 3 at 300 s after the first failing probe (t=0), each within
    # one probe interval of its window; never a reboot (not configured).
    assert [a for a, _ in rig.adapter.actions] == ["power_cycle", "bluetooth-restart"]
    (power_at, restart_at) = (t for _, t in rig.adapter.actions)
    assert 60 <= power_at < 60 + DEFAULTS.probe_interval_s
    assert 300 <= restart_at < 300 + DEFAULTS.probe_interval_s
    # An alert at every rung, then the recovery clears it.
    assert rig.alarm_log[0].startswith("adapter hci0 failing for 0 s (probe: " + GONE)
    assert "rung 1 retrying" in rig.alarm_log[0]
    assert "rung 2 power_cycled: adapter powered off and on" in rig.alarm_log[1]
    assert "rung 3 bluetooth_restart_requested: bluetooth-restart requested" in rig.alarm_log[2]
    assert "a technician must look" in rig.alarm_log[2]
    assert rig.alarm_log[3:] == ["cleared"]
    assert ALARM not in rig.health.alarms
    report = rig.ladder.report()
    assert report["state"] == "ok"
    assert report["recoveries"] == 1
    assert report["bluetooth_restarts_requested"] == 1
    assert not list(tmp_path.glob("*.request"))


async def test_powered_off_adapter_is_cured_by_the_power_cycle_and_climbs_no_further(
    tmp_path: Path, clock: ManualClock
) -> None:
    rig = Rig(tmp_path, DEFAULTS, FakeAdapter(clock, NOT_READY, cured_by="power_cycle"))
    await rig.run_for(1200)
    assert [a for a, _ in rig.adapter.actions] == ["power_cycle"]
    assert rig.ladder.rung is Rung.OK
    assert rig.ladder.report()["last_error"] == NOT_READY
    # Recovered once the adapter had been fine for recovered_after_s (nothing connected).
    assert rig.alarm_log[-1] == "cleared"


async def test_inprogress_storm_from_the_links_escalates_and_a_connection_recovers_at_once(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The probe passes all along (Powered is true): only the links see the storm. The
    # links are the production BleakLink, over a connector failing the way
    # bleak-retry-connector does (its own error raised from BlueZ's).
    adapter = FakeAdapter(clock, None, cured_by="bluetooth-restart")
    rig = Rig(tmp_path, DEFAULTS, adapter)

    async def connector(address: str, timeout_s: float, on_disconnect: Any) -> Any:
        if adapter.broken:
            cause = BleakDBusError(IN_PROGRESS, ["Operation already in progress"])
            raise BleakAbortedError("aborted") from cause
        return _ConnectedClient()

    async def attempt() -> bool:
        link = BleakLink(connector, observer=rig.ladder)
        try:
            await link.connect(CUFF, 5.0)
        except Exception:  # noqa: BLE001 - the driver's supervisor would back off here
            return False
        return True

    for _ in range(DEFAULTS.error_threshold):
        assert not await attempt()
    connected_at = None
    while connected_at is None and clock.elapsed_s < 900:
        await rig.ladder.tick()
        if await attempt():
            connected_at = clock.elapsed_s
        clock.elapsed_s += DEFAULTS.probe_interval_s
    assert [a for a, _ in adapter.actions] == ["power_cycle", "bluetooth-restart"]
    await rig.ladder.tick()
    assert rig.ladder.rung is Rung.OK  # one good connection is proof enough
    assert rig.alarm_log[-1] == "cleared"
    # The ladder starts again from the bottom: a new storm is power-cycled first.
    adapter.broken, adapter.cured_by = True, "power_cycle"
    for _ in range(DEFAULTS.error_threshold):
        assert not await attempt()
    await rig.run_for(120)
    assert [a for a, _ in adapter.actions][2:] == ["power_cycle"]


class _ConnectedClient:
    is_connected = True


async def test_a_device_out_of_range_is_not_the_adapters_fault(
    tmp_path: Path, clock: ManualClock
) -> None:
    rig = Rig(tmp_path, DEFAULTS, FakeAdapter(clock, None, cured_by=None))

    async def connector(address: str, timeout_s: float, on_disconnect: Any) -> Any:
        raise BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"])

    for _ in range(20):
        with pytest.raises(Exception, match="Bluetooth error while connecting"):
            await BleakLink(connector, observer=rig.ladder).connect(CUFF, 5.0)
    await rig.run_for(900)
    assert rig.adapter.actions == []
    assert rig.alarm_log == []


async def test_reboot_rung_fires_once_and_the_count_survives_the_reboot(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = BluetoothConfig(reboot_after_s=1800, max_reboots=1)
    adapter = FakeAdapter(clock, NO_BLUEZ, cured_by=None)  # bluetoothd never comes back
    rig = Rig(tmp_path, config, adapter)
    await rig.run_for(3600)
    actions = adapter.actions
    assert [a for a, _ in actions] == ["power_cycle", "bluetooth-restart", "reboot"]
    assert 1800 <= actions[2][1] < 1800 + config.probe_interval_s
    assert "power cycle failed (" + NO_BLUEZ + ")" in rig.alarm_log[1]
    assert "rung 4 reboot_requested: reboot requested" in rig.alarm_log[3]
    assert (tmp_path / "ble-adapter-reboots").read_text() == "1\n"

    # After the reboot (a new agent, the same state directory) the adapter is still dead:
    # the ladder climbs again but asks for no second reboot.
    clock.elapsed_s = 0.0
    after = Rig(tmp_path, config, FakeAdapter(clock, NO_BLUEZ, cured_by=None))
    await after.run_for(7200)
    assert [a for a, _ in after.adapter.actions] == ["power_cycle", "bluetooth-restart"]
    assert after.ladder.report()["rung_name"] == "bluetooth_restart_requested"
    assert after.ladder.report()["reboots_requested"] == 1

    # Fixed by a technician: the count goes back to 0, so a later failure may reboot again.
    after.adapter.broken = False
    after.adapter.fault = None
    await after.run_for(config.recovered_after_s + config.probe_interval_s)
    assert after.ladder.rung is Rung.OK
    assert (tmp_path / "ble-adapter-reboots").read_text() == "0\n"


async def test_advert_silence_is_failing_only_when_configured(
    tmp_path: Path, clock: ManualClock
) -> None:
    quiet = Rig(tmp_path, DEFAULTS, FakeAdapter(clock, None, cured_by=None))
    await quiet.run_for(3600)
    assert quiet.adapter.actions == []  # a quiet house is not a broken radio
    clock.elapsed_s = 0.0
    config = BluetoothConfig(advert_silence_s=600)
    deaf = Rig(tmp_path, config, FakeAdapter(clock, None, cured_by="power_cycle"))
    deaf.ladder.note_advert()
    await deaf.run_for(600 + 60 - 30)
    assert deaf.adapter.actions == []
    await deaf.run_for(60)
    assert [a for a, _ in deaf.adapter.actions] == ["power_cycle"]


# --- the ladder as a task beside the watchdog -----------------------------------------


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


class HungAdapter:
    """bluetoothd wedged: the probe never answers; a bug on the second call."""

    def __init__(self) -> None:
        self.calls = 0

    async def probe(self) -> None:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("a bug in the ladder's collaborator")
        await asyncio.Event().wait()

    async def power_cycle(self) -> None:
        await asyncio.Event().wait()


async def test_watchdog_keeps_pinging_while_the_radio_is_dead_and_the_ladder_climbs(
    tmp_path: Path, fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("drivers.ble.adapter.ACTION_TIMEOUT_S", 0.05)
    clock = ManualClock()
    config = BluetoothConfig(probe_interval_s=1, power_cycle_after_s=0, restart_bluetooth_after_s=1)
    health = Health(hub_id="hub", clock=clock)
    hung = HungAdapter()
    ladder = AdapterLadder(
        config,
        control=hung,
        requests=RequestFiles(tmp_path),
        clock=clock,
        alarms=health,
        sleep=_advance(clock),
    )
    notifier = Notifier({"NOTIFY_SOCKET": str(fake_systemd.path), "WATCHDOG_USEC": "40000"})

    async def progress() -> bool:
        return True

    watchdog = asyncio.create_task(watchdog_loop(notifier, progress))
    ladder_task = asyncio.create_task(ladder.run())
    request = tmp_path / "bluetooth-restart.request"
    try:
        while not request.exists():  # rung 3, through a hung probe, a bug and a hung power cycle
            await asyncio.sleep(0.02)
        pings_at_rung_3 = len(fake_systemd.pings())
        while len(fake_systemd.pings()) < pings_at_rung_3 + 3:
            await asyncio.sleep(0.02)
    finally:
        watchdog.cancel()
        ladder_task.cancel()
        await asyncio.gather(watchdog, ladder_task, return_exceptions=True)
    assert pings_at_rung_3 >= 3  # it pinged all the way up, and kept pinging after
    assert ladder_task.cancelled()  # it never ended by itself, not even on the bug
    assert ladder.counters["ladder_faults"] == 1
    assert ladder.rung is Rung.BLUETOOTH_RESTART_REQUESTED
    assert ladder.counters["power_cycles"] == 1
    assert "bluetooth-restart requested" in health.alarms[ALARM].detail


def _advance(clock: ManualClock) -> Any:
    """The ladder's sleep between ticks: moves the manual clock, yields briefly."""

    async def sleep(seconds: float) -> None:
        clock.elapsed_s += seconds
        await asyncio.sleep(0.01)

    return sleep
