"""The serial oximeter driver over real ptys, into a real SQLite outbox."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tty
from typing import TYPE_CHECKING

import pytest

from agent.clock import HubTime, SystemClock
from agent.errors import PermanentDeviceError, TransientDeviceError
from agent.outbox import Outbox
from agent.readings import Cadence, Kind
from drivers.base import DeviceState, DriverContext
from drivers.emulators.serial import PtySerialDevice
from drivers.emulators.serial_frames import Vitals, encode_df8
from drivers.serial.driver import build
from drivers.serial.protocols import PROTOCOLS
from drivers.serial.transport import SerialTransport
from tests.agent.pubharness import eventually
from tests.drivers.serial_support import PATIENT, RecordingReporter, device_for, rig, settings_for

if TYPE_CHECKING:
    from pathlib import Path

    from agent.readings import Reading, StoredReading

pytestmark = pytest.mark.pty


def _values(reading: Reading) -> dict[str, float | None]:
    return {q.name: q.value for q in reading.values}


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_each_protocol_end_to_end_into_the_outbox(tmp_path: Path, protocol: str) -> None:
    device = device_for(protocol, tmp_path)
    async with rig(tmp_path, protocol, device=device) as r:
        rows: list[StoredReading] = await eventually(
            lambda: _at_least(r.readings(), 3), timeout_s=15
        )
        assert r.reporter.states[0] == (DeviceState.CONNECTED, None)
    spec = PROTOCOLS[protocol]
    for row in rows:
        reading = row.reading
        values = _values(reading)
        assert reading.kind is Kind.SPO2
        assert reading.cadence is (Cadence.SPOT if spec.spot else Cadence.CONTINUOUS)
        assert reading.patient.patient_id == "PATIENT-TEST-1"
        assert reading.device.device_id == "oximeter"
        assert 94 <= (values["spo2"] or 0) <= 99
        assert 60 <= (values["pulse_rate"] or 0) <= 90
        assert ("perfusion_index" in values) is spec.has_perfusion_index
        assert "interval_truncated" not in reading.status
        if spec.spot:
            assert reading.device_time is not None
        else:
            assert int(reading.extra["samples"]) >= 1
    if spec.init_commands:
        assert spec.init_commands[0] in device.commands


async def _at_least(rows_coro: object, n: int) -> list[StoredReading] | None:
    assert asyncio.iscoroutine(rows_coro)
    rows: list[StoredReading] = await rows_coro
    return rows if len(rows) >= n else None


async def test_high_rate_stream_is_one_reading_per_interval(tmp_path: Path) -> None:
    device = PtySerialDevice("contec-v5", link=tmp_path / "link")
    async with rig(tmp_path, "contec-v5", device=device, interval_s=0.4) as r:
        await asyncio.sleep(1.7)
        rows = await r.readings()
    # 60 packages/s into 0.4 s intervals: about 24 samples each, 2.5 readings a second.
    assert 2 <= len(rows) <= 5
    counts = [int(row.reading.extra["samples"]) for row in rows]
    assert sum(counts) >= 50
    assert max(counts) <= 30


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_unplug_and_replug_mid_stream_recovers_and_keeps_readings(
    tmp_path: Path, protocol: str
) -> None:
    device = device_for(protocol, tmp_path)
    async with rig(tmp_path, protocol, device=device) as r:
        await eventually(lambda: _at_least(r.readings(), 3), timeout_s=15)
        device.unplug()
        await eventually(lambda: r.reporter.last_state is DeviceState.DISCONNECTED)
        before = [row.reading.reading_id for row in await r.readings()]
        commands_before = len(device.commands)
        await asyncio.sleep(0.3)
        device.plug()  # a new pty; the by-id link is re-pointed
        await eventually(lambda: r.reporter.last_state is DeviceState.CONNECTED, timeout_s=8)
        rows = await eventually(lambda: _at_least(r.readings(), len(before) + 3), timeout_s=15)
        assert not r.driver_task.done()
    after = [row.reading.reading_id for row in rows]
    assert after[: len(before)] == before  # every committed reading is still there
    reasons = [reason for state, reason in r.reporter.states if state is DeviceState.DISCONNECTED]
    assert reasons
    assert "check the USB cable" in (reasons[0] or "")
    spec = PROTOCOLS[protocol]
    for command in spec.init_commands:  # Nonin format select, Contec start
        assert command in device.commands[:commands_before], "not sent on the first port"
        assert command in device.commands[commands_before:], "not re-sent after the replug"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_no_partial_frame_is_stored_across_an_unplug(tmp_path: Path, protocol: str) -> None:
    # The cable goes mid-unit (the driver has read the first half), and the device comes
    # back streaming mid-unit, finger out: kept across the unplug, the old half and the
    # new half would make one unit with the old SpO2 and the new missing pulse.
    device = device_for(protocol, tmp_path, record=True)
    async with rig(tmp_path, protocol, device=device) as r:
        await eventually(lambda: _at_least(r.readings(), 2), timeout_s=15)
        device.set_silent(True)
        await asyncio.sleep(0.3)
        device.send_partial_unit(head=True)
        await asyncio.sleep(0.5)  # the driver reads the half unit (no assertion on time)
        device.unplug()
        await eventually(lambda: r.reporter.last_state is DeviceState.DISCONNECTED)
        stored_before = len(await r.readings())
        device.set_finger_out(True)
        device.plug()
        await eventually(lambda: r.reporter.last_state is DeviceState.CONNECTED, timeout_s=8)
        device.send_partial_unit(head=False)
        device.set_silent(False)
        await eventually(lambda: _with_status(r.readings(), "spo2_missing"), timeout_s=15)
        rows = await r.readings()
    assert len(rows) > stored_before
    spo2_sent = {spo2 for _, spo2, _ in device.sent_log}
    pulse_sent = {pulse for _, _, pulse in device.sent_log}
    for row in rows:
        spo2, pulse = _values(row.reading)["spo2"], _values(row.reading)["pulse_rate"]
        assert spo2 in spo2_sent
        assert pulse in pulse_sent
        # The emulator sends both values or neither (finger out): never one of them.
        assert (spo2 is None) == (pulse is None)


async def test_a_second_open_of_the_port_is_refused_while_the_driver_holds_it(
    tmp_path: Path,
) -> None:
    device = device_for("nonin-df8", tmp_path)
    async with rig(tmp_path, "nonin-df8", device=device) as r:
        await eventually(lambda: r.reporter.last_state is DeviceState.CONNECTED)
        intruder = SerialTransport(
            device.port, PROTOCOLS["nonin-df8"].link, on_data=_ignore, on_lost=_ignore
        )
        with pytest.raises(TransientDeviceError, match="in use by another program"):
            await intruder.open()
        assert not intruder.is_open
        count = len(await r.readings())
        await eventually(lambda: _at_least(r.readings(), count + 2), timeout_s=10)
    assert r.reporter.last_state is DeviceState.CONNECTED  # the driver kept the port


def _ignore(_: object) -> None:
    """A transport callback for a port that must never deliver anything."""


async def test_port_that_does_not_come_back_is_a_transient_error(tmp_path: Path) -> None:
    async with rig(tmp_path, "nonin-df8", reopen_wait_s=0.5) as r:
        await eventually(lambda: _at_least(r.readings(), 1), timeout_s=10)
        r.device.unplug()
        with pytest.raises(TransientDeviceError, match="missing: check the USB cable"):
            await asyncio.wait_for(r.driver_task, timeout=5)
    assert r.reporter.last_state is DeviceState.DISCONNECTED


async def test_missing_port_at_start_is_reported_at_once_then_transient(tmp_path: Path) -> None:
    device = PtySerialDevice("nonin-df8", link=tmp_path / "by-id")
    async with rig(tmp_path, "nonin-df8", device=device, reopen_wait_s=1.0) as r:
        device.unplug()  # the technician has not plugged it in yet
        await asyncio.sleep(0)
        with pytest.raises(TransientDeviceError):
            await asyncio.wait_for(r.driver_task, timeout=5)
    assert r.reporter.states[-1][0] is DeviceState.DISCONNECTED
    assert r.reporter.states[-1][1] == (
        f"port {tmp_path / 'by-id'} missing: check the USB cable and that the oximeter is "
        "switched on"
    )


async def test_port_plugged_in_during_the_wait_is_opened(tmp_path: Path) -> None:
    device = PtySerialDevice("nonin-ascii", link=tmp_path / "by-id", speed=10)
    async with rig(tmp_path, "nonin-ascii", device=device) as r:
        device.unplug()
        await asyncio.sleep(0.3)
        device.plug()
        await eventually(lambda: _at_least(r.readings(), 2), timeout_s=10)
    assert DeviceState.CONNECTED in [s for s, _ in r.reporter.states]


async def test_garbage_and_corrupt_frames_are_counted_never_stored(tmp_path: Path) -> None:
    device = PtySerialDevice("nonin-df2", link=tmp_path / "link", speed=4)
    async with rig(tmp_path, "nonin-df2", device=device) as r:
        await eventually(lambda: _at_least(r.readings(), 2), timeout_s=10)
        for _ in range(4):
            device.inject_garbage(40)
            device.corrupt_next(1)
            await asyncio.sleep(0.15)
        await eventually(lambda: device.units_corrupted == 4)
        sent_before = device.units_sent
        await eventually(lambda: device.units_sent >= sent_before + 3)
        await asyncio.sleep(0.3)
        rows = await r.readings()
    assert r.reporter.counters["decode_errors"] >= 4
    assert r.reporter.counters["bytes_skipped"] >= 4 * 40
    for row in rows:
        values = _values(row.reading)
        assert 94 <= (values["spo2"] or 0) <= 99


@pytest.mark.parametrize("protocol", ["nonin-df8", "contec-v7", "masimo-ascii"])
async def test_finger_out_gives_missing_values_and_sensor_off(
    tmp_path: Path, protocol: str
) -> None:
    device = device_for(protocol, tmp_path)
    async with rig(tmp_path, protocol, device=device) as r:
        await eventually(lambda: _at_least(r.readings(), 1), timeout_s=10)
        device.set_finger_out(True)
        rows = await eventually(lambda: _with_status(r.readings(), "spo2_missing"), timeout_s=10)
    reading = rows[-1].reading
    assert "sensor_off" in reading.status
    spo2 = reading.value("spo2")
    assert spo2 is not None
    assert (spo2.value, spo2.special) == (None, "missing")


async def _with_status(rows_coro: object, flag: str) -> list[StoredReading] | None:
    assert asyncio.iscoroutine(rows_coro)
    rows: list[StoredReading] = await rows_coro
    hits = [row for row in rows if flag in row.reading.status]
    return hits or None


async def test_contec_keepalive_keeps_the_stream_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shorten our own registry's keep-alive period so the test need not wait 5 s.
    spec = dataclasses.replace(PROTOCOLS["contec-v7"], keepalive_period_s=0.3)
    monkeypatch.setitem(PROTOCOLS, "contec-v7", spec)
    device = PtySerialDevice("contec-v7", link=tmp_path / "link", keepalive_timeout_s=0.6)
    async with rig(tmp_path, "contec-v7", device=device) as r:
        await asyncio.sleep(1.4)
        early = len(await r.readings())
        await asyncio.sleep(0.8)
        late = len(await r.readings())
    assert late - early >= 2  # still streaming long after the 0.6 s device timeout
    assert spec.keepalive_command is not None
    assert device.commands.count(spec.keepalive_command) >= 4


async def test_without_keepalive_the_emulated_contec_stops(tmp_path: Path) -> None:
    # The emulator's fidelity the previous test relies on: no keep-alive, no stream.
    device = PtySerialDevice("contec-v7", link=tmp_path / "link", keepalive_timeout_s=0.5)
    async with rig(tmp_path, "contec-v7", device=device) as r:
        await eventually(lambda: _at_least(r.readings(), 1), timeout_s=5)
        await asyncio.sleep(1.0)  # the driver's keep-alive (5 s) is too slow for 0.5 s
        assert not device.is_streaming


async def test_wrong_serial_number_is_rejected_and_nothing_stored(tmp_path: Path) -> None:
    device = PtySerialDevice("masimo-ascii", link=tmp_path / "link", speed=10)
    async with rig(tmp_path, "masimo-ascii", device=device, serial_number="9999999999") as r:
        with pytest.raises(PermanentDeviceError, match="reports serial 0000123456"):
            await asyncio.wait_for(r.driver_task, timeout=5)
        assert await r.readings() == []
    assert r.reporter.last_state is DeviceState.ERROR


class SyncedClock(SystemClock):
    """The system clock, said to be NTP-synchronised (this VM's may not be)."""

    def now(self) -> HubTime:
        return dataclasses.replace(super().now(), clock_synced=True)


async def test_a_masimo_clock_two_hours_fast_is_recorded_as_its_offset(tmp_path: Path) -> None:
    device = PtySerialDevice("masimo-ascii", link=tmp_path / "link", speed=10, clock_offset_s=7200)
    async with rig(tmp_path, "masimo-ascii", device=device, clock=SyncedClock()) as r:
        await eventually(lambda: r.reporter.clock_offsets, timeout_s=5)
        await eventually(r.readings, timeout_s=5)
        readings = await r.readings()
    (offset,) = r.reporter.clock_offsets  # once per session, not per line
    # The emulator's clock runs 10x from its start, so allow the seconds that took.
    assert 7200 - 5 < offset < 7200 + 60
    # A live stream keeps the hub's receipt time: the device clock is only reported.
    assert all(row.reading.time_source == "hub_receipt" for row in readings)


async def test_an_unsynced_hub_records_no_device_clock_offset(tmp_path: Path) -> None:
    device = PtySerialDevice("masimo-ascii", link=tmp_path / "link", speed=10, clock_offset_s=7200)
    unsynced = UnsyncedClock()
    async with rig(tmp_path, "masimo-ascii", device=device, clock=unsynced) as r:
        await eventually(r.readings, timeout_s=5)
    assert r.reporter.clock_offsets == []


class UnsyncedClock(SystemClock):
    """The system clock, said not to be synchronised (a Pi before NTP)."""

    def now(self) -> HubTime:
        return dataclasses.replace(super().now(), clock_synced=False)


async def test_stopping_the_driver_stores_the_open_interval(tmp_path: Path) -> None:
    device = PtySerialDevice("contec-v7", link=tmp_path / "link")
    async with rig(tmp_path, "contec-v7", device=device, interval_s=30) as r:
        await asyncio.sleep(0.8)  # well inside the first 30 s interval
        assert await r.readings() == []
        r.driver_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await r.driver_task
        rows = await r.readings()
    assert len(rows) == 1
    assert "interval_truncated" in rows[0].reading.status
    assert int(rows[0].reading.extra["samples"]) >= 20


async def test_a_port_that_keeps_dropping_goes_to_the_supervisor_not_a_hot_loop(
    tmp_path: Path,
) -> None:
    device = PtySerialDevice("nonin-df8", link=tmp_path / "flaky", speed=10)

    async def flap() -> None:  # a flaky adapter: the port vanishes moments after each open
        while True:
            await asyncio.sleep(0.15)
            device.replug()

    async with rig(tmp_path, "nonin-df8", device=device) as r:
        flapper = asyncio.create_task(flap())
        try:
            with pytest.raises(TransientDeviceError, match="3 times in a row"):
                await asyncio.wait_for(r.driver_task, timeout=10)
        finally:
            flapper.cancel()
    opens = [s for s, _ in r.reporter.states if s is DeviceState.CONNECTED]
    assert 3 <= len(opens) <= 4


async def test_the_supervisor_can_run_the_same_driver_again(tmp_path: Path) -> None:
    # First run: the wrong Masimo is plugged in; then it is swapped for the right one.
    link = tmp_path / "link"
    wrong = PtySerialDevice("masimo-ascii", link=link, speed=10, serial_number="0000999999")
    async with rig(tmp_path, "masimo-ascii", device=wrong, serial_number="0000123456") as r:
        with pytest.raises(PermanentDeviceError):
            await asyncio.wait_for(r.driver_task, timeout=5)
        wrong.unplug()
        right = PtySerialDevice("masimo-ascii", link=link, speed=10)
        right.plug()
        streaming = asyncio.create_task(right.run())
        second = asyncio.create_task(r.driver.run())
        try:
            await eventually(lambda: _at_least(r.readings(), 2), timeout_s=10)
        finally:
            for task in (second, streaming):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            right.close()
    assert r.reporter.last_state is DeviceState.CONNECTED


async def test_a_stream_that_stops_is_captured_when_its_interval_ends(tmp_path: Path) -> None:
    # The last interval of a stream must not wait for a sample that never comes (before,
    # it waited for the 10 s silence timer): a reading reaches the backend on time.
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "port"
    link.symlink_to(os.ttyname(slave))
    outbox = await Outbox.open(tmp_path / "outbox.db")
    reporter = RecordingReporter()
    ctx = DriverContext(
        sink=outbox,
        clock=SystemClock(),
        reporter=reporter,
        patient=PATIENT,
        timezone_name="UTC",
    )
    driver = build(settings_for(link, "nonin-df8", interval_s=1.0), ctx)
    task = asyncio.create_task(driver.run())
    try:
        await eventually(lambda: reporter.last_state is DeviceState.CONNECTED)
        # A burst of DF8 frames (the framer believes a frame once the next follows it),
        # then the finger comes out of the probe and the cable goes quiet.
        os.write(master, b"".join(encode_df8(Vitals(spo2=95, pulse_rate=66)) for _ in range(4)))
        rows = await eventually(lambda: outbox.list_readings(state="pending"), timeout_s=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await outbox.close()
        os.close(master)
        os.close(slave)
    assert _values(rows[0].reading) == {"spo2": 95.0, "pulse_rate": 66.0}
    assert "interval_truncated" not in rows[0].reading.status
