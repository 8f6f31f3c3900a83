"""BLE drivers end to end over bumble: real GATT, real ATT bytes, real SQLite.

The hub side is the production session logic behind the ``GattLink`` seam; the link is a
bumble central on an in-process LocalLink (BlueZ cannot run here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import pytest

from agent.app import CaptureSink
from agent.clock import SystemClock
from agent.errors import PermanentDeviceError, TransientDeviceError
from agent.health import Health, device_alarm_name
from agent.outbox import Outbox
from agent.supervise import Backoff, supervise_driver
from drivers.base import DeviceState
from drivers.ble.driver import build
from drivers.ble.settings import (
    BleBloodPressureSettings,
    BleHeartRateSettings,
)
from drivers.emulators.ble import BleWorld
from drivers.emulators.ble_cli import demo_peripheral, demo_settings
from drivers.emulators.ble_peripherals import (
    DeviceInfo,
    EmulatedPeripheral,
    StoredRecordsPeripheral,
    StreamingPeripheral,
)
from tests.drivers.ble_support import (
    Harness,
    bp_payload,
    hr_payload,
    make_ctx,
    outbox_fixture,  # noqa: F401 - provides the `outbox` fixture
    wait_until,
    world_fixture,  # noqa: F401 - provides the `world` fixture
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


pytestmark = pytest.mark.bumble

CUFF = "A4:C1:38:00:00:01"
OTHER_CUFF = "A4:C1:38:00:00:99"
METER = "A4:C1:38:00:00:02"
STRAP = "A4:C1:38:00:00:03"


def cuff(address: str = CUFF, serial: str = "SN0001") -> StoredRecordsPeripheral:
    return StoredRecordsPeripheral(
        address,
        "Cuff",
        service_uuid="1810",
        measurement_uuid="2A35",
        info=DeviceInfo(serial_number=serial),
    )


def heart_rate_strap(payloads: list[bytes]) -> StreamingPeripheral:
    """A heart-rate strap notifying ``payloads`` in turn every 0.05 s."""
    return StreamingPeripheral(
        STRAP,
        "Strap",
        service_uuid="180D",
        measurement_uuid="2A37",
        payloads=payloads,
        period_s=0.05,
    )


async def test_bp_stored_records_arrive_once_across_connections(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff()
    device.records += [bp_payload(120, 80, 1), bp_payload(130, 85, 2)]
    await device.attach(world)
    settings = BleBloodPressureSettings(
        id="bp-cuff", address=CUFF, serial_number="SN0001", idle_s=0.3, rest_s=0.2
    )
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await hub.wait_for_count(2)
        await wait_until(lambda: device.connections_seen >= 1 and not device.is_connected)
        # The patient measures again; the cuff re-sends all three on the next connection.
        device.records.append(bp_payload(125, 82, 3))
        await wait_until(lambda: device.connections_seen >= 2 and not device.is_connected)
        await hub.wait_for_count(3)
    finally:
        await hub.stop()
    rows = await hub.readings()
    systolics = [r.value("systolic").value for r in rows]  # type: ignore[union-attr]
    assert systolics == [120, 130, 125]
    assert all(r.patient.patient_id == "patient-test-1" for r in rows)
    assert rows[0].device.serial_number == "SN0001"
    assert {"connected", "disconnected", "seen"} <= set(hub.state_names())
    assert hub.reporter.battery == 87
    assert hub.reporter.clock_offset_s is not None
    assert abs(hub.reporter.clock_offset_s) < 5


async def test_link_dropped_mid_transfer_loses_and_duplicates_nothing(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff()
    device.records += [bp_payload(110 + i, 70, i) for i in range(5)]
    device.drop_after_records = 2  # the cuff walks out of range after two records
    await device.attach(world)
    settings = BleBloodPressureSettings(id="bp-cuff", address=CUFF, idle_s=0.3, rest_s=0.1)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await hub.wait_for_count(5)
    finally:
        await hub.stop()
    assert device.connections_seen >= 2
    assert await hub.systolics() == [110, 111, 112, 113, 114]


def neighbours_cuff() -> StoredRecordsPeripheral:
    stranger = cuff(OTHER_CUFF, serial="NEIGHBOUR")
    stranger.records.append(bp_payload(180, 110, 5))
    return stranger


@pytest.mark.parametrize(
    "make_stranger",
    # Same profile (a neighbour's cuff), and another profile altogether (a HR strap).
    [neighbours_cuff, lambda: heart_rate_strap([hr_payload(70)])],
    ids=["same-profile", "other-profile"],
)
async def test_unbound_device_is_ignored_and_counted(
    world: BleWorld,
    tmp_path: Path,
    outbox: Outbox,
    make_stranger: Callable[[], EmulatedPeripheral],
) -> None:
    stranger = make_stranger()
    await stranger.attach(world)
    settings = BleBloodPressureSettings(id="bp-cuff", address=CUFF, idle_s=0.3)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await wait_until(lambda: hub.reporter.counters["ignored_adverts"] >= 3)
    finally:
        await hub.stop()
        await stranger.close()
    assert stranger.connections_seen == 0
    assert "seen" not in hub.state_names()  # someone else's device is not ours "seen"
    assert await hub.readings() == []


async def test_serial_mismatch_is_refused_with_error_state(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff(serial="SN9999")  # swapped for another patient's cuff
    device.records.append(bp_payload(120, 80, 1))
    await device.attach(world)
    settings = BleBloodPressureSettings(
        id="bp-cuff", address=CUFF, serial_number="SN0001", idle_s=0.3
    )
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    assert hub.task is not None
    with pytest.raises(PermanentDeviceError, match="serial mismatch"):
        await asyncio.wait_for(hub.task, 10)
    await hub.stop()
    state, reason = hub.reporter.states[-1]
    assert state is DeviceState.ERROR
    assert reason is not None
    assert "expected SN0001, device reports SN9999" in reason
    assert await hub.readings() == []
    assert not device.is_connected  # the connection was released


async def test_serial_mismatch_under_the_supervisor_alarms_the_hub_and_logs_no_identifiers(
    world: BleWorld, tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    device = cuff(serial="SN9999")  # another patient's cuff, cloning the bound address
    device.records.append(bp_payload(120, 80, 1))
    await device.attach(world)
    health = Health(hub_id="hub-test", clock=SystemClock())
    reporter = health.device("bp-cuff")
    sink = CaptureSink(outbox, health, on_stored=lambda: None)
    settings = BleBloodPressureSettings(
        id="bp-cuff", address=CUFF, serial_number="SN0001", idle_s=0.3, rest_s=0.2
    )
    driver = build(
        settings,
        make_ctx(sink, reporter),
        link_factory=world.link_factory,
        scanner_factory=world.scanner_factory,
        state_dir=tmp_path,
    )
    alarm = device_alarm_name("bp-cuff")
    caplog.set_level(logging.DEBUG)
    supervisor = asyncio.create_task(
        supervise_driver(driver, reporter, Backoff(min_s=0.05, max_s=0.2))
    )
    try:
        await wait_until(lambda: alarm in health.alarms)
        since = health.alarms[alarm].since
        # Retried at the cap and refused again: seen and connected in between do not
        # clear the alarm, and it keeps the time it was first raised.
        await wait_until(lambda: reporter.counters.get("session_failures", 0) >= 3)
        assert health.alarms[alarm].since == since
        assert reporter.state is DeviceState.ERROR
        assert "expected SN0001, device reports SN9999" in (reporter.reason or "")
        assert CUFF in (reporter.reason or "")  # the technician is told which device
        assert await outbox.list_readings(state="pending") == []
        device.info.serial_number = "SN0001"  # the patient's own cuff is back
        await wait_until(lambda: alarm not in health.alarms)
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
    assert len(await outbox.list_readings(state="pending")) == 1
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("serial mismatch" in line for line in loud)
    for identifier in ("SN9999", "SN0001", CUFF):
        assert not [line for line in loud if identifier in line], identifier
    quiet = [r.getMessage() for r in caplog.records if r.levelno < logging.INFO]
    assert any("SN9999" in line for line in quiet)  # the full reason is at DEBUG


async def test_heart_rate_stream_is_thinned_to_interval(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    strap = heart_rate_strap([hr_payload(60 + i) for i in range(10)])
    await strap.attach(world)
    settings = BleHeartRateSettings(id="hr", address=STRAP, interval_s=0.5)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await wait_until(lambda: strap.records_sent >= 40, timeout_s=20)
    finally:
        await hub.stop()
        await strap.close()
    kept = len(await hub.readings())
    sent = strap.records_sent
    # ~0.05 s apart, kept once per 0.5 s: roughly one in ten survives.
    assert 2 <= kept <= sent // 4
    assert hub.reporter.counters["samples_thinned"] >= sent - kept - 2


async def test_heart_rate_link_loss_raises_transient_for_the_supervisor(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    strap = heart_rate_strap([hr_payload(70)])
    await strap.attach(world)
    hub = Harness(
        world, tmp_path, outbox, BleHeartRateSettings(id="hr", address=STRAP, interval_s=0.1)
    )
    hub.start()
    assert hub.task is not None
    try:
        await hub.wait_for_count(1, at_least=True)
        await strap.drop_link()
        with pytest.raises(TransientDeviceError, match="link lost"):
            await asyncio.wait_for(hub.task, 10)
    finally:
        await hub.stop()
        await strap.close()
    assert hub.state_names()[-1] == "disconnected"


async def test_malformed_record_is_counted_and_skipped_not_fatal(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff()
    truncated = bp_payload(150, 95, 4)[:5]  # flags + systolic + half a diastolic
    device.records += [bp_payload(120, 80, 1), truncated, bp_payload(130, 85, 2)]
    await device.attach(world)
    settings = BleBloodPressureSettings(id="bp-cuff", address=CUFF, idle_s=0.3, rest_s=60)
    hub = Harness(world, tmp_path, outbox, settings)
    await hub.one_session(2, device)
    assert hub.reporter.counters["decode_errors"] == 1
    assert await hub.systolics() == [120, 130]


async def test_serial_changed_since_install_is_refused_on_the_next_connection(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff(serial="SN0001")
    device.records.append(bp_payload(120, 80, 1))
    await device.attach(world)
    settings = BleBloodPressureSettings(
        id="bp-cuff", address=CUFF, serial_number="SN0001", idle_s=0.3, rest_s=0.2
    )
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    assert hub.task is not None
    try:
        await hub.wait_for_count(1)
        # Same address, different device (a swapped unit cloning the address).
        device.info.serial_number = "SN0002"
        device.records.append(bp_payload(170, 100, 2))
        with pytest.raises(PermanentDeviceError, match="serial mismatch"):
            await asyncio.wait_for(hub.task, 10)
    finally:
        await hub.stop()
    assert len(await hub.readings()) == 1
    assert hub.reporter.states[-1][0] is DeviceState.ERROR


@pytest.mark.parametrize("profile", ["thermometer", "weight-scale", "pulse-oximeter"])
async def test_other_episodic_profiles_capture_their_record_once(
    world: BleWorld, tmp_path: Path, outbox: Outbox, profile: str
) -> None:
    device = demo_peripheral(profile, CUFF)
    await device.attach(world)
    settings = demo_settings(profile, CUFF)
    hub = Harness(world, tmp_path, outbox, settings)
    await hub.one_session(1, device)
    (reading,) = await hub.readings()
    assert reading.device.serial_number == device.info.serial_number
    assert reading.device_time is not None  # the device's own timestamp is kept


async def test_pairing_when_required_then_records_flow(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff()
    device.records.append(bp_payload(120, 80, 1))
    await device.attach(world)
    settings = BleBloodPressureSettings(id="bp-cuff", address=CUFF, pair=True, idle_s=0.3)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await hub.wait_for_count(1)
    finally:
        await hub.stop()
    assert device.paired


async def test_multi_user_cuff_keeps_only_the_patients_slot(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = cuff()
    device.records += [
        bp_payload(120, 80, 1, user_id=1),
        bp_payload(150, 95, 2, user_id=2),  # the patient's partner uses slot 2
        bp_payload(160, 99, 3, user_id=0xFF),  # guest measurement: anyone's
        bp_payload(124, 81, 4, user_id=1),
    ]
    await device.attach(world)
    settings = BleBloodPressureSettings(
        id="bp-cuff", address=CUFF, user_id=1, idle_s=0.3, rest_s=60
    )
    hub = Harness(world, tmp_path, outbox, settings)
    await hub.one_session(2, device)
    assert hub.reporter.counters["other_user_records"] == 2
    assert await hub.systolics() == [120, 124]


async def test_a_silent_stream_is_reconnected(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    strap = heart_rate_strap([hr_payload(70)])
    await strap.attach(world)
    settings = BleHeartRateSettings(id="hr", address=STRAP, interval_s=0.1, stall_s=0.3)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    assert hub.task is not None
    try:
        await hub.wait_for_count(1, at_least=True)
        strap.period_s = 3600  # still connected, no longer sending (strap taken off)
        with pytest.raises(TransientDeviceError, match="silent"):
            await asyncio.wait_for(hub.task, 10)
    finally:
        await hub.stop()
        await strap.close()
    assert not strap.is_connected
