"""A fake at bleak's ``BleakClient`` API, for testing ``BleakLink`` without BlueZ.

Only what BleakLink calls is here, with bleak's own parameter names (checked against
bleak by tests/drivers/test_bleak_conformance.py so the fake cannot drift silently).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


class FakeCharacteristic:
    """Stands in for ``BleakGATTCharacteristic`` (its ``properties`` list of names)."""

    def __init__(self, properties: list[str]) -> None:
        self.properties = properties


class FakeServices:
    """Stands in for ``BleakGATTServiceCollection.get_characteristic``."""

    def __init__(self, uuids: set[str]) -> None:
        self.uuids = uuids
        self.writable: set[str] = set()

    def get_characteristic(self, specifier: int | str | uuid.UUID) -> FakeCharacteristic | None:
        if str(specifier) not in self.uuids:
            return None
        return FakeCharacteristic(
            ["read", "write"] if str(specifier) in self.writable else ["read"]
        )


class FakeBleakClient:
    """Serves ``values``; ``fail_with`` makes the next call raise; ``stall`` never answers."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.services = FakeServices(set(values))
        self.writes: list[tuple[str, bytes, bool | None]] = []
        self.callbacks: dict[str, Callable[[Any, bytearray], None]] = {}
        self.fail_with: BaseException | None = None
        self.stall = False
        self.connected = True
        self.disconnects = 0

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def _maybe_fail(self) -> None:
        if self.stall:
            await asyncio.Event().wait()
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    async def read_gatt_char(
        self, char_specifier: str, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        await self._maybe_fail()
        return bytearray(self.values[char_specifier])

    async def write_gatt_char(
        self, char_specifier: str, data: bytes, response: bool | None = None
    ) -> None:
        await self._maybe_fail()
        self.writes.append((char_specifier, bytes(data), response))

    async def start_notify(
        self, char_specifier: str, callback: Callable[[Any, bytearray], None], **kwargs: Any
    ) -> None:
        await self._maybe_fail()
        self.callbacks[char_specifier] = callback

    async def stop_notify(self, char_specifier: str) -> None:
        await self._maybe_fail()
        self.callbacks.pop(char_specifier, None)

    async def disconnect(self) -> None:
        self.disconnects += 1
        self.connected = False

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        await self._maybe_fail()
