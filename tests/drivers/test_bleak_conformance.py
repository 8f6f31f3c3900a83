"""Canary: the fake BleakClient and our calls into bleak match bleak's real signatures.

BleakLink is tested against tests/drivers/bleak_fake.py because BlueZ cannot run here.
If bleak renames a parameter or method we use, this fails instead of the fake drifting.
"""

from __future__ import annotations

import inspect
from typing import Any

import bleak
import bleak_retry_connector
import pytest
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.scanner import AdvertisementData
from bleak.backends.service import BleakGATTServiceCollection

from tests.drivers.bleak_fake import FakeBleakClient

METHODS = ["read_gatt_char", "write_gatt_char", "start_notify", "stop_notify", "disconnect", "pair"]


def positional_names(func: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


@pytest.mark.parametrize("name", METHODS)
def test_fake_methods_take_bleaks_positional_parameters(name: str) -> None:
    real = getattr(bleak.BleakClient, name)
    fake = getattr(FakeBleakClient, name)
    assert inspect.iscoroutinefunction(real)
    assert inspect.iscoroutinefunction(fake)
    assert positional_names(fake) == positional_names(real)


def test_write_keeps_the_response_keyword() -> None:
    assert "response" in inspect.signature(bleak.BleakClient.write_gatt_char).parameters


def test_is_connected_and_services_are_properties() -> None:
    assert isinstance(inspect.getattr_static(bleak.BleakClient, "is_connected"), property)
    assert isinstance(inspect.getattr_static(bleak.BleakClient, "services"), property)
    assert hasattr(BleakGATTServiceCollection, "get_characteristic")
    # BleakLink.can_write reads the characteristic's property names ("write", ...).
    assert isinstance(inspect.getattr_static(BleakGATTCharacteristic, "properties"), property)


def test_establish_connection_takes_what_connect_with_retry_passes() -> None:
    params = inspect.signature(bleak_retry_connector.establish_connection).parameters
    assert list(params)[:3] == ["client_class", "device", "name"]
    assert {"disconnected_callback", "max_attempts"} <= set(params)
    assert list(inspect.signature(bleak_retry_connector.get_device).parameters) == ["address"]


def test_scanner_api_used_by_the_production_scanner() -> None:
    assert "timeout" in inspect.signature(bleak.BleakScanner.find_device_by_address).parameters
    assert "detection_callback" in inspect.signature(bleak.BleakScanner.__init__).parameters
    assert inspect.iscoroutinefunction(bleak.BleakScanner.start)
    assert inspect.iscoroutinefunction(bleak.BleakScanner.stop)
    assert {"local_name", "rssi", "service_uuids"} <= set(AdvertisementData._fields)
