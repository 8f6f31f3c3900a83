"""Config model of a serial pulse oximeter (``driver: serial-oximeter``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivers.base import DeviceSettings
from drivers.serial.protocol_ids import ProtocolId

SPOT_EXPECTED_INTERVAL_S = 86_400.0


class SerialOximeterSettings(DeviceSettings):
    """One oximeter on a serial port.

    Example::

        - id: oximeter
          driver: serial-oximeter
          port: /dev/serial/by-id/usb-Silicon_Labs_CP2102_0001-if00-port0
          protocol: contec-v7
    """

    driver: Literal["serial-oximeter"]
    port: Path = Field(
        description="stable device path, e.g. /dev/serial/by-id/... (ttyUSB numbers change)"
    )
    protocol: ProtocolId = Field(description="the data format the device is set to send")
    interval_s: float = Field(
        default=1.0, gt=0, le=60, description="one reading per interval for streams"
    )
    baudrate: int | None = Field(
        default=None, gt=0, le=4_000_000, description="override the protocol's usual rate"
    )
    serial_number: str | None = Field(
        default=None, description="expected serial; a device reporting another is rejected"
    )
    expected_interval_s: float = Field(
        default=30.0, gt=0, description="silence longer than this reports not_seen"
    )
    reopen_wait_s: float = Field(
        default=5.0, ge=0, le=60, description="how long to wait for an unplugged port to return"
    )

    @model_validator(mode="before")
    @classmethod
    def _spot_devices_are_quiet(cls, data: object) -> object:
        # A DF13 spot-check oximeter is silent between measurements (often a day):
        # 30 s of silence is normal for it, not "not seen".
        if isinstance(data, dict) and data.get("protocol") == "nonin-df13":
            return {"expected_interval_s": SPOT_EXPECTED_INTERVAL_S} | data
        return data

    @field_validator("port")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            msg = f"port must be an absolute path such as /dev/serial/by-id/..., got {value}"
            raise ValueError(msg)
        return value
