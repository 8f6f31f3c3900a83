"""Device drivers, listed by hand: no entry points, no import magic.

Each entry names the driver's config model (imported eagerly, it is small and pure) and
a factory imported lazily, so one driver's dependencies (bleak, pyserial, bumble) never
load for another.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.base import DeviceSettings, Driver, DriverContext


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """Where to find a driver's settings model and its factory ``build(settings, ctx)``."""

    settings_model: str  # "module:Class"
    factory: str  # "module:function"

    def load_settings_model(self) -> type[DeviceSettings]:
        """Import and return the pydantic settings model."""
        return _load(self.settings_model)  # type: ignore[no-any-return]

    def build(self, settings: DeviceSettings, ctx: DriverContext) -> Driver:
        """Import the driver module and build the driver (no I/O)."""
        return _load(self.factory)(settings, ctx)  # type: ignore[no-any-return]


def _load(ref: str) -> Any:  # noqa: ANN401 - an imported attribute, typed by its caller
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


# Keep sorted. One line per driver; the key is the config's `driver:` value.
DRIVERS: dict[str, DriverSpec] = {
    "ble-blood-pressure": DriverSpec(
        "drivers.ble.settings:BleBloodPressureSettings", "drivers.ble.driver:build"
    ),
    "ble-glucose": DriverSpec(
        "drivers.ble.settings:BleGlucoseSettings", "drivers.ble.driver:build"
    ),
    "ble-heart-rate": DriverSpec(
        "drivers.ble.settings:BleHeartRateSettings", "drivers.ble.driver:build"
    ),
    "ble-pulse-oximeter": DriverSpec(
        "drivers.ble.settings:BlePulseOximeterSettings", "drivers.ble.driver:build"
    ),
    "ble-thermometer": DriverSpec(
        "drivers.ble.settings:BleThermometerSettings", "drivers.ble.driver:build"
    ),
    "ble-weight-scale": DriverSpec(
        "drivers.ble.settings:BleWeightScaleSettings", "drivers.ble.driver:build"
    ),
    "serial-oximeter": DriverSpec(
        "drivers.serial.settings:SerialOximeterSettings", "drivers.serial.driver:build"
    ),
}
