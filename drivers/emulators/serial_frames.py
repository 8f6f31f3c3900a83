"""Encoders for the serial oximeter protocols: what the pty emulators put on the wire.

Pure (no I/O, no clock: times are passed in). Written from serial-protocols.md, the
same document the decoders follow, so tests also check decoders against hand-written
byte vectors, not only against these encoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime


@dataclass(frozen=True, slots=True)
class Vitals:
    """What the emulated patient shows. None values are sent as the protocol's missing code."""

    spo2: int | None = 97
    pulse_rate: int | None = 72
    perfusion_index: float | None = 3.5
    finger_out: bool = False
    low_battery: bool = False


NONIN_SPO2_MISSING: Final = 127
NONIN_HR_MISSING: Final = 511


def _nonin_values(v: Vitals) -> tuple[int, int]:
    if v.finger_out:
        return NONIN_HR_MISSING, NONIN_SPO2_MISSING
    hr = NONIN_HR_MISSING if v.pulse_rate is None else v.pulse_rate
    spo2 = NONIN_SPO2_MISSING if v.spo2 is None else v.spo2
    return hr, spo2


def _nonin_floats(v: Vitals) -> list[int]:
    """The 25 FLOAT bytes of a DF2/DF7 packet (9560 spec table, serial-protocols.md §1.3)."""
    hr, spo2 = _nonin_values(v)
    hr_msb, hr_lsb = (hr >> 7) & 0x03, hr & 0x7F
    floats = [0] * 25
    for index, value in {
        0: hr_msb, 1: hr_lsb, 2: spo2, 3: 0x2A, 7: 0x01 if v.low_battery else 0,
        8: spo2, 9: spo2, 10: spo2, 13: hr_msb, 14: hr_lsb, 15: spo2, 16: spo2,
        19: hr_msb, 20: hr_lsb, 21: hr_msb, 22: hr_lsb,
    }.items():  # fmt: skip
        floats[index] = value
    return floats


def _nonin_status(v: Vitals, frame: int) -> int:
    status = 0x80 | (0x01 if frame == 0 else 0)
    # SNSA when the finger is out; green perfusion (GPRF) on a pulse otherwise.
    status |= 0x08 if v.finger_out else 0x02
    return status


def _chk(frame: list[int]) -> list[int]:
    return [*frame, sum(frame) & 0xFF]


def encode_df2_packet(v: Vitals, pleth_phase: int = 0) -> bytes:
    """25 frames of ``01 STATUS PLETH FLOAT CHK``."""
    out: list[int] = []
    for i, value in enumerate(_nonin_floats(v)):
        pleth = (pleth_phase * 25 + i * 7) & 0xFF
        out += _chk([0x01, _nonin_status(v, i), pleth, value])
    return bytes(out)


def encode_df7_packet(v: Vitals, pleth_phase: int = 0) -> bytes:
    """25 frames of ``STATUS PLETH_MSB PLETH_LSB FLOAT CHK``."""
    out: list[int] = []
    for i, value in enumerate(_nonin_floats(v)):
        pleth = (pleth_phase * 2500 + i * 700) & 0xFFFF
        out += _chk([_nonin_status(v, i), pleth >> 8, pleth & 0xFF, value])
    return bytes(out)


