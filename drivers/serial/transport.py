"""A pyserial port driven by the event loop: no polling loop, no threads of our own.

The port is opened (blocking, so via ``asyncio.to_thread``) non-blocking and exclusive,
with all flow control off: XON/XOFF would swallow 0x11/0x13, which are data in every
binary oximeter protocol (serial-protocols.md §7.1). Reads happen in a
``loop.add_reader`` callback, which takes whatever the kernel has buffered.

Errors are translated here, once, into our hierarchy with advice a technician can act
on: a missing port or an unplug is transient (the cable may come back), a permission
problem is permanent until someone changes the groups.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import TYPE_CHECKING, Final

import serial

from agent.errors import PermanentDeviceError, TransientDeviceError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from drivers.serial.protocols import LinkSettings

_LOG = logging.getLogger(__name__)
READ_CHUNK_BYTES: Final = 4096
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
    ) -> None:
        """Store the arguments; no I/O."""
        self._port = port
        self._link = link
        self._baudrate = baudrate or link.baudrate
        self._on_data = on_data
        self._on_lost = on_lost
        self._serial: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        port = self._serial
        if port is None:
            return
        try:
            data = os.read(port.fileno(), READ_CHUNK_BYTES)
        except OSError as exc:
            if exc.errno in _AGAIN:
                return
            self._lose(f"port {self._port} lost ({exc.strerror}): check the USB cable")
            return
        if not data:  # a hung-up tty reads as end-of-file
            self._lose(f"port {self._port} closed by the device: check the USB cable")
            return
        self._on_data(data)

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
