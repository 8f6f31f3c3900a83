"""Device clocks over bumble: Current Time (0x2A2B) read, offset recorded, set only when safe.

The rule (drivers/ble/session.py ``check_device_clock``): the hub writes its time to the
device only when the hub clock is synchronised AND the device clock is unset or off by
more than a minute AND the device lets us write Current Time. The offset measured before
the write corrects this session's records (they were stamped by the old clock), and each
of them says the hub set the clock. An unsynced hub never writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agent.clock import SystemClock, TimeSource
from drivers._codecs.cts import decode_current_time
from drivers.ble.settings import BleBloodPressureSettings
from drivers.emulators.ble_peripherals import DeviceInfo, StoredRecordsPeripheral
from tests.drivers.ble_support import (
    Harness,
    bp_payload,
    outbox_fixture,  # noqa: F401 - provides the `outbox` fixture
    world_fixture,  # noqa: F401 - provides the `world` fixture
)

if TYPE_CHECKING:
    from pathlib import Path

    from agent.outbox import Outbox
    from agent.readings import Reading
    from drivers.emulators.ble import BleWorld

pytestmark = pytest.mark.bumble

CUFF = "A4:C1:38:00:00:07"
TWO_HOURS_S = 7200.0


def hub_clock(tmp_path: Path, *, synced: bool) -> SystemClock:
    """The real hub clock; synchronised exactly when timesyncd's flag file exists."""
    flag = tmp_path / "timesync-synchronized"
    if synced:
        flag.touch()
    return SystemClock(sync_flag_path=flag)


def cuff(**clock: object) -> StoredRecordsPeripheral:
    device = StoredRecordsPeripheral(
        CUFF,
        "Cuff",
        service_uuid="1810",
        measurement_uuid="2A35",
        info=DeviceInfo(**clock),  # type: ignore[arg-type]
    )
    device.records.append(bp_payload(120, 80, 1))
    return device


async def one_session(
    world: BleWorld,
    tmp_path: Path,
    outbox: Outbox,
    device: StoredRecordsPeripheral,
    *,
    synced: bool,
) -> tuple[Harness, Reading]:
    await device.attach(world)
    settings = BleBloodPressureSettings(id="bp-cuff", address=CUFF, idle_s=0.3, rest_s=60)
    hub = Harness(world, tmp_path, outbox, settings, hub_clock(tmp_path, synced=synced))
    await hub.one_session(1, device)
    (reading,) = await hub.readings()
    return hub, reading


async def test_synced_hub_sets_a_clock_that_is_off_and_corrects_with_the_old_offset(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff(clock_offset_s=-TWO_HOURS_S)  # still on winter time, or never adjusted
    hub, reading = await one_session(world, tmp_path, outbox, device, synced=True)
    (written,) = device.clock_writes
    assert decode_current_time(written).adjust_reason == ("external_reference_time_update",)
    assert device.info.clock_offset_s is not None
    assert abs(device.info.clock_offset_s) < 5  # the device now tells the hub's time
    # The offset measured before the write is what corrected this session's record.
    assert hub.reporter.clock_offset_s is not None
    assert abs(hub.reporter.clock_offset_s + TWO_HOURS_S) < 5
    assert reading.device_clock_offset_s == hub.reporter.clock_offset_s
    assert reading.time_source is TimeSource.DEVICE_CORRECTED
    assert "device_clock_set_by_hub" in reading.status
    assert hub.reporter.counters["clock_writes"] == 1


async def test_an_unsynced_hub_never_writes_the_device_clock(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff(clock_offset_s=-TWO_HOURS_S)
    hub, reading = await one_session(world, tmp_path, outbox, device, synced=False)
    assert device.clock_writes == []
    assert device.info.clock_offset_s == -TWO_HOURS_S
    assert hub.reporter.counters["clock_write_skipped_hub_unsynced"] == 1
    assert "device_clock_set_by_hub" not in reading.status
    assert "hub_clock_unsynced" in reading.time_flags


async def test_a_clock_never_set_is_flagged_and_set_from_a_synced_hub(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff(clock_unset=True)
    hub, reading = await one_session(world, tmp_path, outbox, device, synced=True)
    assert len(device.clock_writes) == 1
    assert not device.info.clock_unset
    assert hub.reporter.counters["device_clock_unset"] == 1
    assert hub.reporter.clock_offset_s is None  # no meaningful offset to an unset clock
    # The record's own timestamp is not trusted: receipt time, flagged.
    assert "device_clock_unset" in reading.time_flags
    assert reading.time_source is TimeSource.HUB_RECEIPT
    assert "device_clock_set_by_hub" in reading.status


async def test_a_clock_never_set_is_flagged_but_not_written_by_an_unsynced_hub(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff(clock_unset=True)
    hub, reading = await one_session(world, tmp_path, outbox, device, synced=False)
    assert device.clock_writes == []
    assert device.info.clock_unset
    assert "device_clock_unset" in reading.time_flags
    assert hub.reporter.counters["clock_write_skipped_hub_unsynced"] == 1


@pytest.mark.parametrize(
    ("clock", "counter"),
    [
        ({"clock_offset_s": 10.0}, None),  # a few seconds of drift: left alone
        ({"clock_offset_s": -TWO_HOURS_S, "clock_writable": False}, "clock_not_writable"),
    ],
    ids=["small-drift", "read-only-current-time"],
)
async def test_no_write_for_small_drift_or_a_read_only_clock(
    world: BleWorld, tmp_path: Path, outbox: Outbox, clock: dict[str, object], counter: str | None
) -> None:
    device = cuff(**clock)
    hub, reading = await one_session(world, tmp_path, outbox, device, synced=True)
    assert device.clock_writes == []
    assert "clock_writes" not in hub.reporter.counters
    assert "device_clock_set_by_hub" not in reading.status
    assert reading.device_clock_offset_s == hub.reporter.clock_offset_s
    if counter is not None:
        assert hub.reporter.counters[counter] == 1
