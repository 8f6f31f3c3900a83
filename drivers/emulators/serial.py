"""Pty serial oximeters speaking the real protocols, with fault injection.

``PtySerialDevice`` opens a pseudo-terminal pair: the driver opens the slave path (or
a stable symlink to it, like /dev/serial/by-id/...), the emulator writes frames to the
master at the protocol's rate and answers commands:
- Nonin: the format-select command ``02 70 02 02 ZZ 03`` is answered with ACK ``06``.
- Contec V7: streams only after ``start real-time`` (A1), and stops, like the real unit,
  when no command (A1 or keep-alive AF) arrived for ``keepalive_timeout_s``.
Faults: garbage bytes, corrupted units, finger out, unplug (close the master, remove
the symlink) and replug (a new pty, symlink re-pointed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import random
import time
import tty
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from drivers.emulators.serial_frames import (
    STREAMS,
    StreamFormat,
    Vitals,
    corrupt,
    encode_df13,
    encode_masimo,
)

CONTEC_START: Final = 0xA1
CONTEC_KEEPALIVE: Final = 0xAF
CONTEC_STOP: Final = 0xA2
NONIN_ACK: Final = b"\x06"
TICK_S: Final = 0.02

if TYPE_CHECKING:
    from collections.abc import Callable


def _stream_format(
    protocol: str, spot_period_s: float, serial_number: str, now: Callable[[], datetime]
) -> StreamFormat:
    # DF13 and Masimo stamp the device clock into their units; the others are stateless.
    if protocol == "nonin-df13":
        return StreamFormat(
            lambda v, _i: encode_df13(v, now().replace(microsecond=0)),
            1.0 / spot_period_s,
            checksummed=True,
        )
    if protocol == "masimo-ascii":
        return StreamFormat(
            lambda v, _i: encode_masimo(v, now(), serial_number),
            1.0,
            checksummed=False,
            ascii_lines=True,
        )
    if protocol not in STREAMS:
        raise ValueError(f"unknown serial protocol {protocol!r}")
    return STREAMS[protocol]


class PtySerialDevice:
    """An emulated oximeter on a pty. Use inside a running asyncio loop.

    The emulated patient and the device clock (DF13, Masimo) run ``speed`` times faster
    than the wall clock, so a sped-up device also shows a sped-up hour of values.

    Attributes:
        units_sent: value-carrying units written intact (frames, packets or lines).
        units_corrupted: units written damaged on purpose.
        units_cut: half units written by ``send_partial_unit`` (or ``unplug(mid_unit=True)``).
        commands: every command byte string received from the host, in order.
        plug_count: how many times the device was (re)plugged.
        sent_log: with ``record=True``, (monotonic s, SpO2, pulse) of every intact unit
            ``run`` wrote: what a bench compares the stored readings with.
    """

    def __init__(
        self,
        protocol: str,
        *,
        link: Path | None = None,
        speed: float = 1.0,
        seed: int = 1,
        keepalive_timeout_s: float = 15.0,
        spot_period_s: float = 5.0,
        serial_number: str = "0000123456",
        record: bool = False,
        clock_offset_s: float = 0.0,
    ) -> None:
        """Choose the protocol; ``speed`` > 1 sends units faster than the real device.

        ``serial_number`` is what a Masimo prints in its ``SN=`` field;
        ``clock_offset_s`` how far the device's own clock (DF13, Masimo) is off.
        """
        self._clock_offset_s = clock_offset_s
        self.protocol = protocol
        self.link = link
        self._format = _stream_format(protocol, spot_period_s, serial_number, self.device_now)
        self._speed = speed
        self._epoch_s, self._started_s = time.time(), time.monotonic()
        self._unit_time_s = self._epoch_s  # the patient time of the unit being encoded
        self._rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        self._keepalive_timeout_s = keepalive_timeout_s
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._pending_garbage = b""
        self._corrupt_next = 0
        self._finger_out = False
        self._silent = False
        self._inbox = bytearray()
        self._last_command_s: float | None = None
        self._phase = 0
        self.units_sent = 0
        self.units_corrupted = 0
        self.units_cut = 0
        self.commands: list[bytes] = []
        self.plug_count = 0
        self._record = record
        self.sent_log: list[tuple[float, int | None, int | None]] = []

    # --- plugging ----------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The slave tty path the host opens (changes on replug)."""
        if self._slave_path is None:
            raise RuntimeError("device is unplugged")
        return self._slave_path

    @property
    def port(self) -> Path:
        """What a config should point at: the stable link if there is one, else the tty."""
        return self.link if self.link is not None else Path(self.path)

    @property
    def units_per_s(self) -> float:
        """The device's real unit rate (before ``speed``)."""
        return self._format.units_per_s

    @property
    def is_plugged(self) -> bool:
        """Whether the pty exists."""
        return self._master is not None

    def plug(self) -> None:
        """Create the pty (raw, so no line discipline touches the bytes) and the link."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_path = os.ttyname(slave)
        self._inbox.clear()
        self._last_command_s = None
        self.plug_count += 1
        if self.link is not None:
            temp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            temp.symlink_to(self._slave_path)
            temp.replace(self.link)  # atomic re-point, as udev does for by-id links
        asyncio.get_running_loop().add_reader(master, self._on_command_bytes)

    def unplug(self, *, mid_unit: bool = False) -> None:
        """Close the master (the host reads EIO) and remove the link, like a pulled cable.

        ``mid_unit``: the cable goes while a unit is on the wire; its first half is sent.
        """
        if mid_unit:
            self.send_partial_unit(head=True)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        master, slave = self._master, self._slave
        self._master = self._slave = self._slave_path = None
        if master is not None:
            asyncio.get_running_loop().remove_reader(master)
            os.close(master)
        if slave is not None:
            os.close(slave)

    def send_partial_unit(self, *, head: bool) -> None:
        """Write the first (``head``) or second half of a unit, as a cut cable leaves it.

        A device plugged in mid-stream starts with a second half. Counted in
        ``units_cut``, never in ``sent_log``.
        """
        unit = self._format.encode(self.vitals(self.patient_time_s()), self._phase)
        half = len(unit) // 2
        self._write(unit[:half] if head else unit[half:])
        self.units_cut += 1

    def replug(self) -> None:
        """Unplug if needed, then plug in again on a new pty."""
        if self.is_plugged:
            self.unplug()
        self.plug()

    # --- faults and patient ------------------------------------------------------------

    def inject_garbage(self, n_bytes: int) -> None:
        """Send ``n_bytes`` random bytes before the next unit."""
        self._pending_garbage += bytes(self._rng.randrange(256) for _ in range(n_bytes))

    def corrupt_next(self, n_units: int) -> None:
        """Damage the next ``n_units`` units (bad checksum, lost byte or non-ASCII byte)."""
        self._corrupt_next += n_units

    def set_finger_out(self, finger_out: bool) -> None:
        """Remove (True) or re-insert (False) the finger: missing values and sensor status."""
        self._finger_out = finger_out

    def patient_time_s(self, monotonic_s: float | None = None) -> float:
        """The emulated patient's (and device clock's) time: wall time, ``speed`` times faster."""
        at = time.monotonic() if monotonic_s is None else monotonic_s
        return self._epoch_s + (at - self._started_s) * self._speed

    def device_now(self) -> datetime:
        """The device clock (local, naive, as a device shows it) of the unit being encoded."""
        return datetime.fromtimestamp(self._unit_time_s + self._clock_offset_s)  # noqa: DTZ006 - device-local

    def vitals(self, t_s: float) -> Vitals:
        """Realistic values with slow drift: SpO2 94-99 %, pulse 60-90 /min."""
        spo2 = round(96.5 + 2.5 * math.sin(t_s / 97.0))
        pulse = round(75 + 15 * math.sin(t_s / 61.0 + 1.0))
        perfusion = round(3.0 + 1.5 * math.sin(t_s / 43.0), 2)
        return Vitals(spo2, pulse, perfusion, finger_out=self._finger_out)

    # --- streaming -----------------------------------------------------------------------

    def set_silent(self, silent: bool) -> None:
        """Stop (True) or resume (False) sending, as a device between measurements does."""
        self._silent = silent

    @property
    def is_streaming(self) -> bool:
        """Whether the device is sending now (a Contec V7 waits for its start command)."""
        if self._silent:
            return False
        if self.protocol != "contec-v7":
            return True
        last = self._last_command_s
        if last is not None and time.monotonic() - last >= self._keepalive_timeout_s:
            self._last_command_s = None  # host gone: stop until the next start command
        return self._last_command_s is not None

    def next_unit(self, t_s: float) -> bytes:
        """The next unit on the wire, with any injected fault applied (also used by benches)."""
        self._unit_time_s = t_s
        unit = self._format.encode(self.vitals(t_s), self._phase)
        self._phase += 1
        if self._corrupt_next:
            self._corrupt_next -= 1
            self.units_corrupted += 1
            unit = corrupt(self.protocol, unit)
        else:
            self.units_sent += 1
        unit, self._pending_garbage = self._pending_garbage + unit, b""
        return unit

    async def run(self) -> None:
        """Plug in (if not yet) and stream until cancelled. Survives unplug/replug."""
        if not self.is_plugged:
            self.plug()
        interval_s = 1.0 / (self._format.units_per_s * self._speed)
        start = time.monotonic()
        sent = 0
        while True:
            await asyncio.sleep(max(TICK_S, interval_s))
            due = int((time.monotonic() - start) / interval_s)
            if not self.is_plugged or not self.is_streaming:
                sent = due  # a silent device does not catch up later
                continue
            # Each unit carries the time it was due, also when a late tick catches up.
            chunk = b"".join(
                self._next_logged_unit(start + k * interval_s) for k in range(sent, due)
            )
            sent = due
            self._write(chunk)

    def _next_logged_unit(self, due_s: float) -> bytes:
        t_s = self.patient_time_s(due_s)
        intact_before = self.units_sent
        unit = self.next_unit(t_s)
        if self._record and self.units_sent > intact_before:
            v = self.vitals(t_s)
            if v.finger_out:
                self.sent_log.append((time.monotonic(), None, None))
            else:
                self.sent_log.append((time.monotonic(), v.spo2, v.pulse_rate))
        return unit

    def _write(self, data: bytes) -> None:
        if self._master is None or not data:
            return
        try:
            os.write(self._master, data)
        except BlockingIOError:
            # Nobody reads the port: the UART drops bytes, as a real one would.
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise

    def _on_command_bytes(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 1024)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):
                return
            raise
        self._inbox.extend(data)
        self._parse_commands()

    def _parse_commands(self) -> None:
        if self.protocol == "contec-v7":
            while True:
                start = self._inbox.find(0x7D)  # every V7 command starts with type 0x7D
                if start < 0:
                    self._inbox.clear()
                    return
                del self._inbox[:start]
                if len(self._inbox) < 9:  # noqa: PLR2004 - V7 command length
                    return
                command = bytes(self._inbox[:9])
                del self._inbox[:9]
                self._on_contec_command(command)
        if self.protocol.startswith("nonin-df"):
            while (end := self._inbox.find(0x03)) >= 0:
                command = bytes(self._inbox[: end + 1])
                del self._inbox[: end + 1]
                self.commands.append(command)
                if command.startswith(b"\x02\x70"):
                    self._write(NONIN_ACK)
            return
        self.commands.append(bytes(self._inbox))
        self._inbox.clear()

    def _on_contec_command(self, command: bytes) -> None:
        self.commands.append(command)
        code = command[2] & 0x7F | (command[1] & 1) << 7
        if code == CONTEC_START or (code == CONTEC_KEEPALIVE and self.is_streaming):
            self._last_command_s = time.monotonic()
        elif code == CONTEC_STOP:
            self._last_command_s = None

    def close(self) -> None:
        """Unplug for good."""
        if self.is_plugged:
            self.unplug()
