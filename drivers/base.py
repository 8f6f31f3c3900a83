"""The driver seam: what the agent core needs from any device driver, and gives it.

A driver owns one device's session (connect, subscribe, read, reconnect) and emits
Readings. One driver failing never stops another or the publisher: each runs as its
own supervised task (agent/supervise.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from agent.clock import Clock
    from agent.readings import DeviceIdentity, PatientBinding, Reading


class DeviceState(StrEnum):
    """Availability as an operations engineer sees it on the device status topic."""

    CONNECTED = "connected"  # a session is open
    SEEN = "seen"  # advertising / port present, no session (normal between spot checks)
    NOT_SEEN = "not_seen"  # silent for longer than the device's expected interval
    DISCONNECTED = "disconnected"  # session lost; reconnecting
    ERROR = "error"  # needs a person; ``reason`` says what to do


@dataclass(frozen=True, slots=True)
class CaptureResult:
    """What one capture call did. ``stored`` + ``duplicates`` == readings offered."""

    stored: int
    duplicates: int


class ReadingSink(Protocol):
    """Where readings go. The outbox implements it.

    ``capture`` returns only after the readings are COMMITted (durable). A driver
    acknowledges nothing to a device (RACP cursor, "synced up to N") before it returns.
    Raises OutboxError when the readings could not be stored.
    """

    async def capture(self, readings: Sequence[Reading]) -> CaptureResult:
        """Store readings durably; re-sent device records count as duplicates."""
        ...


class DeviceReporter(Protocol):
    """What a driver tells the hub's health/status about its device (no values, no PII)."""

    def set_state(self, state: DeviceState, reason: str | None = None) -> None:
        """Availability changed; ``reason`` is actionable text for ERROR."""
        ...

    def set_identity(self, identity: DeviceIdentity) -> None:
        """What the device says of itself (Device Information, serial, firmware)."""
        ...

    def set_battery(self, percent: int) -> None:
        """Battery level in percent."""
        ...

    def set_signal(self, rssi_dbm: int) -> None:
        """Last received signal strength (BLE)."""
        ...

    def set_clock_offset(self, offset_s: float) -> None:
        """Measured device clock minus hub clock, in seconds."""
        ...

    def count(self, counter: str, n: int = 1) -> None:
        """Bump a named counter, e.g. ``decode_errors``, ``frames_skipped``, ``ignored_adverts``."""
        ...


class DeviceSettings(BaseModel):
    """Fields every device entry in the config has. Drivers subclass this.

    A subclass adds ``driver: Literal["<name>"]`` and its own settings.
    """

    # allow_inf_nan: "1e999" in YAML must not become an infinite interval.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="stable device id")
    expected_interval_s: float = Field(
        default=86_400.0,
        gt=0,
        description="silence longer than this reports the device as not_seen",
    )


@dataclass(frozen=True, slots=True)
class DriverContext:
    """Everything a driver gets from the core. Built by agent/app.py, the composition root."""

    sink: ReadingSink
    clock: Clock
    reporter: DeviceReporter
    patient: PatientBinding
    timezone_name: str
    # Where a driver keeps durable state of its own (e.g. a glucose meter's record
    # cursor): the outbox's directory, the unit's StateDirectory in production.
    state_dir: Path | None = None


class Driver(Protocol):
    """One device's session.

    The constructor stores its arguments and does no I/O.
    """

    name: str

    async def run(self) -> None:
        """Connect, read and emit readings until cancelled or the session fails.

        Raises TransientDeviceError (retried with backoff) or PermanentDeviceError
        (retried at the maximum backoff, reported as ERROR). Anything else is a bug and
        propagates.
        """
        ...

    async def close(self) -> None:
        """Release the device (port, connection). Safe to call twice."""
        ...
