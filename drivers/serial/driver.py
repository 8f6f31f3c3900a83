"""The serial oximeter session: open, configure, read, aggregate, capture, reconnect.

Devices: Nonin (OEM III, 9560, 3150, Xpod, printer-output models), Contec CMS50D+/E/F
and CMS60C, Masimo Rad-8/Radical-7/Rad-97 (protocols/ has each one's sources and quirks).

Unplug handling (docs/serial.md): the samples already decoded in the open interval
are captured as one reading flagged ``interval_truncated``; a partial frame is dropped.
The port is reopened by its configured path if it comes back within
``reopen_wait_s`` (5 s); otherwise ``TransientDeviceError`` goes to the supervisor,
which restarts the driver with backoff. Init commands are re-sent on every open.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from agent import __version__
from agent.clock import device_clock_offset_s
from agent.errors import OutboxError, PermanentDeviceError, TransientDeviceError
from agent.readings import Cadence, DeviceIdentity, Kind, Quantity, Reading, make_reading
from drivers.base import DeviceState
from drivers.serial.aggregate import Interval, IntervalAggregator
from drivers.serial.protocols import PROTOCOLS, DecoderStats, Sample
from drivers.serial.transport import (
    PORT_POLL_S,
    READ_PERIOD_S,
    PortMissingError,
    SerialTransport,
    missing_reason,
    wait_for_port,
)

if TYPE_CHECKING:
    from drivers.base import DriverContext
    from drivers.serial.settings import SerialOximeterSettings

_LOG = logging.getLogger(__name__)
DRIVER_VERSION: Final = f"wardlink-serial-oximeter/{__version__}"
# Contec V7 stops streaming when it loses the host; if no byte arrives for this long,
# the init commands (start real-time data) are sent again (serial-protocols.md §2.2).
RESEND_INIT_AFTER_S: Final = 10.0
# A session shorter than this counts as a rapid loss; this many in a row go to the
# supervisor's backoff instead of reopening at once (a port that opens then fails at
# once, e.g. a flaky adapter, must not become a hot loop).
MIN_SESSION_S: Final = 1.0
MAX_RAPID_LOSSES: Final = 3
# At shutdown the open interval is captured if the outbox answers within this.
STOP_FLUSH_TIMEOUT_S: Final = 2.0


class SerialOximeterDriver:
    """One serial oximeter. The constructor stores its arguments and does no I/O."""

    def __init__(self, settings: SerialOximeterSettings, ctx: DriverContext) -> None:
        """Bind the settings to the protocol's decoder and an interval aggregator."""
        self.name = f"serial-oximeter:{settings.id}"
        self._settings = settings
        self._ctx = ctx
        self._spec = PROTOCOLS[settings.protocol]
        self._decoder = self._spec.make_decoder()
        self._aggregator = IntervalAggregator(settings.interval_s)
        self._reported = DecoderStats()
        self._pending: list[Interval] = []
        self._wakeup = asyncio.Event()
        self._lost: TransientDeviceError | None = None
        self._fatal: PermanentDeviceError | None = None
        self._transport: SerialTransport | None = None
        self._next_keepalive_s = 0.0
        self._last_data_s = 0.0
        self._opened_at_s = 0.0
        self._rapid_losses = 0
        self._clock_noted = False
        self._identity = DeviceIdentity(
            device_id=settings.id,
            driver="serial-oximeter",
            address=str(settings.port),
            manufacturer=self._spec.manufacturer,
            serial_number=settings.serial_number,
        )

    async def run(self) -> None:
        """Read until cancelled; raises TransientDeviceError if the port stays away.

        The supervisor calls ``run`` again on the same driver after a failure, so every
        run starts from a clean session (a device swapped for the right one recovers).
        """
        self._fatal = None
        self._decoder.reset()
        try:
            await self._reopen(first=True)
            while True:
                lost = await self._pump()
                await self._handle_loss(lost)
        except asyncio.CancelledError:
            await self._flush_on_stop()
            raise
        finally:
            await self.close()

    async def _flush_on_stop(self) -> None:
        """On shutdown, store the open interval's samples rather than drop them."""
        self._pending.extend(self._aggregator.flush(truncated=True))
        count = len(self._pending)
        if not count or self._fatal is not None:
            return
        try:
            async with asyncio.timeout(STOP_FLUSH_TIMEOUT_S):
                await asyncio.shield(self._capture_pending())
        except (TimeoutError, OutboxError) as exc:
            # Shutting down with the outbox gone or stuck: say so, counted, never silent.
            _LOG.warning("%s: %d readings not stored at stop (%s)", self.name, count, exc)
            self._ctx.reporter.count("readings_lost_at_stop", count)

    async def close(self) -> None:
        """Close the port. Safe to call twice."""
        if self._transport is not None:
            await self._transport.close()

    # --- session -------------------------------------------------------------------

    async def _reopen(self, *, first: bool = False) -> None:
        """Open the configured path, waiting up to ``reopen_wait_s`` for it to appear."""
        port = self._settings.port
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.reopen_wait_s
        if first and not port.exists():
            # Reported at once: a technician may be plugging it in while on the phone.
            self._ctx.reporter.set_state(DeviceState.DISCONNECTED, missing_reason(port))
        while True:
            remaining = deadline - loop.time()
            if not await wait_for_port(port, max(remaining, 0.0)):
                self._ctx.reporter.set_state(DeviceState.DISCONNECTED, missing_reason(port))
                raise PortMissingError(missing_reason(port))
            try:
                await self._open()
            except PermanentDeviceError as exc:
                self._ctx.reporter.set_state(DeviceState.ERROR, str(exc))
                raise
            except TransientDeviceError as exc:
                if loop.time() >= deadline:
                    self._ctx.reporter.set_state(DeviceState.DISCONNECTED, str(exc))
                    raise
                await asyncio.sleep(PORT_POLL_S)
            else:
                return

    async def _open(self) -> None:
        self._lost = None
        transport = SerialTransport(
            self._settings.port,
            self._spec.link,
            on_data=self._on_data,
            on_lost=self._on_lost,
            baudrate=self._settings.baudrate,
            # Several reads per interval, so an interval's samples are its own.
            read_period_s=min(READ_PERIOD_S, self._settings.interval_s / 4),
        )
        await transport.open()
        self._transport = transport
        self._clock_noted = False  # the device may have been swapped or its clock set
        now = asyncio.get_running_loop().time()
        self._opened_at_s = now
        self._last_data_s = now
        self._next_keepalive_s = now + self._spec.keepalive_period_s
        self._send_init()
        self._ctx.reporter.set_state(DeviceState.CONNECTED)
        _LOG.info("%s: connected on %s (%s)", self.name, self._settings.port, self._spec.link)

    def _send_init(self) -> None:
        if self._transport is None:
            return
        for command in self._spec.init_commands:
            if not self._transport.write(command):
                self._ctx.reporter.count("commands_dropped")

    async def _pump(self) -> TransientDeviceError:
        """Capture intervals as they close and run the timers, until the port is lost."""
        loop = asyncio.get_running_loop()
        while True:
            timeout_s = max(self._next_timer_s() - loop.time(), 0.0)
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass  # a timer is due: handled below like any wake-up
            self._wakeup.clear()
            now = loop.time()
            self._pending.extend(self._aggregator.due(now))
            await self._capture_pending()
            if self._fatal is not None:
                self._ctx.reporter.set_state(DeviceState.ERROR, str(self._fatal))
                raise self._fatal
            if self._lost is not None:
                return self._lost
            self._run_timers(now)

    def _next_timer_s(self) -> float:
        timers = [self._last_data_s + RESEND_INIT_AFTER_S]
        if self._spec.keepalive_command is not None:
            timers.append(self._next_keepalive_s)
        deadline = self._aggregator.deadline_s
        if deadline is not None:
            timers.append(deadline)
        return min(timers)

    def _run_timers(self, now: float) -> None:
        command = self._spec.keepalive_command
        if command is not None and now >= self._next_keepalive_s and self._transport is not None:
            if not self._transport.write(command):
                self._ctx.reporter.count("commands_dropped")
            self._next_keepalive_s = now + self._spec.keepalive_period_s
        if now - self._last_data_s >= RESEND_INIT_AFTER_S:
            self._last_data_s = now  # once per silent period, never a hot loop
            if self._spec.init_commands and not self._spec.spot:
                _LOG.debug("%s: silent, re-sending init", self.name)
                self._ctx.reporter.count("stream_restarts")
                self._send_init()

    async def _handle_loss(self, lost: TransientDeviceError) -> None:
        self._pending.extend(self._aggregator.flush(truncated=True))
        await self._capture_pending()
        self._decoder.reset()
        self._ctx.reporter.set_state(DeviceState.DISCONNECTED, str(lost))
        _LOG.warning("%s: %s; waiting for the port to return", self.name, lost)
        session_s = asyncio.get_running_loop().time() - self._opened_at_s
        self._rapid_losses = self._rapid_losses + 1 if session_s < MIN_SESSION_S else 0
        if self._rapid_losses >= MAX_RAPID_LOSSES:
            raise TransientDeviceError(f"{lost} ({self._rapid_losses} times in a row)") from lost
        if self._rapid_losses:
            await asyncio.sleep(PORT_POLL_S)
        await self._reopen()

    # --- callbacks from the transport (run in the loop, never block) ------------------

    def _on_data(self, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self._last_data_s = now
        deadline = self._aggregator.deadline_s
        samples = self._decoder.feed(data)
        self._report_stats()
        for sample in samples:
            self._check_serial(sample)
            self._note_device_clock(sample)
            self._pending.extend(self._aggregator.add(sample, now))
        # A new interval's deadline re-arms the pump's timer, so the interval closes on
        # time (with every other device's) instead of when the next sample comes.
        if self._pending or self._fatal is not None or self._aggregator.deadline_s != deadline:
            self._wakeup.set()

    def _on_lost(self, error: TransientDeviceError) -> None:
        self._lost = error
        self._wakeup.set()

    def _report_stats(self) -> None:
        stats, done = self._decoder.stats, self._reported
        for counter, attr in (
            ("decode_errors", "bad_frames"),
            ("bytes_skipped", "bytes_skipped"),
            ("other_packets", "other_packets"),
        ):
            delta = getattr(stats, attr) - getattr(done, attr)
            if delta:
                self._ctx.reporter.count(counter, delta)
                setattr(done, attr, getattr(stats, attr))

    def _note_device_clock(self, sample: Sample) -> None:
        """Once per session, a live stream's own timestamp gives the device-vs-hub offset.

        Only from a synchronised hub (otherwise the hub is the wrong clock) and a
        plausible device time (an unset clock reads as 2000 and is counted instead).
        Stored spot records are not live, so they say nothing about the offset.
        """
        if self._clock_noted or sample.device_time is None or sample.spot:
            return
        self._clock_noted = True
        now = self._ctx.clock.now()
        if not now.clock_synced:
            return
        offset_s = device_clock_offset_s(sample.device_time, now, self._ctx.timezone_name)
        if offset_s is None:
            self._ctx.reporter.count("device_clock_unset")
            return
        self._ctx.reporter.set_clock_offset(round(offset_s, 1))

    def _check_serial(self, sample: Sample) -> None:
        seen, expected = sample.serial_number, self._settings.serial_number
        if seen is None or self._fatal is not None:
            return
        if expected is not None and seen != expected:
            self._fatal = PermanentDeviceError(
                f"device on {self._settings.port} reports serial {seen}, config expects "
                f"{expected}: is the right oximeter plugged in?",
                log_text="serial mismatch; the device status says what to check",
            )
        elif self._identity.serial_number is None:
            self._identity = DeviceIdentity(
                device_id=self._identity.device_id,
                driver=self._identity.driver,
                address=self._identity.address,
                manufacturer=self._identity.manufacturer,
                serial_number=seen,
            )
            self._ctx.reporter.set_identity(self._identity)

    # --- readings ------------------------------------------------------------------

    async def _capture_pending(self) -> None:
        if self._fatal is not None:
            self._pending.clear()  # never file a wrong device's values under this patient
            return
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        await self._ctx.sink.capture([self._to_reading(interval) for interval in batch])

    def _to_reading(self, interval: Interval) -> Reading:
        sample = interval.sample
        values = [
            _quantity("spo2", sample.spo2, "%"),
            _quantity("pulse_rate", sample.pulse_rate, "/min"),
        ]
        if self._spec.has_perfusion_index:
            values.append(_quantity("perfusion_index", sample.perfusion_index, "%"))
        return make_reading(
            device=self._identity,
            patient=self._ctx.patient,
            kind=Kind.SPO2,
            cadence=Cadence.SPOT if sample.spot else Cadence.CONTINUOUS,
            values=tuple(values),
            received=self._ctx.clock.now(),
            driver_version=DRIVER_VERSION,
            device_time=sample.device_time if sample.spot else None,
            timezone_name=self._ctx.timezone_name,
            status=sample.status,
            extra={"protocol": self._spec.protocol_id, "samples": str(interval.sample_count)},
        )


def _quantity(name: str, value: float | None, unit: str) -> Quantity:
    if value is None:
        return Quantity(name=name, value=None, unit=unit, special="missing")
    return Quantity(name=name, value=float(value), unit=unit)


def build(settings: SerialOximeterSettings, ctx: DriverContext) -> SerialOximeterDriver:
    """The registry's factory (drivers/__init__.py): build the driver, no I/O."""
    return SerialOximeterDriver(settings, ctx)
