"""The BLE health-profile driver: episodic and continuous sessions over a ``GattLink``.

Devices: any SIG-profile BP cuff (0x1810), thermometer (0x1809), weight scale (0x181D),
glucose meter (0x1808), pulse oximeter (0x1822, spot or continuous) or heart-rate
monitor (0x180D). Protocol: ble-profiles.md; security and binding: reliability.md §4.

Episodic devices (spot checks) advertise when the patient has measured. The driver then
connects, checks identity (Device Information serial), reads battery and the device
clock, subscribes, captures every stored and new record, and disconnects once the device
has been quiet for ``idle_s``. BP cuffs re-send their whole memory on every connection:
the outbox dedupes those by natural key. Glucose meters are asked, through RACP, only for
records after a cursor that advances after the COMMIT.

Continuous devices stay connected; a 1 Hz stream is thinned to one sample per
``interval_s``. A dropped link raises TransientDeviceError; the supervisor reconnects
with jittered backoff (agent/supervise.py).

Quirks: cuffs keep advertising for a while after a session and would re-send the same
records in a loop, so adverts are ignored for ``rest_s`` after each session.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agent.errors import DecodeError, DeviceError, PermanentDeviceError, TransientDeviceError
from drivers._ble import ADVICE_PROFILE, ADVICE_RANGE
from drivers._codecs.registry import decode
from drivers.base import DeviceState
from drivers.ble.glucose import GlucoseTransfer
from drivers.ble.session import (
    BoundDevice,
    DeviceClock,
    GlucoseCursor,
    check_device_clock,
    raise_if_cancelled,
    read_battery,
    read_identity,
)
from drivers.ble.settings import BleGlucoseSettings, BlePulseOximeterSettings, BleSettings

if TYPE_CHECKING:
    from agent.clock import HubTime
    from agent.readings import DeviceIdentity, Reading
    from drivers._ble import (
        AdapterObserver,
        Advertisement,
        GattLink,
        LinkFactory,
        NotifyCallback,
        Scanner,
        ScannerFactory,
    )
    from drivers.base import DriverContext

log = logging.getLogger(__name__)

DRIVER_VERSION: Final = "ble/0.1.0"


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """What one driver name subscribes to, and how its session ends."""

    service_uuid: int
    measurement_uuids: tuple[int, ...]
    continuous: bool


PLANS: Final[dict[str, SessionPlan]] = {
    "ble-blood-pressure": SessionPlan(0x1810, (0x2A35,), continuous=False),
    "ble-thermometer": SessionPlan(0x1809, (0x2A1C,), continuous=False),
    "ble-weight-scale": SessionPlan(0x181D, (0x2A9D,), continuous=False),
    "ble-glucose": SessionPlan(0x1808, (0x2A18, 0x2A34), continuous=False),
    "ble-pulse-oximeter": SessionPlan(0x1822, (0x2A5E,), continuous=False),
    "ble-pulse-oximeter-continuous": SessionPlan(0x1822, (0x2A5F,), continuous=True),
    "ble-heart-rate": SessionPlan(0x180D, (0x2A37,), continuous=True),
}


@dataclass(frozen=True, slots=True)
class Notification:
    """One value from the device, stamped with hub time the moment it arrived."""

    uuid16: int
    data: bytes
    received: HubTime


@dataclass(frozen=True, slots=True)
class Connected:
    """What a session knows once identity and clock are read."""

    identity: DeviceIdentity
    clock: DeviceClock


def plan_for(settings: BleSettings) -> SessionPlan:
    """The session plan for a settings model (pulse oximeters choose by ``mode``)."""
    name = getattr(settings, "driver", "")
    if isinstance(settings, BlePulseOximeterSettings) and settings.mode == "continuous":
        name = "ble-pulse-oximeter-continuous"
    return PLANS[name]


class BleDriver:
    """One bound BLE device. The constructor stores its arguments and does no I/O."""

    def __init__(
        self,
        settings: BleSettings,
        ctx: DriverContext,
        *,
        link_factory: LinkFactory,
        scanner_factory: ScannerFactory,
        state_dir: Path,
    ) -> None:
        """Store collaborators; ``state_dir`` holds the glucose cursor file."""
        self.name = f"driver:{settings.id}"
        self._settings = settings
        self._ctx = ctx
        self._plan = plan_for(settings)
        self._link_factory = link_factory
        self._scanner_factory = scanner_factory
        self._cursor = GlucoseCursor(state_dir / f"ble-{settings.id}.cursor.json")
        self._bound = BoundDevice(
            settings.id, getattr(settings, "driver", ""), settings.address, settings.serial_number
        )
        self._advertised = asyncio.Event()
        self._in_session = False
        self._seen = False
        self._rest_until_ns = 0
        # Kept across reconnects: a stream back after a short drop is still thinned to
        # one sample per interval (the supervisor re-runs this same driver object).
        self._last_kept_ns: int | None = None
        self._link: GattLink | None = None

    # --- advertisements -------------------------------------------------------------

    def _on_advert(self, advert: Advertisement) -> None:
        if advert.address != self._settings.address:
            # Every other device's advert is ignored and counted (one dict increment: a
            # busy street sends hundreds a second, so never a log line per advert).
            self._ctx.reporter.count("ignored_adverts")
            return
        if advert.rssi_dbm is not None:
            self._ctx.reporter.set_signal(advert.rssi_dbm)
        if self._in_session:
            return
        if not self._seen:
            self._seen = True
            self._ctx.reporter.set_state(DeviceState.SEEN)
        if self._ctx.clock.now().monotonic_ns >= self._rest_until_ns:
            self._advertised.set()

    async def run(self) -> None:
        """Serve the device until cancelled; raises DeviceError for the supervisor."""
        scanner = self._scanner_factory()
        await scanner.start(self._on_advert)
        try:
            while True:
                raise_if_cancelled()
                self._advertised.clear()
                await self._advertised.wait()
                await self._session()
        finally:
            await _stop_scan(scanner)

    async def close(self) -> None:
        """Release the link if a session is open. Safe twice."""
        link, self._link = self._link, None
        if link is not None:
            await _release(link)

    # --- one connection --------------------------------------------------------------

    async def _session(self) -> None:
        link = self._link_factory()
        self._link, self._in_session = link, True
        queue: asyncio.Queue[Notification | None] = asyncio.Queue()
        link.set_disconnect_callback(lambda: queue.put_nowait(None))
        errored = False
        try:
            await link.connect(self._settings.address, self._settings.connect_timeout_s)
            self._ctx.reporter.set_state(DeviceState.CONNECTED)
            log.info("device %s connected", self._settings.id)
            if self._settings.pair:
                await link.pair()
            connected = await self._prepare(link)
            await self._subscribe(link, queue)
            await self._converse(link, queue, connected)
        except PermanentDeviceError:
            errored = True
            raise
        finally:
            self._link, self._in_session, self._seen = None, False, False
            link.set_disconnect_callback(None)
            await _release(link)
            self._rest_until_ns = self._ctx.clock.now().monotonic_ns + self._rest_ns()
            if not errored:
                self._ctx.reporter.set_state(DeviceState.DISCONNECTED)
            log.info("device %s session ended", self._settings.id)

    def _rest_ns(self) -> int:
        """How long to ignore the device's adverts after a session.

        Only episodic devices rest (a cuff would re-send its memory in a loop); a stream
        that dropped must come back as soon as the supervisor's backoff allows.
        """
        if self._plan.continuous:
            return 0
        return int(getattr(self._settings, "rest_s", 0.0) * 1e9)

    async def _prepare(self, link: GattLink) -> Connected:
        identity = await read_identity(link, self._bound, self._ctx.reporter)
        await read_battery(link, self._ctx.reporter)
        clock = await check_device_clock(
            link, self._ctx.reporter, self._ctx.clock.now(), self._ctx.timezone_name
        )
        return Connected(identity, clock)

    async def _subscribe(self, link: GattLink, queue: asyncio.Queue[Notification | None]) -> None:
        present = [u for u in self._plan.measurement_uuids if link.has_characteristic(f"{u:04X}")]
        if not present:
            raise PermanentDeviceError(f"no measurement characteristic; {ADVICE_PROFILE}")
        for uuid in present:
            await link.start_notify(f"{uuid:04X}", self._enqueue(uuid, queue))

    def _enqueue(self, uuid: int, queue: asyncio.Queue[Notification | None]) -> NotifyCallback:
        def handler(data: bytes) -> None:
            queue.put_nowait(Notification(uuid, data, self._ctx.clock.now()))

        return handler

    async def _converse(
        self, link: GattLink, queue: asyncio.Queue[Notification | None], connected: Connected
    ) -> None:
        if self._plan.continuous:
            await self._stream(queue, connected)
        elif isinstance(self._settings, BleGlucoseSettings):
            transfer = GlucoseTransfer(
                link,
                queue,
                self._cursor,
                self._ctx,
                connected.identity,
                connected.clock,
                self._settings.idle_s,
                DRIVER_VERSION,
            )
            await transfer.run()
        else:
            await self._collect(queue, connected)

    async def _collect(
        self, queue: asyncio.Queue[Notification | None], connected: Connected
    ) -> None:
        idle_s = getattr(self._settings, "idle_s", 5.0)
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    item = await queue.get()
            except TimeoutError:
                raise_if_cancelled()
                return  # quiet: everything stored has been sent
            if item is None:
                return  # the device hung up (cuffs do, after sending)
            readings = self._to_readings(item, connected)
            if readings:
                await self._ctx.sink.capture(readings)

    async def _stream(
        self, queue: asyncio.Queue[Notification | None], connected: Connected
    ) -> None:
        interval_ns = int(getattr(self._settings, "interval_s", 60.0) * 1e9)
        stall_s = getattr(self._settings, "stall_s", 30.0)
        while True:
            try:
                async with asyncio.timeout(stall_s):
                    item = await queue.get()
            except TimeoutError:
                raise_if_cancelled()
                # Connected but silent: a sensor off the finger/chest or a hung stack.
                # Reconnecting is the only cure either way.
                raise TransientDeviceError(
                    f"stream silent for {stall_s:g} s; check the sensor is worn"
                ) from None
            if item is None:
                raise TransientDeviceError(f"link lost during a stream; {ADVICE_RANGE}")
            readings = self._to_readings(item, connected)
            if not readings:
                continue
            now_ns = item.received.monotonic_ns
            last_ns = self._last_kept_ns
            if last_ns is not None and now_ns - last_ns < interval_ns:
                self._ctx.reporter.count("samples_thinned")
                continue
            self._last_kept_ns = now_ns
            await self._ctx.sink.capture(readings)

    def _to_readings(self, item: Notification, connected: Connected) -> list[Reading]:
        readings = to_readings(item, connected.identity, connected.clock, self._ctx)
        user_id = getattr(self._settings, "user_id", None)
        if user_id is None:
            return readings
        # A multi-user cuff or scale: only this patient's slot (reliability.md §4.4 item 4).
        # Records without a user field come from a device that has no slots: kept.
        kept = [r for r in readings if r.extra.get("user_id", str(user_id)) == str(user_id)]
        if len(kept) < len(readings):
            self._ctx.reporter.count("other_user_records", len(readings) - len(kept))
        return kept


def to_readings(
    item: Notification,
    identity: DeviceIdentity,
    clock: DeviceClock,
    ctx: DriverContext,
    decoded: object | None = None,
) -> list[Reading]:
    """Decode one value and map it to Readings; a malformed one is counted and skipped."""
    from drivers.ble.mapping import measurement_to_readings  # noqa: PLC0415

    try:
        value = decode(item.uuid16, item.data) if decoded is None else decoded
    except DecodeError as exc:
        ctx.reporter.count("decode_errors")
        log.warning(
            "device %s: malformed 0x%04X skipped: %s", identity.device_id, item.uuid16, exc.field
        )
        log.debug("device %s: malformed value %s: %s", identity.device_id, item.data.hex(), exc)
        return []
    return measurement_to_readings(
        item.uuid16,
        value,
        device=identity,
        patient=ctx.patient,
        received=item.received,
        driver_version=DRIVER_VERSION,
        timezone_name=ctx.timezone_name,
        device_clock_offset_s=clock.offset_s,
        device_clock_unset=clock.unset,
        session_status=clock.reading_status(),
    )


async def _stop_scan(scanner: Scanner) -> None:
    """Stop scanning; a failure must not replace the error or cancellation that ended run().

    It fails when the adapter is gone or bluetoothd restarted (the adapter ladder's
    business, drivers/ble/adapter.py); the scan is over either way.
    """
    try:
        await scanner.stop()
    except DeviceError as exc:
        log.info("scan stop failed (the adapter's scan is gone): %s", exc)


async def _release(link: GattLink) -> None:
    """Always disconnect: a leaked connection holds one of the adapter's few slots."""
    try:
        await link.disconnect()
    except DeviceError as exc:
        log.debug("disconnect failed (link already gone): %s", exc)


