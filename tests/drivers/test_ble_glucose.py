"""Glucose meters over bumble: RACP from a durable cursor, into the real Outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agent.outbox import Outbox
from drivers.ble.settings import BleGlucoseSettings
from drivers.emulators.ble_glucose_meter import GlucoseMeter, MeterRecord
from tests.drivers.ble_support import (
    Harness,
    glucose_context,
    glucose_payload,
    outbox_fixture,  # noqa: F401 - provides the `outbox` fixture
    wait_until,
    world_fixture,  # noqa: F401 - provides the `world` fixture
)

if TYPE_CHECKING:
    from pathlib import Path

    from drivers.emulators.ble import BleWorld

pytestmark = pytest.mark.bumble

METER = "A4:C1:38:00:00:02"


def meter_with_two_records() -> GlucoseMeter:
    """A meter holding record 1 (95 mg/dL) and record 2 (140 mg/dL, with a context)."""
    meter = GlucoseMeter(METER, "Meter")
    meter.add_record(MeterRecord(1, glucose_payload(1, 95)))
    meter.add_record(
        MeterRecord(2, glucose_payload(2, 140, context_follows=True), glucose_context(2))
    )
    return meter


async def test_glucose_racp_resumes_after_cursor_across_restart(
    world: BleWorld, tmp_path: Path
) -> None:
    meter = meter_with_two_records()
    await meter.attach(world)
    # rest_s keeps the first driver from reconnecting before the restart below.
    settings = BleGlucoseSettings(id="glucose", address=METER, idle_s=0.5, rest_s=60)
    database = tmp_path / "outbox.db"
    outbox = await Outbox.open(database)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await hub.wait_for_count(2)
        # The transfer ends at the RACP response; the meter is then released.
        await wait_until(lambda: meter.connections_seen == 1 and not meter.is_connected)
    finally:
        await hub.stop()
        await outbox.close()
    # A real restart of the agent side: the outbox reopened from its file, a new
    # driver (and everything it holds in memory) on the same state directory.
    meter.add_record(MeterRecord(3, glucose_payload(3, 101)))
    outbox = await Outbox.open(database)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await hub.wait_for_count(3)
        await wait_until(lambda: len(meter.racp.requests) >= 2)
        rows = await hub.readings()
    finally:
        await hub.stop()
        await outbox.close()
    # The first request asks for all records; after the restart only those after 2.
    assert meter.racp.requests == [bytes.fromhex("0101"), bytes.fromhex("0103010300")]
    assert [r.device_seq for r in rows] == [1, 2, 3]
    assert hub.reporter.counters["glucose_meter_resets"] == 0


async def test_glucose_drop_between_record_and_context_commits_nothing_partial(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    meter = meter_with_two_records()
    meter.drop_after_records = 2  # after record 1 and record 2's measurement, before context
    await meter.attach(world)
    settings = BleGlucoseSettings(id="glucose", address=METER, idle_s=0.5, rest_s=0.1)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await wait_until(lambda: len(meter.racp.requests) >= 2)
        await hub.wait_for_count(2)
    finally:
        await hub.stop()
    # Record 2 came back whole on the second connection, asked for from sequence 2.
    assert meter.racp.requests[1] == bytes.fromhex("0103010200")
    assert [r.device_seq for r in await hub.readings()] == [1, 2]


async def test_glucose_meter_reset_is_detected_and_new_records_fetched(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    meter = GlucoseMeter(METER, "Meter")
    for seq in (1, 2, 3):
        meter.add_record(MeterRecord(seq, glucose_payload(seq, 90 + seq)))
    await meter.attach(world)
    settings = BleGlucoseSettings(id="glucose", address=METER, idle_s=0.5, rest_s=60)
    hub = Harness(world, tmp_path, outbox, settings)
    hub.start()
    try:
        await hub.wait_for_count(3)
        await wait_until(lambda: meter.connections_seen == 1 and not meter.is_connected)
        await hub.stop()
        # Memory cleared (new batteries, factory reset): sequence numbers restart at 1.
        meter.records = [MeterRecord(1, glucose_payload(1, 180))]
        hub.start()
        await hub.wait_for_count(4)
        await wait_until(lambda: meter.connections_seen == 2 and not meter.is_connected)
    finally:
        await hub.stop()
    assert hub.reporter.counters["glucose_meter_resets"] == 1
    assert meter.racp.requests[1:] == [
        bytes.fromhex("0103010400"),  # after the cursor: nothing
        bytes.fromhex("0106"),  # the newest record: sequence 1 < cursor 3
        bytes.fromhex("0101"),  # so everything
    ]
    cursor = (tmp_path / "state" / "ble-glucose.cursor.json").read_text()
    assert '"last_sequence": 1' in cursor