def encode_df8(v: Vitals, _phase: int = 0) -> bytes:
    """``1 R OOT LPRF MPRF ARTF HR8 HR7 | HR-D | SpO2-D | Status2`` (§1.4)."""
    hr, spo2 = _nonin_values(v)
    status2 = (0x08 if v.finger_out else 0) | (0x01 if v.low_battery else 0)
    return bytes([0x80 | (hr >> 7) & 0x03, hr & 0x7F, spo2, status2])


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def encode_df13(v: Vitals, when: datetime, from_memory: bool = False) -> bytes:
    """A SmartPoint spot check: ``00 02 00 0D 00 0E`` + 14 data bytes + CHK + ``03`` (§1.5)."""
    hr, spo2 = _nonin_values(v)
    stamp = [when.year // 100, when.year % 100, when.month, when.day]
    stamp += [when.hour, when.minute, when.second]
    status_msb = 0x02 | (0x01 if v.finger_out else 0)  # SPA, NOMS
    status_lsb = (0x10 if from_memory else 0) | (0x01 if v.low_battery else 0)
    data = [_bcd(x) for x in stamp] + [0, status_msb, status_lsb, hr >> 8, hr & 0xFF, 0, spo2]
    return bytes([0x00, 0x02, 0x00, 0x0D, 0x00, len(data), *data, sum(data) & 0xFF, 0x03])


def encode_nonin_ascii(v: Vitals, _phase: int = 0) -> bytes:
    """``SPO2=XXX HR=YYY`` CR LF, ``---`` when missing (§1.6)."""
    spo2 = "---" if v.finger_out or v.spo2 is None else f"{v.spo2:03d}"
    hr = "---" if v.finger_out or v.pulse_rate is None else f"{v.pulse_rate:03d}"
    return f"SPO2={spo2} HR={hr}\r\n".encode("ascii")


def encode_contec_v5(v: Vitals, phase: int = 0) -> bytes:
    """5 bytes, bit 7 only in byte 1 (§2.1); finger out: probe error, zero values."""
    pr = 0 if v.finger_out or v.pulse_rate is None else v.pulse_rate
    spo2 = 0 if v.finger_out or v.spo2 is None else v.spo2
    wave = (phase * 5) & 0x7F
    b3 = ((pr >> 7) & 1) << 6 | (0x10 if v.finger_out else 0) | 0x05
    return bytes([0x80 | 0x06, wave, b3, pr & 0x7F, spo2])


def contec_v7_pack(packet_type: int, data: list[int]) -> bytes:
    """Package data bytes: their bit 7 moves into HIGH and is set on the wire (V7.0 §3.2)."""
    high = 0x80
    for i, byte in enumerate(data):
        high |= ((byte >> 7) & 1) << i
    return bytes([packet_type, high, *(b | 0x80 for b in data)])


def encode_contec_v7(v: Vitals, phase: int = 0) -> bytes:
    """A type 0x01 real-time packet (V7.0 Table 3)."""
    if v.finger_out:
        return contec_v7_pack(0x01, [0x80, 0x40, 0x10, 0xFF, 0x7F, 0xFF, 0xFF])
    pr = 0xFF if v.pulse_rate is None else v.pulse_rate
    spo2 = 0x7F if v.spo2 is None else v.spo2
    pi = 0xFFFF if v.perfusion_index is None else round(v.perfusion_index * 100)
    bar = 0x10 if v.perfusion_index is None else 0x06
    wave = (phase * 5) & 0x7F
    return contec_v7_pack(0x01, [0x06, wave, bar, pr, spo2, pi & 0xFF, pi >> 8])


def encode_masimo(v: Vitals, when: datetime, serial: str = "0000123456") -> bytes:
    """An ASCII 1 line (§3); dashes when missing, EXC 020 (Sensor Off) on finger out."""
    spo2 = "---" if v.finger_out or v.spo2 is None else f"{v.spo2:03d}"
    bpm = "---" if v.finger_out or v.pulse_rate is None else f"{v.pulse_rate:03d}"
    pi_missing = v.finger_out or v.perfusion_index is None
    pi = "--.--" if pi_missing else f"{v.perfusion_index:05.2f}"
    exc = "000820" if v.finger_out else "000800"
    return (
        f"{when:%m/%d/%y %H:%M:%S} SN={serial} SPO2={spo2}% BPM={bpm} PI={pi}% "
        f"SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC={exc}\r\n"
    ).encode("ascii")


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """How an emulator streams a protocol: one unit every 1/``units_per_s`` seconds."""

    encode: Callable[[Vitals, int], bytes]
    units_per_s: float
    checksummed: bool
    ascii_lines: bool = False


STREAMS: Final[dict[str, StreamFormat]] = {
    "nonin-df2": StreamFormat(encode_df2_packet, 3.0, checksummed=True),
    "nonin-df7": StreamFormat(encode_df7_packet, 3.0, checksummed=True),
    "nonin-df8": StreamFormat(encode_df8, 1.0, checksummed=False),
    "nonin-ascii": StreamFormat(encode_nonin_ascii, 1.0, checksummed=False, ascii_lines=True),
    "contec-v5": StreamFormat(encode_contec_v5, 60.0, checksummed=False),
    "contec-v7": StreamFormat(encode_contec_v7, 60.0, checksummed=False),
}


def corrupt(protocol: str, unit: bytes) -> bytes:
    """A unit damaged the way the line damages it, so that no decoder may accept it.

    Checksummed formats get a wrong checksum; ASCII lines a noise byte inside the SpO2
    value; the rest (no checksum) lose a byte, which their framing must notice.
    """
    data = bytearray(unit)
    if protocol in ("nonin-df2", "nonin-df7"):
        data[4 * 5 + 4] ^= 0x5A  # frame 5's checksum
    elif protocol == "nonin-df13":
        data[-2] ^= 0x5A
    elif protocol in ("nonin-ascii", "masimo-ascii"):
        cut = data.find(b"SPO2=") + 6  # noise inside the SpO2 value
        data[cut:cut] = b"\xff"
    else:
        del data[2]
    return bytes(data)
