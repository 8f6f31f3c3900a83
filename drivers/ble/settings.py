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

from typing import Final, Literal, Self

from pydantic import Field, model_validator

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


class _SpotFields(BleSettings):
    """How an episodic session ends and what it keeps (spot-check devices)."""

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


class _StreamFields(BleSettings):
    """How a stream is thinned and when a silent one is reconnected."""

    interval_s: float = Field(
        default=60.0, gt=0, le=3600, description="keep at most one sample per interval"
    )
    stall_s: float = Field(
        default=30.0, gt=0, le=600, description="reconnect a stream silent this long"
    )


class EpisodicBleSettings(_SpotFields):
    """Spot-check devices: connect when they advertise, collect, disconnect when quiet."""

    expected_interval_s: float = Field(default=_EPISODIC_EXPECTED_S, gt=0)


class ContinuousBleSettings(_StreamFields):
    """Streaming devices: stay connected; keep one sample per ``interval_s``."""

    expected_interval_s: float = Field(default=_CONTINUOUS_EXPECTED_S, gt=0)


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


_SPOT_ONLY: Final = frozenset(_SpotFields.model_fields) - frozenset(BleSettings.model_fields)
_STREAM_ONLY: Final = frozenset(_StreamFields.model_fields) - frozenset(BleSettings.model_fields)


class BlePulseOximeterSettings(_SpotFields, _StreamFields):
    """A Pulse Oximeter Service (0x1822) device, spot-check or continuous.

    ``mode: continuous`` is set up like a heart-rate strap (stream defaults: not seen
    after 60 s of silence, no rest between sessions, reconnect with jittered backoff);
    ``mode: spot`` like a cuff. A key of the other mode is refused rather than ignored.
    """

    driver: Literal["ble-pulse-oximeter"] = "ble-pulse-oximeter"
    mode: Literal["spot", "continuous"] = Field(
        default="spot", description="spot: 0x2A5E records; continuous: 0x2A5F stream"
    )
    expected_interval_s: float = Field(
        default=_EPISODIC_EXPECTED_S,
        gt=0,
        description="default 36 h for mode: spot, 60 s for mode: continuous",
    )

    @model_validator(mode="before")
    @classmethod
    def _stream_default_interval(cls, data: object) -> object:
        # A stream silent for a minute is news; a spot-check device silent for a day is not.
        if isinstance(data, dict) and data.get("mode") == "continuous":
            return {"expected_interval_s": _CONTINUOUS_EXPECTED_S} | data
        return data

    @model_validator(mode="after")
    def _keys_of_this_mode_only(self) -> Self:
        wrong = _SPOT_ONLY if self.mode == "continuous" else _STREAM_ONLY
        given = sorted(wrong & self.model_fields_set)
        if given:
            msg = f"{', '.join(given)} not used with mode: {self.mode}"
            raise ValueError(msg)
        return self


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
