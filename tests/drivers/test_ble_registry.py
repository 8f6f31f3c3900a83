"""The registry finds every BLE driver, and each plan agrees with the codecs' PROFILES."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from drivers import DRIVERS
from drivers.base import CaptureResult
from drivers.ble.driver import PLANS, BleDriver
from drivers.ble.mapping import PROFILES
from tests.drivers.ble_support import RecordingReporter, make_ctx

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.readings import Reading

BLE_DRIVERS = sorted(name for name in DRIVERS if name.startswith("ble-"))


def test_one_registry_entry_per_profile() -> None:
    assert BLE_DRIVERS == [
        "ble-blood-pressure",
        "ble-glucose",
        "ble-heart-rate",
        "ble-pulse-oximeter",
        "ble-thermometer",
        "ble-weight-scale",
    ]


@pytest.mark.parametrize("name", BLE_DRIVERS)
async def test_registry_builds_a_production_driver_without_io(name: str) -> None:
    spec = DRIVERS[name]
    settings = spec.load_settings_model().model_validate(
        {"id": "dev-1", "address": "a4-c1-38-00-00-01"}
    )
    assert getattr(settings, "address", None) == "A4:C1:38:00:00:01"
    driver = spec.build(settings, make_ctx(_NoSink(), RecordingReporter()))
    assert isinstance(driver, BleDriver)
    await driver.close()  # nothing was opened: closing is a no-op


def test_plans_subscribe_to_what_the_codecs_map() -> None:
    by_service = {spec.service_uuid: spec for spec in PROFILES.values()}
    for name, plan in PLANS.items():
        spec = by_service[plan.service_uuid]
        readable = set(spec.measurement_uuids) | ({0x2A34} if spec.racp_uuid else set())
        assert set(plan.measurement_uuids) <= readable, name
        assert plan.continuous == (
            0x2A5F in plan.measurement_uuids or 0x2A37 in plan.measurement_uuids
        )


class _NoSink:
    async def capture(self, readings: Sequence[Reading]) -> CaptureResult:
        raise AssertionError("no capture expected")
