"""Test-only driver settings models, registered into DRIVERS by the config tests.

They stand in for the real drivers so the bad-config corpus does not change when real
drivers are added or renamed; they use the same base class and shared MAC type.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers import DriverSpec
from drivers.base import DeviceSettings
from drivers.validators import MacAddress


class FakeSerialSettings(DeviceSettings):
    """A serial device: a port, a protocol and a sampling interval."""

    driver: Literal["test-serial-oximeter"]
    port: str = Field(min_length=1)
    protocol: Literal["contec-v7", "nonin-df7"] = "contec-v7"
    interval_s: float = Field(default=1.0, gt=0, le=60)


class FakeBleSettings(DeviceSettings):
    """A BLE device identified by its address."""

    driver: Literal["test-ble-cuff"]
    address: MacAddress
    pair: bool = False
    passkey: str | None = None  # a secret: redacted from the remote `config` view


def _never_built(*_args: object) -> None:
    raise AssertionError("config tests never build drivers")


FAKE_DRIVERS = {
    "test-ble-cuff": DriverSpec(
        settings_model=f"{__name__}:FakeBleSettings", factory=f"{__name__}:_never_built"
    ),
    "test-serial-oximeter": DriverSpec(
        settings_model=f"{__name__}:FakeSerialSettings", factory=f"{__name__}:_never_built"
    ),
}
