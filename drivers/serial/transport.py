"""A pyserial port driven by the event loop: no polling loop, no threads of our own.

The port is opened (blocking, so via ``asyncio.to_thread``) non-blocking and exclusive,
with all flow control off: XON/XOFF would swallow 0x11/0x13, which are data in every
binary oximeter protocol (serial-protocols.md §7.1).

Reading is paced so that a streaming device costs a few wake-ups a second, not one per
USB packet (a Contec sends 60 packets a second; waking for each was most of the agent's
idle CPU). A silent port is watched with ``loop.add_reader``: no timer, no wake-up
until the kernel has bytes. The first bytes are read at once; while bytes keep coming,
the port is read every ``read_period_s`` on a grid of the loop clock shared by every
port, so two streaming ports are read in the same wake-up; a read that finds nothing
hands the port back to ``add_reader``. The kernel buffers far more than a period's
worth of bytes (a pty or USB-serial tty holds kilobytes; a 115,200-baud line fills
2.9 KB in 0.25 s at most), and each read takes everything buffered.

Errors are translated here, once, into our hierarchy with advice a technician can act
on: a missing port or an unplug is transient (the cable may come back), a permission
problem is permanent until someone changes the groups.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
from typing import TYPE_CHECKING, Final

import serial

from agent.errors import PermanentDeviceError, TransientDeviceError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from drivers.serial.protocols import LinkSettings

_LOG = logging.getLogger(__name__)
READ_CHUNK_BYTES: Final = 16384
# Longest wait between reads of a streaming port: it adds at most this to a reading's
# latency (readings close once per interval, 1 s by default) and bounds the wake-ups
# of a stream to about four a second.
READ_PERIOD_S: Final = 0.25
PORT_POLL_S: Final = 0.5
_AGAIN: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class PortMissingError(TransientDeviceError):
    """The configured port path does not exist (unplugged, or not plugged in yet)."""


def missing_reason(port: Path) -> str:
    """Actionable status text for a port that is not there."""
    return f"port {port} missing: check the USB cable and that the oximeter is switched on"


def _translate_open_error(port: Path, exc: OSError) -> Exception:
    code = exc.errno
    if code in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
        return PortMissingError(missing_reason(port))
    if code in (errno.EACCES, errno.EPERM):
        return PermanentDeviceError(
            f"permission denied on {port}: add the wardlink user to the dialout group"
        )
    if code in (errno.EWOULDBLOCK, errno.EBUSY):
        return TransientDeviceError(
            f"port {port} is in use by another program (ModemManager, a terminal?): stop it"
        )
    return TransientDeviceError(f"cannot open {port}: {exc.strerror or exc}")


class SerialTransport:
    """One open serial port feeding bytes to ``on_data`` until it is lost or closed.

    ``on_lost`` is called once, from the loop, with the error that ended the session
    (an unplug reads as EIO/ENXIO or end-of-file on a tty).
    """

    def __init__(
        self,
        port: Path,
        link: LinkSettings,
        *,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[TransientDeviceError], None],
        baudrate: int | None = None,
        read_period_s: float = READ_PERIOD_S,
    ) -> None:
        """Store the arguments; no I/O.

        ``read_period_s`` is the pace of reads while bytes keep coming (module docstring).
        """
        if read_period_s <= 0:
            raise ValueError(f"read_period_s must be > 0, got {read_period_s}")
        self._port = port
        self._link = link
        self._baudrate = baudrate or link.baudrate
        self._on_data = on_data
        self._on_lost = on_lost
        self._read_period_s = read_period_s
        self._serial: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_read: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        """Whether the port is open and being read."""
        return self._serial is not None

    async def open(self) -> None:
        """Open the port and start reading; raises a DeviceError subclass on failure."""
        try:
            port = await asyncio.to_thread(self._open_blocking)
        except serial.SerialException as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            raise _translate_open_error(self._port, OSError(code, str(exc))) from exc
        except OSError as exc:
            raise _translate_open_error(self._port, exc) from exc
        self._serial = port
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(port.fileno(), self._readable)
        _LOG.debug("opened %s at %d baud", self._port, self._baudrate)

    def _open_blocking(self) -> serial.Serial:
        return serial.Serial(
            port=str(self._port),
            baudrate=self._baudrate,
            bytesize=self._link.bytesize,
            parity=self._link.parity,
            stopbits=self._link.stopbits,
            timeout=0,  # non-blocking reads; readiness comes from the loop
            write_timeout=0,
            xonxoff=False,
            rtscts=False,
            dsrdtr=False,
            exclusive=True,
        )

    def _readable(self) -> None:
        """The kernel has bytes after a silence (or the line hung up): read them now."""
        port, loop = self._serial, self._loop
        if port is None or loop is None:
            return
        loop.remove_reader(port.fileno())
        self._read(woken_by_kernel=True)

    def _read_tick(self) -> None:
        self._next_read = None
        self._read(woken_by_kernel=False)

    def _read(self, *, woken_by_kernel: bool) -> None:
        """Read what is buffered; read again on the next grid tick, or wait for bytes."""
        port, loop = self._serial, self._loop
        if port is None or loop is None:
            return
        try:
            # One read takes it all: a period's bytes are far fewer than READ_CHUNK_BYTES.
            data = os.read(port.fileno(), READ_CHUNK_BYTES)
        except OSError as exc:
            if exc.errno not in _AGAIN:
                self._lose(f"port {self._port} lost ({exc.strerror}): check the USB cable")
                return
            data = b""
        if data:
            period = self._read_period_s
            tick = (math.floor(loop.time() / period) + 1) * period
            self._next_read = loop.call_at(tick, self._read_tick)
            self._on_data(data)
        elif woken_by_kernel:
            # Readable yet empty: end-of-file, a hung-up tty. (pyserial's timeout=0 sets
            # VMIN=0, so a read on a quiet port also returns b"": only a tick sees that.)
            self._lose(f"port {self._port} closed by the device: check the USB cable")
        else:
            loop.add_reader(port.fileno(), self._readable)

    def _lose(self, reason: str) -> None:
        self._shutdown()
        self._on_lost(TransientDeviceError(reason))

    def write(self, data: bytes) -> bool:
        """Send a command without blocking; False if the port could not take it now.

        Commands are a few bytes and the kernel buffers kilobytes, so a full buffer means
        the device is not draining it: the command is dropped and re-sent on schedule.
        """
        port = self._serial
        if port is None:
            return False
        try:
            written = os.write(port.fileno(), data)
        except OSError as exc:
            if exc.errno in _AGAIN:
                return False
            self._lose(f"port {self._port} lost on write ({exc.strerror}): check the USB cable")
            return False
        return written == len(data)

    def _shutdown(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._next_read is not None:
            self._next_read.cancel()
            self._next_read = None
        if self._loop is not None:
            self._loop.remove_reader(port.fileno())
        try:
            port.close()
        except (OSError, serial.SerialException) as exc:
            # Closing a port whose device is gone can fail; it is closed either way.
            _LOG.debug("closing %s: %s", self._port, exc)

    async def close(self) -> None:
        """Stop reading and close the port. Safe to call twice."""
        self._shutdown()


async def wait_for_port(port: Path, timeout_s: float, poll_s: float = PORT_POLL_S) -> bool:
    """Wait up to ``timeout_s`` for ``port`` to exist; True if it does.

    A cheap ``stat`` every ``poll_s`` (0.5 s): udev re-creates /dev/serial/by-id links a
    few hundred ms after a replug, and inotify on /dev would add a dependency for no gain.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if port.exists():  # noqa: ASYNC240 - one stat on /dev, microseconds
            return True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(poll_s, remaining))
