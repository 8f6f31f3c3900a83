"""Continuous BLE streams (PLX 0x2A5F) under the real supervisor, over bumble.

A continuous pulse oximeter must behave like a heart-rate strap: stream defaults (not
seen after a minute of silence, not a day and a half), no rest between sessions, and after
a dropped link the supervisor's jittered backoff brings it back to streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from agent.supervise import Backoff, supervise_driver
from drivers._codecs import plx
from drivers._codecs.ieee11073 import MedFloat
from drivers.ble.settings import BleHeartRateSettings, BlePulseOximeterSettings
from drivers.emulators import ble_payloads
from drivers.emulators.ble_peripherals import StreamingPeripheral
from tests.drivers.ble_support import (
    Harness,
    outbox_fixture,  # noqa: F401 - provides the `outbox` fixture
    wait_until,
    world_fixture,  # noqa: F401 - provides the `world` fixture
)

if TYPE_CHECKING:
    from pathlib import Path

    from agent.outbox import Outbox
    from drivers.emulators.ble import BleWorld

pytestmark = pytest.mark.bumble

OXIMETER = "A4:C1:38:00:00:05"
NS_PER_S = 1_000_000_000


def plx_stream_payload(spo2: int, pulse: int) -> bytes:
    return ble_payloads.encode_plx_continuous(
        plx.PlxContinuous(MedFloat.of(spo2), MedFloat.of(pulse))
    )


def continuous_oximeter() -> StreamingPeripheral:
    """A finger oximeter notifying 0x2A5F every 0.05 s (a fast 1 Hz stream)."""
    return StreamingPeripheral(
        OXIMETER,
        "Oximeter",
        service_uuid="1822",
        measurement_uuid="2A5F",
        payloads=[plx_stream_payload(97, 70 + i) for i in range(5)],
        period_s=0.05,
    )


def test_continuous_oximeter_gets_the_stream_defaults_of_a_heart_rate_strap() -> None:
    oximeter = BlePulseOximeterSettings(id="oxi", address=OXIMETER, mode="continuous")
    strap = BleHeartRateSettings(id="hr", address=OXIMETER)
    assert oximeter.expected_interval_s == strap.expected_interval_s == 60
    assert oximeter.interval_s == strap.interval_s
    assert oximeter.stall_s == strap.stall_s
    spot = BlePulseOximeterSettings(id="oxi", address=OXIMETER)
    assert spot.expected_interval_s == 36 * 3600  # a daily spot check, with a day's slack


@pytest.mark.parametrize(
    ("mode", "key"), [("continuous", "rest_s"), ("continuous", "idle_s"), ("spot", "interval_s")]
)
def test_a_key_of_the_other_mode_is_refused_not_ignored(mode: str, key: str) -> None:
    with pytest.raises(ValidationError, match=f"{key} not used with mode: {mode}"):
        BlePulseOximeterSettings(id="oxi", address=OXIMETER, mode=mode, **{key: 1.0})


async def test_dropped_oximeter_stream_reconnects_and_streams_again_thinned(
    world: BleWorld, tmp_path: Path, outbox: Outbox
) -> None:
    device = continuous_oximeter()
    await device.attach(world)
    interval_s = 0.3
    settings = BlePulseOximeterSettings(
        id="oxi", address=OXIMETER, mode="continuous", interval_s=interval_s
    )
    hub = Harness(world, tmp_path, outbox, settings)
    supervisor = asyncio.create_task(
        supervise_driver(hub.driver, hub.reporter, Backoff(min_s=0.05, max_s=0.5))
    )
    try:
        await hub.wait_for_count(2, at_least=True)
        before_drop = len(await hub.readings())
        await device.drop_link()  # the patient walked to the kitchen
        await wait_until(lambda: device.connections_seen >= 2 and device.is_connected)
        await hub.wait_for_count(before_drop + 2, at_least=True)
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        await device.close()
    names = hub.state_names()
    # Lost, reported, reconnected by the supervisor: the same driver object, no rest.
    assert names.count("connected") >= 2
    assert "disconnected" in names[names.index("connected") + 1 :]
    assert hub.reporter.counters["session_failures"] >= 1
    readings = await hub.readings()
    assert {r.kind for r in readings} == {"spo2"}
    # Thinned to one sample per interval, across the reconnect too.
    stamps = [r.received.monotonic_ns for r in readings]
    assert all(b - a >= interval_s * NS_PER_S for a, b in itertools.pairwise(stamps))
    assert hub.reporter.counters["samples_thinned"] >= len(readings)
