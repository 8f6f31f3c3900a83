"""Nonin serial data formats 2, 7, 8, 13 and the ASCII printer output.

Devices: OEM III module, 9560 Onyx II (Bluetooth SPP), 3150 WristOx2, Xpod (DF2/DF7/DF8);
9560 SmartPoint spot checks (DF13, its factory default); 2500, 8500, 9847, Avant 9600
and BT4000 printer output (ASCII). Source: Nonin 9560 Bluetooth Specification, digested
in serial-protocols.md §1 (section numbers below refer to it).

Quirks handled here: XON/XOFF bytes are data (0x11/0x13 are valid checksums); missing
values are HR 511 and SpO2 127 (never passed on as numbers); a DF2/DF7 packet with any
bad frame is dropped whole; DF8 has no checksum and syncs on bit 7 only.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from drivers.serial.protocols.base import (
    ARTIFACT,
    FROM_MEMORY,
    LOW_BATTERY,
    LOW_PERFUSION,
    MARGINAL_PERFUSION,
    NO_MEASUREMENT,
    OUT_OF_TRACK,
    SENSOR_FAULT,
    SENSOR_OFF,
    Bit7Framer,
    Framer,
    LineFramer,
    Sample,
    missing_flags,
    nonin_value,
)

SPO2_MISSING_CODE: Final = 127
HR_MISSING_CODE: Final = 511
FRAME_LEN: Final = 5
FRAMES_PER_PACKET: Final = 25
DF8_LEN: Final = 4
# Status2 bits 6 and 4 are reserved in the 9560 spec and unnamed in the other models'
# readers (serial-protocols.md §1.4); bits 3-0 differ by model and are not checked.
DF8_STATUS2_RESERVED: Final = 0x50
DF13_HEADER: Final = b"\x00\x02\x00\x0d"
DF13_MIN_DATA: Final = 14
# The 9560 spec calls the length "expandable"; nothing real comes near this, and a cap
# stops a garbage length from stalling the framer on a phantom packet.
DF13_MAX_DATA: Final = 64
ETX: Final = 0x03
ACK: Final = 0x06
NAK: Final = 0x15


def _perfusion_flags(bits: int) -> list[str]:
    # §1.3: RPRF/GPRF 01 green (fine), 11 yellow (marginal), 10 red (low / no pulse).
    return {0b11: [MARGINAL_PERFUSION], 0b10: [LOW_PERFUSION]}.get(bits, [])


def _status_flags(status: int) -> list[str]:
    """Flags of a DF2/DF7 STATUS byte (§1.3 table)."""
    flags = _perfusion_flags((status >> 1) & 0b11)
    # Bit 6 is reserved on the 9560 (always 0) and SNSD on the OEM III.
    named = ((6, SENSOR_FAULT), (5, ARTIFACT), (4, OUT_OF_TRACK), (3, SENSOR_OFF))
    flags.extend(name for bit, name in named if status >> bit & 1)
    return flags


def _checksum_ok(frame: bytes | bytearray) -> bool:
    return (frame[0] + frame[1] + frame[2] + frame[3]) & 0xFF == frame[4]


def _oximetry_sample(hr_raw: int, spo2_raw: int, flags: list[str]) -> Sample | None:
    """The sample, or None when a value is out of range (no checksum catches everything)."""
    if spo2_raw > MAX_SPO2 and spo2_raw != SPO2_MISSING_CODE:
        return None
    pulse_rate = nonin_value(hr_raw, HR_MISSING_CODE)
    spo2 = nonin_value(spo2_raw, SPO2_MISSING_CODE)
    flags = flags + missing_flags(spo2, pulse_rate)
    return Sample(spo2=spo2, pulse_rate=pulse_rate, perfusion_index=None, status=_sorted(flags))


def _sorted(flags: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(flags)))


class NoninPacketDecoder(Framer):
    """DF2 / DF7: 25 checksummed 5-byte frames per packet, 3 packets a second.

    Sync (§1.3 "Resync"): slide one byte at a time until a frame with a good header,
    the SYNC bit and a good checksum; then take frames whole. A bad frame, or a SYNC
    frame before 25 were collected (frame loss), drops the partial packet and resyncs.
    One sample per packet: the recording HR (frames 1-2) and SpO2 (frame 3), with the
    union of every frame's status bits and STAT2 (frame 8) low battery.
    """

    def __init__(self, status_index: int) -> None:
        """``status_index`` is 1 for DF2 (``01 STATUS ...``) and 0 for DF7."""
        super().__init__()
        self._status_index = status_index
        self._frames: list[bytes] = []

    def reset(self) -> None:
        """Drop the partial packet and buffered bytes."""
        super().reset()
        self._frames = []

    def _frame_ok(self, frame: bytes | bytearray) -> bool:
        header_ok = frame[0] == 0x01 if self._status_index == 1 else True
        return header_ok and bool(frame[self._status_index] & 0x80) and _checksum_ok(frame)

    def _is_sync(self, frame: bytes | bytearray) -> bool:
        return bool(frame[self._status_index] & 0x01)

    def _drop_partial(self) -> None:
        if self._frames:
            self.stats.bytes_skipped += FRAME_LEN * len(self._frames)
            self.stats.bad_frames += 1
            self._frames = []

    def _extract(self) -> list[Sample]:
        out: list[Sample] = []
        buf = self._buf.data
        while len(buf) >= FRAME_LEN:
            frame = bytes(buf[:FRAME_LEN])
            if not self._frame_ok(frame) or (not self._frames and not self._is_sync(frame)):
                self._drop_partial()  # in a packet: this frame is bad, the packet is lost
                self._buf.skip(1, self.stats)
                continue
            if self._frames and self._is_sync(frame):  # frame loss: SYNC came early
                self._drop_partial()
            self._frames.append(frame)
            del buf[:FRAME_LEN]
            if len(self._frames) == FRAMES_PER_PACKET:
                sample = self._decode_packet(self._frames)
                if sample is None:
                    self._drop_partial()
                else:
                    out.append(sample)
                self._frames = []
        return out

    def _decode_packet(self, frames: list[bytes]) -> Sample | None:
        floats = [f[3] for f in frames]
        flags: list[str] = []
        for f in frames:
            flags.extend(_status_flags(f[self._status_index]))
        if floats[7] & 0x01:  # STAT2 LOW BAT
            flags.append(LOW_BATTERY)
        hr_raw = ((floats[0] & 0x03) << 7) | (floats[1] & 0x7F)
        return _oximetry_sample(hr_raw, floats[2] & 0x7F, flags)


class NoninDf8Decoder(Bit7Framer):
    """DF8: 4 bytes a second, bit 7 set only in byte 1, no checksum (§1.4)."""

    def __init__(self) -> None:
        """Frame on bit 7, 4 bytes a unit."""
        super().__init__(DF8_LEN, self._decode_frame)

    @staticmethod
    def _decode_frame(frame: bytes) -> Sample | None:
        b1, hr_lsb, spo2_raw, status2 = frame
        if status2 & DF8_STATUS2_RESERVED:
            # No checksum: reserved bits set mean line noise, not a frame (a cheap guard
            # that rejects most garbage that happens to have the right bit-7 pattern).
            return None
        flags: list[str] = []
        named = ((5, OUT_OF_TRACK), (4, LOW_PERFUSION), (3, MARGINAL_PERFUSION), (2, ARTIFACT))
        flags.extend(name for bit, name in named if b1 >> bit & 1)
        if status2 & 0x08:  # SNSF/SNSA: finger removed or sensor fault
            flags.append(SENSOR_OFF)
        if status2 & 0x01:
            flags.append(LOW_BATTERY)
        hr_raw = ((b1 & 0x03) << 7) | (hr_lsb & 0x7F)
        return _oximetry_sample(hr_raw, spo2_raw & 0x7F, flags)


def _bcd(value: int) -> int:
    hi, lo = value >> 4, value & 0x0F
    if hi > 9 or lo > 9:  # noqa: PLR2004 - a decimal digit
        raise ValueError(f"not BCD: {value:#04x}")
    return hi * 10 + lo


class NoninDf13Decoder(Framer):
    """DF13: one SmartPoint spot check per packet, with the device's timestamp (§1.5).

    ``00 02 00 0D len16 data CHK 03``; CHK is the low byte of the sum of the data bytes.
    ACK/NAK bytes answering the format-select command are counted as other packets.
    """

    def _extract(self) -> list[Sample]:
        buf = self._buf.data
        out: list[Sample] = []
        while len(buf) >= len(DF13_HEADER) + 2:
            if bytes(buf[:4]) != DF13_HEADER:
                if buf[0] in (ACK, NAK):
                    del buf[:1]
                    self.stats.other_packets += 1
                else:
                    self._buf.skip(1, self.stats)
                continue
            length = int.from_bytes(buf[4:6], "big")
            if not DF13_MIN_DATA <= length <= DF13_MAX_DATA:
                self._reject(1)
                continue
            total = 6 + length + 2
            if len(buf) < total:
                break
            sample = self._decode(bytes(buf[6 : 6 + length]), buf[6 + length], buf[total - 1])
            if sample is None:
                self._reject(1)
                continue
            out.append(sample)
            del buf[:total]
        return out

    def _reject(self, n: int) -> None:
        self.stats.bad_frames += 1
        self._buf.skip(n, self.stats)

    @staticmethod
    def _decode(payload: bytes, checksum: int, etx: int) -> Sample | None:
        if sum(payload) & 0xFF != checksum or etx != ETX:
            return None
        try:
            when = datetime(  # noqa: DTZ001 - device-local wall time, zone applied later
                _bcd(payload[0]) * 100 + _bcd(payload[1]),
                _bcd(payload[2]),
                _bcd(payload[3]),
                _bcd(payload[4]),
                _bcd(payload[5]),
                _bcd(payload[6]),
            )
        except ValueError:
            return None
        status_msb, status_lsb, hr_msb, hr_lsb, _reserved, spo2_raw = payload[8:14]
        flags: list[str] = []
        if status_msb & 0x01:
            flags.append(NO_MEASUREMENT)
        if status_lsb & 0x10:
            flags.append(FROM_MEMORY)
        if status_lsb & 0x01:
            flags.append(LOW_BATTERY)
        hr_raw = ((hr_msb & 0x01) << 8) | hr_lsb
        if status_msb & 0x01:  # NOMS: whatever the value bytes say, nothing was measured
            hr_raw, spo2_raw = HR_MISSING_CODE, SPO2_MISSING_CODE
        sample = _oximetry_sample(hr_raw, spo2_raw & 0x7F, flags)
        if sample is None:
            return None
        return Sample(
            spo2=sample.spo2,
            pulse_rate=sample.pulse_rate,
            perfusion_index=None,
            status=sample.status,
            spot=True,
            device_time=when,
        )


# A value ends at a space, the event/breath/fast marks or the end of the line: a
# digit glued on by noise makes the field unreadable rather than another number.
_ASCII_SPO2 = re.compile(rb"SPO2=\s*(\d{1,3}|-+)(?=[\s*]|$)")
_ASCII_HR = re.compile(rb"\bHR=\s*(\d{1,3}|-+)(?=[\s*]|$)")
MAX_PULSE_RATE: Final = 511
MAX_SPO2: Final = 100


class NoninAsciiDecoder(LineFramer):
    """Nonin printer output: ``[HH:MM:SS ]SPO2=XXX HR=YYY[ *][ B][ F]`` CR LF, 1/s (§1.6).

    ``---`` is missing. Lines without ``SPO2=`` (the power-up header) are other packets.
    An overlong line (no CR/LF in ``ASCII_MAX_LINE`` bytes) is garbage and skipped.
    """

    def _decode_line(self, line: bytes) -> Sample | None:
        spo2_match = _ASCII_SPO2.search(line)
        hr_match = _ASCII_HR.search(line)
        if spo2_match is None and hr_match is None:
            if line.strip():
                self.stats.other_packets += 1
            return None
        spo2 = _ascii_value(spo2_match, MAX_SPO2)
        pulse_rate = _ascii_value(hr_match, MAX_PULSE_RATE)
        if spo2 == -1 or pulse_rate == -1 or not line.isascii():
            self.stats.bad_frames += 1
            self.stats.bytes_skipped += len(line)
            return None
        flags = missing_flags(spo2, pulse_rate)
        return Sample(spo2=spo2, pulse_rate=pulse_rate, perfusion_index=None, status=_sorted(flags))


def _ascii_value(match: re.Match[bytes] | None, maximum: int) -> int | None:
    """The value, None for ``---``, -1 when absent or out of range (a bad line)."""
    if match is None:
        return -1
    text = match.group(1)
    if text.startswith(b"-"):
        return None
    value = int(text)
    return value if value <= maximum else -1
