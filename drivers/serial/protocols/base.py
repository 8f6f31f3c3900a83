"""What every serial oximetry decoder yields: ``Sample``, plus its counters.

Pure: no I/O, no clock. A decoder is an incremental state machine fed with whatever
bytes the port happened to deliver (any chunking); it never raises on bad input,
it counts and skips it (serial-protocols.md §7.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

# Vendor-neutral status flags (serial-protocols.md §7.4): alerting must not depend on
# which oximeter a patient has. A decoder maps its vendor bits onto these names.
SENSOR_OFF: Final = "sensor_off"  # finger out / probe off / no sensor
SENSOR_FAULT: Final = "sensor_fault"  # defective, unrecognised or disconnected sensor
ARTIFACT: Final = "artifact"
OUT_OF_TRACK: Final = "out_of_track"
SEARCHING: Final = "searching"  # searching for a pulse
SEARCHING_TOO_LONG: Final = "searching_too_long"
LOW_PERFUSION: Final = "low_perfusion"
MARGINAL_PERFUSION: Final = "marginal_perfusion"
INTERFERENCE: Final = "interference"
LOW_SIGNAL_QUALITY: Final = "low_signal_quality"
LOW_SPO2_INDICATED: Final = "low_spo2_indicated"  # the device's own desaturation mark
LOW_BATTERY: Final = "low_battery"
DEVICE_ALARM: Final = "device_alarm"  # an opaque vendor alarm word was non-zero
NO_MEASUREMENT: Final = "no_measurement"
FROM_MEMORY: Final = "from_memory"  # a stored record forwarded after a reconnect
SPO2_MISSING: Final = "spo2_missing"
PULSE_RATE_MISSING: Final = "pulse_rate_missing"
PERFUSION_INDEX_MISSING: Final = "perfusion_index_missing"
# An aggregated reading whose value came from part of its interval only: the device
# marked the value missing in the rest (finger slipping out, searching).
PARTLY_MISSING: Final[dict[str, str]] = {
    SPO2_MISSING: "spo2_partly_missing",
    PULSE_RATE_MISSING: "pulse_rate_partly_missing",
    PERFUSION_INDEX_MISSING: "perfusion_index_partly_missing",
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One decoded measurement unit (a packet, frame or line), vendor-neutral.

    A value the device marked as missing is None *and* named by a ``*_missing`` flag
    in ``status``; a value the protocol does not carry at all is None without a flag.

    Attributes:
        spo2: functional oxygen saturation in %, or None.
        pulse_rate: pulse rate in beats per minute, or None.
        perfusion_index: perfusion index in %, or None.
        status: sorted vendor-neutral flag names (see the constants above).
        spot: True for a spot check (Nonin DF13) rather than a stream sample.
        device_time: the device's own naive wall-clock timestamp, if it sent one.
        serial_number: the serial number the device printed in this unit, if any.
    """

    spo2: int | None
    pulse_rate: int | None
    perfusion_index: float | None
    status: tuple[str, ...] = ()
    spot: bool = False
    device_time: datetime | None = None
    serial_number: str | None = None


@dataclass(slots=True)
class DecoderStats:
    """Running counters of one decoder (the driver reports their increments).

    Attributes:
        samples: samples produced.
        bytes_skipped: bytes discarded while hunting for sync or inside dropped units.
        bad_frames: units dropped for a bad checksum, header, layout or value range.
        other_packets: well-formed packets that carry no live reading (replies, notices).
    """

    samples: int = 0
    bytes_skipped: int = 0
    bad_frames: int = 0
    other_packets: int = 0


class Decoder(Protocol):
    """An incremental decoder: feed any chunk of bytes, get the samples completed."""

    stats: DecoderStats

    def feed(self, data: bytes) -> list[Sample]:
        """Consume ``data``; return the samples it completed. Never raises on bad input."""
        ...

    def reset(self) -> None:
        """Forget any partial unit (after an unplug); counters are kept."""
        ...


@dataclass(slots=True)
class ByteBuffer:
    """The pending bytes of a framer, with the one operation every framer needs."""

    data: bytearray = field(default_factory=bytearray)
    discarding: bool = False  # line framers: inside an overlong line, drop to its end

    def skip(self, n: int, stats: DecoderStats) -> None:
        """Drop ``n`` bytes from the front and count them as skipped."""
        del self.data[:n]
        stats.bytes_skipped += n


# Masimo Radical-7 colour lines run to ~200 characters; anything far longer is garbage.
ASCII_MAX_LINE: Final = 512


