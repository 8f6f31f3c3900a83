"""Contec CMS50D+/CMS50E/CMS50F/CMS60C live data: legacy V5.x and V7.0 protocols.

Sources: Contec "Communication protocol (V5.1)" and "Communication Protocol of Pulse
Oximeter V7.0" (2010-07-08), digested in serial-protocols.md §2. Firmware decides which
generation a unit speaks (V7 at 115200 8N1 on firmware >= 4.6; V5 at 19200 8O1 before).

Quirks handled here: neither protocol has a checksum, so framing is checked by bit 7
and by value ranges; V7 data bytes carry their real bit 7 in the packet's HIGH byte;
V7 marks missing values as PR 0xFF, SpO2 0x7F, PI 0xFFFF; V5 documents no missing code,
so 0 (as MediPi reads it) and the probe-error bit are taken as missing (UNVERIFIED, §2.1).
"""

from __future__ import annotations

from typing import Final

from drivers.serial.protocols.base import (
    LOW_SPO2_INDICATED,
    PERFUSION_INDEX_MISSING,
    SEARCHING,
    SEARCHING_TOO_LONG,
    SENSOR_OFF,
    Bit7Framer,
    Framer,
    Sample,
    missing_flags,
)

V5_LEN: Final = 5
MAX_SPO2: Final = 100
# Signal strength is 0-8 in both generations (V5.1 byte 1, V7.0 Table 3 byte 2 bits 0-3);
# 9-15 cannot come from the device, so a unit carrying one is line noise.
MAX_SIGNAL_STRENGTH: Final = 8
# V7.0 Table 3: byte 4 bits 5-7 are always 0; PI is 0-22.00 % (0-2200) or 0xFFFF.
V7_BAR_ZERO_BITS: Final = 0xE0
V7_MAX_PI: Final = 2200
V7_REALTIME: Final = 0x01
# Total packet length (type + HIGH + data) per uplink type, V7.0 Table 2.
V7_LENGTHS: Final[dict[int, int]] = {
    0x01: 9,
    0x04: 9,
    0x05: 9,
    0x07: 8,
    0x08: 8,
    0x09: 6,
    0x0A: 4,
    0x0B: 4,
    0x0C: 2,
    0x0D: 3,
    0x0E: 3,
    0x0F: 8,
    0x10: 3,
    0x11: 9,
    0x12: 8,
    0x15: 9,
}
V7_PR_MISSING: Final = 0xFF
V7_SPO2_MISSING: Final = 0x7F
V7_PI_MISSING: Final = 0xFFFF
# V7.0 §3.2: a no-argument command is 7D, HIGH, code, then 0x00 padding that becomes
# 0x80 once packaged (bit 7 of every data byte is moved into HIGH and set on the wire).
V7_START: Final = bytes([0x7D, 0x81, 0xA1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80])
V7_KEEPALIVE: Final = bytes([0x7D, 0x81, 0xAF, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80])


def _sorted(flags: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(flags)))


class ContecV5Decoder(Bit7Framer):
    """V5.x: 5 bytes, 60 a second; bit 7 set only in byte 1 (§2.1)."""

    def __init__(self) -> None:
        """Frame on bit 7, 5 bytes a package."""
        super().__init__(V5_LEN, _decode_v5)


def _decode_v5(package: bytes) -> Sample | None:
    b1, _wave, b3, pr_low, spo2_raw = package
    if b1 & 0x0F > MAX_SIGNAL_STRENGTH:
        return None
    flags: list[str] = []
    if b1 & 0x20:
        flags.append(LOW_SPO2_INDICATED)
    if b1 & 0x10:
        flags.append(SEARCHING_TOO_LONG)
    if b3 & 0x20:
        flags.append(SEARCHING)
    probe_error = bool(b3 & 0x10)
    if probe_error:
        flags.append(SENSOR_OFF)
    pr_raw = ((b3 & 0x40) << 1) | pr_low
    if spo2_raw > MAX_SPO2 and spo2_raw != V7_SPO2_MISSING:
        return None
    pulse_rate = None if probe_error or pr_raw in (0, V7_PR_MISSING) else pr_raw
    spo2 = None if probe_error or spo2_raw in (0, V7_SPO2_MISSING) else spo2_raw
    flags.extend(missing_flags(spo2, pulse_rate))
    return Sample(spo2=spo2, pulse_rate=pulse_rate, perfusion_index=None, status=_sorted(flags))


class ContecV7Decoder(Framer):
    """V7.0: ``TYPE HIGH data...``; only TYPE has bit 7 clear (§2.2).

    Every uplink type is framed by its table length; type 0x01 (real-time) becomes a
    sample, other known types are counted and skipped, an unknown type or a packet cut
    short by the next type byte is a bad frame.
    """

    def _extract(self) -> list[Sample]:
        buf = self._buf.data
        out: list[Sample] = []
        while buf:
            length = V7_LENGTHS.get(buf[0]) if not buf[0] & 0x80 else None
            if length is None:
                self._buf.skip(1, self.stats)
                continue
            body = buf[1:length]
            cut = next((i for i, b in enumerate(body) if not b & 0x80), None)
            if cut is not None:  # the next type byte arrived before this packet ended
                self.stats.bad_frames += 1
                self._buf.skip(1 + cut, self.stats)
                continue
            if len(buf) < length:
                break
            packet = bytes(buf[:length])
            del buf[:length]
            if packet[0] != V7_REALTIME:
                self.stats.other_packets += 1
                continue
            sample = _decode_v7_realtime(packet)
            if sample is None:
                self.stats.bad_frames += 1
                self.stats.bytes_skipped += length
                continue
            out.append(sample)
        return out


def unpack_v7(packet: bytes) -> bytes:
    """The data bytes of a V7 packet with their real bit 7 restored from HIGH."""
    high = packet[1]
    return bytes((b & 0x7F) | ((high >> i & 1) << 7) for i, b in enumerate(packet[2:]))


def _decode_v7_realtime(packet: bytes) -> Sample | None:
    # Bytes are numbered from the type byte = 0, so data[0] is byte 2 (V7.0 Table 3).
    signal, wave, bar, pr_raw, spo2_raw, pi_low, pi_high = unpack_v7(packet)
    pi_raw = pi_high << 8 | pi_low
    if (
        signal & 0x0F > MAX_SIGNAL_STRENGTH
        or bar & V7_BAR_ZERO_BITS
        or V7_MAX_PI < pi_raw != V7_PI_MISSING
    ):
        return None  # no checksum: what the table rules out is line noise
    flags: list[str] = []
    if signal & 0x80:
        flags.append(SENSOR_OFF)  # probe error: "show Finger Out"
    if signal & 0x20:
        flags.append(LOW_SPO2_INDICATED)
    if signal & 0x10:
        flags.append(SEARCHING_TOO_LONG)
    if wave & 0x80:
        flags.append(SEARCHING)
    if spo2_raw > MAX_SPO2 and spo2_raw != V7_SPO2_MISSING:
        return None
    spo2 = None if spo2_raw == V7_SPO2_MISSING else spo2_raw
    pulse_rate = None if pr_raw == V7_PR_MISSING else pr_raw
    # Byte 4 bit 4: 0 = PI valid, 1 = PI invalid (timegrid's reader has it backwards).
    perfusion = None if bar & 0x10 or pi_raw == V7_PI_MISSING else pi_raw / 100
    flags.extend(missing_flags(spo2, pulse_rate))
    if perfusion is None:
        flags.append(PERFUSION_INDEX_MISSING)
    return Sample(
        spo2=spo2, pulse_rate=pulse_rate, perfusion_index=perfusion, status=_sorted(flags)
    )
