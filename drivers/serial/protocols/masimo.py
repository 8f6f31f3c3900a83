"""Masimo Rad-8 / Radical-7 / Rad-97 "ASCII 1" serial output, one line a second.

Source: Masimo Rad-8 Operator's Manual §7 and real captures, digested in
serial-protocols.md §3. A line looks like
``MM/DD/YY HH:MM:SS SN=nnnnnnnnnn SPO2=098% BPM=097 PI=03.60% ... ALARM=0000 EXC=000800``.

Quirks handled here: fields are parsed by key, never by position (models differ);
``---``/``--.--`` mean missing; EXC is a hex bit field (manual p.4-24) mapped onto
neutral flags; ALARM is proprietary (NDA), so it is only an opaque "device_alarm" hint.
The line's own date/time is not the reading's time: the device clock is often unset and
the line carries no zone, so the hub's receipt time is used (docs/serial.md). It is
passed on as ``device_time`` so the driver can record the device-vs-hub clock offset.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from drivers.serial.protocols.base import (
    DEVICE_ALARM,
    INTERFERENCE,
    LOW_PERFUSION,
    LOW_SIGNAL_QUALITY,
    PERFUSION_INDEX_MISSING,
    SEARCHING,
    SENSOR_FAULT,
    SENSOR_OFF,
    LineFramer,
    Sample,
    missing_flags,
)

_FIELD = re.compile(rb"([A-Z0-9]+)=([^\s]*)")
# The line's leading "MM/DD/YY HH:MM:SS" (the device's own clock, no zone).
_STAMP = re.compile(rb"\s*(\d\d)/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\s")
MAX_SPO2: Final = 100
MAX_PULSE_RATE: Final = 400
MAX_PI: Final = 20.0
# EXC bits (Rad-8 manual p.4-24). 0x800 ("Masimo SET", normal) and reserved bits map
# to nothing.
EXC_FLAGS: Final[tuple[tuple[int, str], ...]] = (
    (0x001, SENSOR_OFF),  # No Sensor
    (0x002, SENSOR_FAULT),  # Defective Sensor
    (0x004, LOW_PERFUSION),
    (0x008, SEARCHING),  # Pulse Search
    (0x010, INTERFERENCE),
    (0x020, SENSOR_OFF),  # Sensor Off
    (0x040, INTERFERENCE),  # Ambient Light
    (0x080, SENSOR_FAULT),  # Unrecognized Sensor
    (0x400, LOW_SIGNAL_QUALITY),  # Low Signal IQ
)


class _BadLineError(ValueError):
    """A field is present but unreadable: the whole line is dropped."""


def _number(text: bytes, maximum: float) -> float | None:
    """A field's number, None for dashes (missing); raises _BadLineError otherwise."""
    text = text.rstrip(b"%")
    if text and set(text) <= set(b"-."):
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise _BadLineError(text) from exc
    if not 0 <= value <= maximum:
        raise _BadLineError(text)
    return value


class MasimoAsciiDecoder(LineFramer):
    """CR/LF lines of ``KEY=value``; a line without SPO2 and BPM is another packet."""

    def _decode_line(self, line: bytes) -> Sample | None:
        fields = dict(_FIELD.findall(line))
        if b"SPO2" not in fields or b"BPM" not in fields:
            self.stats.other_packets += 1
            return None
        sample: Sample | None = None
        if line.isascii():
            try:
                sample = _sample(fields, _stamp(line))
            except _BadLineError:
                sample = None
        if sample is None:
            self.stats.bad_frames += 1
            self.stats.bytes_skipped += len(line)
        return sample


def _stamp(line: bytes) -> datetime | None:
    """The device's wall-clock time, or None when absent or not a real date (never fatal)."""
    match = _STAMP.match(line)
    if match is None:
        return None
    month, day, year, hour, minute, second = (int(g) for g in match.groups())
    try:
        return datetime(2000 + year, month, day, hour, minute, second)  # noqa: DTZ001 - device wall clock, no zone
    except ValueError:
        return None


def _sample(fields: dict[bytes, bytes], device_time: datetime | None) -> Sample:
    spo2 = _number(fields[b"SPO2"], MAX_SPO2)
    pulse_rate = _number(fields[b"BPM"], MAX_PULSE_RATE)
    perfusion = _number(fields[b"PI"], MAX_PI) if b"PI" in fields else None
    flags = missing_flags(
        None if spo2 is None else int(spo2), None if pulse_rate is None else int(pulse_rate)
    )
    if b"PI" in fields and perfusion is None:
        flags.append(PERFUSION_INDEX_MISSING)
    flags.extend(_exc_flags(fields.get(b"EXC")))
    alarm = fields.get(b"ALARM", b"0")
    if alarm.strip(b"0"):
        flags.append(DEVICE_ALARM)
    serial = fields.get(b"SN", b"").decode("ascii")
    return Sample(
        spo2=None if spo2 is None else int(spo2),
        pulse_rate=None if pulse_rate is None else int(pulse_rate),
        perfusion_index=perfusion,
        status=tuple(sorted(set(flags))),
        serial_number=serial if serial and not serial.startswith("-") else None,
        device_time=device_time,
    )


def _exc_flags(text: bytes | None) -> list[str]:
    if text is None:
        return []
    try:
        bits = int(text, 16)
    except ValueError as exc:
        raise _BadLineError(text) from exc
    return [name for mask, name in EXC_FLAGS if bits & mask]