class Framer:
    """The shared shell of every decoder: a byte buffer, counters and ``feed``/``reset``.

    A subclass implements ``_extract``, which takes every complete unit out of
    ``self._buf`` and counts what it skips.
    """

    def __init__(self) -> None:
        """Start with an empty buffer, unsynchronised."""
        self._buf = ByteBuffer()
        self.stats = DecoderStats()

    def reset(self) -> None:
        """Forget any partial unit (after an unplug); counters are kept."""
        self._buf = ByteBuffer()

    def feed(self, data: bytes) -> list[Sample]:
        """Consume ``data``; return the samples it completed. Never raises on bad input."""
        self._buf.data.extend(data)
        out = self._extract()
        self.stats.samples += len(out)
        return out

    def _extract(self) -> list[Sample]:
        raise NotImplementedError

    def _drop_to_next_start(self) -> None:
        """For bit-7-synchronised formats: drop a bad unit up to the next start byte."""
        self.stats.bad_frames += 1
        self._buf.skip(1, self.stats)
        while self._buf.data and not self._buf.data[0] & 0x80:
            self._buf.skip(1, self.stats)


# How far the SpO2 (%) and pulse rate (/min) of two consecutive units of a format
# without checksum may differ and still be taken as the same patient's stream. Displayed
# values are averaged and change by a few units a second at most; a bigger step only
# delays a unit until its successor confirms it. Random bytes land this close to the
# last value about once in 200 tries (SpO2 11 of 128 values, pulse 31 of 512).
MAX_SPO2_STEP: Final = 5
MAX_PULSE_RATE_STEP: Final = 15


