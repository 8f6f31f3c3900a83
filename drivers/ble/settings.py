"""Config models for the BLE health-profile drivers: one ``driver:`` name per profile.

Example (config/wardlink.example.yaml)::

    devices:
      - id: bp-cuff
        driver: ble-blood-pressure
        address: "A4:C1:38:12:34:56"
        serial_number: "SN0001"   # Device Information 0x2A25 as read at install
        pair: true                # the cuff requires bonding
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.base import DeviceSettings
from drivers.validators import MacAddress

_EPISODIC_EXPECTED_S = 36 * 3600.0  # a daily spot check, with a day's slack
_CONTINUOUS_EXPECTED_S = 60.0


class BleSettings(DeviceSettings):
    """What every BLE device entry has."""

    address: MacAddress = Field(description="bonded identity address of the device")
    serial_number: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Device Information serial (0x2A25) recorded at install; a mismatch is refused",
    )
    pair: bool = Field(default=False, description="pair/bond on connection (device requires it)")
    connect_timeout_s: float = Field(default=20.0, gt=0, le=120)


class EpisodicBleSettings(BleSettings):
    """Spot-check devices: connect when they advertise, collect, disconnect when quiet."""

    expected_interval_s: float = Field(default=_EPISODIC_EXPECTED_S, gt=0)
    idle_s: float = Field(
        default=5.0, gt=0, le=120, description="disconnect after this long without a record"
    )
    user_id: int | None = Field(
        default=None,
        ge=0,
        le=254,
        description="multi-user cuffs/scales: this patient's user slot; records of other "
        "slots (and of the unknown user 0xFF) are ignored and counted",
    )
    rest_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="after a session, ignore the device's adverts this long (it keeps "
        "advertising for a while and would re-send the same records)",
    )


class ContinuousBleSettings(BleSettings):
    """Streaming devices: stay connected; keep one sample per ``interval_s``."""

    expected_interval_s: float = Field(default=_CONTINUOUS_EXPECTED_S, gt=0)
    interval_s: float = Field(
        default=60.0, gt=0, le=3600, description="keep at most one sample per interval"
    )
    stall_s: float = Field(
        default=30.0, gt=0, le=600, description="reconnect a stream silent this long"
    )


class BleBloodPressureSettings(EpisodicBleSettings):
    """A Blood Pressure Service (0x1810) cuff."""

    driver: Literal["ble-blood-pressure"] = "ble-blood-pressure"


class BleThermometerSettings(EpisodicBleSettings):
    """A Health Thermometer Service (0x1809) thermometer."""

    driver: Literal["ble-thermometer"] = "ble-thermometer"


class BleWeightScaleSettings(EpisodicBleSettings):
    """A Weight Scale Service (0x181D) scale."""

    driver: Literal["ble-weight-scale"] = "ble-weight-scale"


class BleGlucoseSettings(EpisodicBleSettings):
    """A Glucose Service (0x1808) meter read through RACP from a durable cursor."""

    driver: Literal["ble-glucose"] = "ble-glucose"


class BlePulseOximeterSettings(EpisodicBleSettings):
    """A Pulse Oximeter Service (0x1822) device, spot-check or continuous."""

    driver: Literal["ble-pulse-oximeter"] = "ble-pulse-oximeter"
    mode: Literal["spot", "continuous"] = Field(
        default="spot", description="spot: 0x2A5E records; continuous: 0x2A5F stream"
    )
    interval_s: float = Field(
        default=60.0, gt=0, le=3600, description="continuous mode: one sample per interval"
    )
    stall_s: float = Field(
        default=30.0, gt=0, le=600, description="reconnect a stream silent this long"
    )


class BleHeartRateSettings(ContinuousBleSettings):
    """A Heart Rate Service (0x180D) strap or monitor."""

    driver: Literal["ble-heart-rate"] = "ble-heart-rate"


AnyBleSettings = (
    BleBloodPressureSettings
    | BleThermometerSettings
    | BleWeightScaleSettings
    | BleGlucoseSettings
    | BlePulseOximeterSettings
    | BleHeartRateSettings
)