def default_state_dir() -> Path:
    """Systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``), else /var/lib/wardlink."""
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/wardlink").split(":")[0])


def build(
    settings: BleSettings,
    ctx: DriverContext,
    *,
    link_factory: LinkFactory | None = None,
    scanner_factory: ScannerFactory | None = None,
    state_dir: Path | None = None,
    adapter: AdapterObserver | None = None,
) -> BleDriver:
    """Build a BLE driver (no I/O). Production uses bleak; tests and the demo inject bumble.

    The registry calls ``build(settings, ctx)``; the demo and tests pass
    ``functools.partial(build, link_factory=world.link_factory,
    scanner_factory=world.scanner_factory)``. ``adapter`` (the recovery ladder, see
    drivers/ble/adapter.py) is told of adapter-level errors by the bleak link and scanner.
    """
    if link_factory is None or scanner_factory is None:
        from drivers._ble import BleakAdvertScanner, BleakLink  # noqa: PLC0415

        link_factory = link_factory or functools.partial(BleakLink, observer=adapter)
        scanner_factory = scanner_factory or functools.partial(BleakAdvertScanner, observer=adapter)
    return BleDriver(
        settings,
        ctx,
        link_factory=link_factory,
        scanner_factory=scanner_factory,
        state_dir=state_dir or ctx.state_dir or default_state_dir(),
    )