def _close(a: float | None, b: float | None, step: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= step


def _no_values(sample: Sample | None) -> bool:
    return sample is not None and sample.spo2 is None and sample.pulse_rate is None


def continues(previous: Sample, sample: Sample, *, same_status: bool) -> bool:
    """Whether ``sample`` can follow ``previous`` in one stream (values within a step).

    A value present in one and missing in the other is a change, not a continuation.
    Units without any value (finger out) vouch for each other only with equal flags:
    their flags are all they say.
    """
    if (same_status or _no_values(sample)) and previous.status != sample.status:
        return False
    return _close(previous.spo2, sample.spo2, MAX_SPO2_STEP) and _close(
        previous.pulse_rate, sample.pulse_rate, MAX_PULSE_RATE_STEP
    )


class Bit7Framer(Framer):
    """Formats without a checksum whose unit is one byte with bit 7 set, then bytes without.

    Nonin DF8 and Contec V5 sync this way; a start byte inside a unit means bytes
    were lost, and the partial unit is dropped (serial-protocols.md §1.4, §2.1).

    The bit-7 pattern and the range checks alone let about one random 4-5-byte run in
    a hundred through, and line noise is full of such runs: a burst of noise, or a
    unit that lost a byte glued to a noise byte, would become a reading with a random
    SpO2. So a unit is believed only when the stream vouches for it:

    - at once, if it continues the last believed unit: same status flags, SpO2 and
      pulse within ``MAX_SPO2_STEP`` / ``MAX_PULSE_RATE_STEP``;
    - otherwise (the first unit, a real change, or noise) only when the next unit
      follows it intact and continues it; both are then believed. Flags that flicker
      from one unit to the next are real, so the flags may differ, except after skipped
      bytes, where the tail of a noise burst sits right before a real unit: there two
      successors must vouch, and the unit's flags must be those of the last believed
      unit or of its successor.
      A unit confirmed by neither neighbour is dropped and counted as a bad frame.

    Noise must then mimic the framing, the flags and the patient's current values at
    once: docs/serial.md gives the odds, the soak bench what is left. A real step in
    the values costs one unit of latency, never a reading; a one-unit spike matching
    neither neighbour is dropped. ``reset`` (an unplug) forgets the last believed unit.
    """

    def __init__(self, length: int, decode: Callable[[bytes], Sample | None]) -> None:
        """``decode`` returns None for a unit whose values are out of range."""
        super().__init__()
        self._length = length
        self._decode = decode
        self._believed: Sample | None = None
        self._skipped = True  # bytes were skipped since the last believed unit (or none)

    def reset(self) -> None:
        """Forget the partial unit and the last believed unit."""
        super().reset()
        self._believed = None
        self._skipped = True

    def _unit_at(self, start: int) -> Sample | Literal[False] | None:
        """The valid unit at ``start``; False: cannot become one; None: too short yet."""
        unit = self._buf.data[start : start + self._length]
        if unit and not unit[0] & 0x80:
            return False
        if any(b & 0x80 for b in unit[1:]):
            return False
        if len(unit) < self._length:
            return None
        sample = self._decode(bytes(unit))
        return False if sample is None else sample

    def _extract(self) -> list[Sample]:
        buf, size = self._buf.data, self._length
        out: list[Sample] = []
        while buf:
            unit = self._unit_at(0)
            if unit is None:
                break
            if unit is False:
                self._skipped = True
                if buf[0] & 0x80:
                    self._drop_to_next_start()
                else:
                    self._buf.skip(1, self.stats)
                continue
            believed = self._believed
            # Noise that says "finger out" needs only the right flags (no values to
            # match), so across noise a unit without values vouches for nothing.
            anchor = None if self._skipped and _no_values(believed) else believed
            if anchor is None or not continues(anchor, unit, same_status=True):
                vouched = self._vouched_for(unit, believed)
                if vouched is None:
                    break  # wait for the next units to vouch for this one
                if not vouched:
                    self._skipped = True
                    self._drop_to_next_start()
                    continue
            out.append(unit)
            self._believed, self._skipped = unit, False
            del buf[:size]
        return out

    def _vouched_for(self, unit: Sample, believed: Sample | None) -> bool | None:
        """Whether the units after ``unit`` continue it; None: not all here yet.

        One successor is enough in a clean stream. After skipped bytes (noise) two are
        needed, so that two frame-shaped runs of noise in a row cannot vouch for each
        other, and the first must share the unit's flags unless they are the flags of
        the last believed unit.
        """
        after_noise = self._skipped and believed is not None
        same_status = after_noise and believed is not None and unit.status != believed.status
        previous = unit
        for k in range(1, 3 if after_noise else 2):
            successor = self._unit_at(k * self._length)
            if successor is None:
                return None
            if successor is False or not continues(previous, successor, same_status=same_status):
                return False
            previous, same_status = successor, False
        return True


class LineFramer(Framer):
    """A framer for CR/LF text lines; subclasses decode one line at a time."""

    def _extract(self) -> list[Sample]:
        out: list[Sample] = []
        for line in split_lines(self._buf, self.stats):
            clean = _after_last_noise(line)
            self.stats.bytes_skipped += len(line) - len(clean)
            bad_before, other_before = self.stats.bad_frames, self.stats.other_packets
            sample = self._decode_line(clean)
            if sample is None and len(clean) < len(line) and self.stats.bad_frames == bad_before:
                # Noise cut this line's record down to a fragment: a bad line, not a header.
                self.stats.other_packets = other_before
                self.stats.bad_frames += 1
            if sample is not None:
                out.append(sample)
        return out

    def _decode_line(self, line: bytes) -> Sample | None:
        raise NotImplementedError


def _after_last_noise(line: bytes) -> bytes:
    """The part of a line after its last non-printable byte.

    Line noise glued to the front of a record must not cost the record; any field
    after the last noise byte is intact, and a field cut by noise loses its key, so it
    can never be read as another value.
    """
    for index in range(len(line) - 1, -1, -1):
        if not 0x20 <= line[index] <= 0x7E:  # noqa: PLR2004 - printable ASCII
            return line[index + 1 :]
    return line


def split_lines(buf: ByteBuffer, stats: DecoderStats) -> list[bytes]:
    """Take every complete CR/LF-terminated line out of ``buf`` (shared by ASCII framers).

    A partial line longer than ``ASCII_MAX_LINE`` is garbage: it is dropped and counted.
    """
    lines: list[bytes] = []
    data = buf.data
    while True:
        end = next((i for i, b in enumerate(data) if b in (0x0A, 0x0D)), -1)
        if end < 0:
            if buf.discarding or len(data) > ASCII_MAX_LINE:
                # Keep discarding up to the next terminator, so that the tail of an
                # overlong line is never read as a line of its own (chunking-proof).
                if not buf.discarding:
                    stats.bad_frames += 1
                buf.discarding = True
                buf.skip(len(data), stats)
            return lines
        line = bytes(data[:end])
        del data[: end + 1]
        if buf.discarding or len(line) > ASCII_MAX_LINE:
            if not buf.discarding:
                stats.bad_frames += 1
            stats.bytes_skipped += len(line)
            buf.discarding = False
            continue
        if line:
            lines.append(line)


def missing_flags(spo2: int | None, pulse_rate: int | None) -> list[str]:
    """The ``*_missing`` flags for the two values every oximeter carries."""
    flags = []
    if spo2 is None:
        flags.append(SPO2_MISSING)
    if pulse_rate is None:
        flags.append(PULSE_RATE_MISSING)
    return flags


def nonin_value(raw: int, missing_code: int) -> int | None:
    """A Nonin value, None for its missing code (SpO2 127, HR 511; §1.3)."""
    return None if raw == missing_code else raw
