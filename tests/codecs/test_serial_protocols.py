"""Serial oximetry decoders against byte vectors written from serial-protocols.md."""

from __future__ import annotations

from datetime import datetime

import pytest

from drivers.serial.protocols import PROTOCOLS, Sample
from drivers.serial.protocols.contec import ContecV5Decoder, ContecV7Decoder
from drivers.serial.protocols.masimo import MasimoAsciiDecoder
from drivers.serial.protocols.nonin import (
    NoninAsciiDecoder,
    NoninDf8Decoder,
    NoninDf13Decoder,
    NoninPacketDecoder,
)


def _nonin_frame(*first4: int) -> list[int]:
    return [*first4, sum(first4) & 0xFF]


def _df2_packet(hr: int, spo2: int, status: int = 0x82, stat2: int = 0) -> bytes:
    """A DF2 packet laid out by hand from the 9560 spec's FLOAT table (§1.3)."""
    floats = [0] * 25
    floats[0], floats[1], floats[2], floats[7] = (hr >> 7) & 3, hr & 0x7F, spo2, stat2
    out: list[int] = []
    for i, value in enumerate(floats):
        out += _nonin_frame(0x01, status | (1 if i == 0 else 0), 0x11 + i, value)
    return bytes(out)


def _df7_packet(hr: int, spo2: int, status: int = 0x82) -> bytes:
    floats = [0] * 25
    floats[0], floats[1], floats[2] = (hr >> 7) & 3, hr & 0x7F, spo2
    out: list[int] = []
    for i, value in enumerate(floats):
        out += _nonin_frame(status | (1 if i == 0 else 0), 0x13, i, value)
    return bytes(out)


# --- Nonin DF2 / DF7 -------------------------------------------------------------------


def test_df2_packet_gives_recording_values() -> None:
    decoder = NoninPacketDecoder(status_index=1)
    assert decoder.feed(_df2_packet(72, 97)) == [
        Sample(spo2=97, pulse_rate=72, perfusion_index=None)
    ]
    assert decoder.stats.bytes_skipped == 0


def test_df2_nine_bit_heart_rate_and_xon_xoff_bytes_are_data() -> None:
    # HR 300 needs HR8; pleth bytes 0x11 and 0x13 (XON/XOFF) appear in the packet.
    samples = NoninPacketDecoder(status_index=1).feed(_df2_packet(300, 88))
    assert [(s.pulse_rate, s.spo2) for s in samples] == [(300, 88)]


def test_df2_missing_codes_and_finger_out_become_none_and_flags() -> None:
    # SNSA (bit 3) set with red perfusion (bits 2-1 = 10), HR 511, SpO2 127.
    samples = NoninPacketDecoder(status_index=1).feed(_df2_packet(511, 127, status=0x8C, stat2=1))
    assert samples == [
        Sample(
            spo2=None,
            pulse_rate=None,
            perfusion_index=None,
            status=(
                "low_battery",
                "low_perfusion",
                "pulse_rate_missing",
                "sensor_off",
                "spo2_missing",
            ),
        )
    ]


def test_df2_bad_checksum_drops_the_whole_packet_and_resyncs() -> None:
    bad = bytearray(_df2_packet(80, 95))
    bad[12 * 5 + 4] ^= 0xFF
    decoder = NoninPacketDecoder(status_index=1)
    samples = decoder.feed(bytes(bad) + _df2_packet(81, 96))
    assert [(s.pulse_rate, s.spo2) for s in samples] == [(81, 96)]
    assert decoder.stats.bad_frames >= 1
    assert decoder.stats.bytes_skipped == len(bad)


def test_df2_frame_loss_drops_the_short_packet() -> None:
    short = _df2_packet(80, 95)[: 20 * 5]  # 20 of 25 frames, then a new SYNC frame
    decoder = NoninPacketDecoder(status_index=1)
    assert [s.pulse_rate for s in decoder.feed(short + _df2_packet(70, 99))] == [70]
    assert decoder.stats.bytes_skipped == len(short)


def test_df2_garbage_before_sync_is_counted() -> None:
    decoder = NoninPacketDecoder(status_index=1)
    samples = decoder.feed(b"\x01\x81\x00\x00\x00garbage" + _df2_packet(65, 94))
    assert [s.pulse_rate for s in samples] == [65]
    assert decoder.stats.bytes_skipped == 12


def test_df7_packet_with_status_first() -> None:
    samples = NoninPacketDecoder(status_index=0).feed(_df7_packet(72, 97))
    assert samples == [Sample(spo2=97, pulse_rate=72, perfusion_index=None)]


def test_df7_is_not_confused_by_df2_bytes() -> None:
    decoder = NoninPacketDecoder(status_index=0)
    assert decoder.feed(_df2_packet(72, 97)) == []


# --- Nonin DF8 -------------------------------------------------------------------------


def _believed(decoder: NoninDf8Decoder | ContecV5Decoder, unit: bytes) -> Sample:
    """The sample of a unit that has no checksum: its repeat vouches for it."""
    first, repeat = decoder.feed(unit + unit)
    assert first == repeat
    return first


def test_df8_frames() -> None:
    assert _believed(NoninDf8Decoder(), bytes([0x80, 0x48, 0x61, 0x00])) == Sample(
        spo2=97, pulse_rate=72, perfusion_index=None
    )
    assert _believed(NoninDf8Decoder(), bytes([0x82, 0x2C, 0x58, 0x01])) == Sample(
        spo2=88, pulse_rate=300, perfusion_index=None, status=("low_battery",)
    )


def test_df8_finger_out_and_flags() -> None:
    # OOT, LPRF, ARTF in byte 1; SNSF in Status2; HR 511 / SpO2 127.
    sample = _believed(NoninDf8Decoder(), bytes([0x80 | 0x34 | 0x03, 0x7F, 0x7F, 0x08]))
    assert sample.spo2 is None
    assert sample.pulse_rate is None
    assert sample.status == (
        "artifact",
        "low_perfusion",
        "out_of_track",
        "pulse_rate_missing",
        "sensor_off",
        "spo2_missing",
    )


def _df8(hr: int) -> bytes:
    return bytes([0x80, hr, 0x61, 0x00])


DF8_OK = _df8(72)


def test_df8_dropped_byte_is_a_bad_frame_not_a_sample() -> None:
    decoder = NoninDf8Decoder()
    # The third frame lost its SpO2 byte: 3 bytes then the next start byte.
    stream = _df8(70) + _df8(71) + _df8(72)[:2] + b"\x00" + _df8(73) + _df8(74)
    assert [s.pulse_rate for s in decoder.feed(stream)] == [70, 71, 73, 74]
    assert decoder.stats.bad_frames == 1
    assert decoder.stats.bytes_skipped == 3


def test_df8_noise_that_looks_like_a_frame_is_not_believed_alone() -> None:
    decoder = NoninDf8Decoder()
    # After noise, a frame-shaped run followed by more noise is never a sample; the
    # first real frame is believed once the second follows it, then frames flow.
    assert decoder.feed(b"\x13\x85\x20\x1f\x00\x07\x99" + _df8(70)) == []
    assert [s.pulse_rate for s in decoder.feed(_df8(71))] == [70, 71]
    assert [s.pulse_rate for s in decoder.feed(_df8(72))] == [72]
    assert decoder.stats.bad_frames == 2  # the frame-shaped run, and 0x99 cut short
    assert decoder.stats.bytes_skipped == 7


def test_df8_noise_glued_in_front_of_a_real_frame_is_not_believed() -> None:
    # The soak's wrong SpO2s: the tail of a noise burst shaped like a frame, right before
    # a real frame, with values close to the patient's but its own flags (artifact).
    decoder = NoninDf8Decoder()
    assert [s.pulse_rate for s in decoder.feed(_df8(72) + _df8(72))] == [72, 72]
    phantom = bytes([0x84, 0x40, 0x5E, 0x00])  # artifact, pulse 64, SpO2 94
    samples = decoder.feed(b"\x13" + phantom + _df8(73))
    assert [(s.pulse_rate, s.status) for s in samples] == [(73, ())]


def test_df8_frame_missing_a_byte_glued_to_noise_is_not_believed() -> None:
    # A frame lost its SpO2 byte; a noise byte completes it into a frame-shaped run.
    decoder = NoninDf8Decoder()
    decoder.feed(_df8(72) + _df8(72))
    samples = decoder.feed(bytes([0x80, 0x48, 0x00, 0x2B]) + b"\xd0\xc2" + _df8(72) + _df8(72))
    assert [(s.spo2, s.pulse_rate) for s in samples] == [(97, 72), (97, 72)]


def test_df8_flags_that_flicker_every_frame_are_all_kept() -> None:
    # Marginal perfusion on every other frame: real, and exactly what a clinician needs.
    decoder = NoninDf8Decoder()
    frames = [bytes([0x80 | (0x08 if i % 2 else 0), 72, 97, 0]) for i in range(8)]
    samples = decoder.feed(b"".join(frames))
    assert len(samples) == 7  # the last one waits for its successor
    assert [("marginal_perfusion" in s.status) for s in samples] == [False, True] * 3 + [False]
    # Noise arrives: the frame held for its successor (its flags changed) is lost, and
    # the flickering stream flows again at once (no wait for two equal frames).
    samples = decoder.feed(b"\x13" + b"".join(frames))
    assert [("marginal_perfusion" in s.status) for s in samples] == [False, True] * 3 + [False]
    assert decoder.stats.bad_frames == 1


# --- Nonin DF13 ------------------------------------------------------------------------


def _df13(data: list[int]) -> bytes:
    return bytes([0x00, 0x02, 0x00, 0x0D, 0x00, len(data), *data, sum(data) & 0xFF, 0x03])


DF13_DATA = [0x20, 0x26, 0x11, 0x27, 0x10, 0x30, 0x15, 0x00, 0x02, 0x00, 0x00, 0x48, 0x00, 0x61]


def test_df13_spot_check_with_device_time() -> None:
    decoder = NoninDf13Decoder()
    samples = decoder.feed(b"\x06" + _df13(DF13_DATA))  # ACK to the format select first
    assert samples == [
        Sample(
            spo2=97,
            pulse_rate=72,
            perfusion_index=None,
            spot=True,
            device_time=datetime(2026, 11, 27, 10, 30, 15),  # noqa: DTZ001 - device wall time
        )
    ]
    assert decoder.stats.other_packets == 1
    assert decoder.stats.bytes_skipped == 0


def test_df13_hr_is_a_full_byte_plus_hr8_and_memory_flag() -> None:
    data = DF13_DATA.copy()
    data[9], data[10], data[11] = 0x11, 0x01, 0x2C  # MEM + LOW BAT, HR8, HR = 300
    (sample,) = NoninDf13Decoder().feed(_df13(data))
    assert sample.pulse_rate == 300
    assert sample.status == ("from_memory", "low_battery")


def test_df13_no_measurement_is_missing_whatever_the_value_bytes() -> None:
    data = DF13_DATA.copy()
    data[8] = 0x03  # SPA + NOMS
    (sample,) = NoninDf13Decoder().feed(_df13(data))
    assert (sample.spo2, sample.pulse_rate) == (None, None)
    assert "no_measurement" in sample.status


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-2] + bytes([b[-2] ^ 1, 3]), id="checksum"),
        pytest.param(lambda b: b[:-1] + b"\x04", id="etx"),
        pytest.param(lambda b: b[:6] + b"\x20\x26\x13" + b[9:], id="bcd-month"),
    ],
)
def test_df13_damaged_packet_is_dropped_and_next_one_read(damage: object) -> None:
    assert callable(damage)
    decoder = NoninDf13Decoder()
    samples = decoder.feed(damage(_df13(DF13_DATA)) + _df13(DF13_DATA))
    assert len(samples) == 1
    assert decoder.stats.bad_frames >= 1


# --- Nonin ASCII -----------------------------------------------------------------------


def test_nonin_ascii_lines() -> None:
    decoder = NoninAsciiDecoder()
    samples = decoder.feed(
        b"Nonin 2500 Format 1 11/27/26\r\n"
        b"SPO2=097 HR=072\r\n"
        b"10:30:01 SPO2=--- HR=---*\r\n"
        b"SPO2=095 HR=101 B F\r\n"
    )
    assert samples == [
        Sample(spo2=97, pulse_rate=72, perfusion_index=None),
        Sample(
            spo2=None,
            pulse_rate=None,
            perfusion_index=None,
            status=("pulse_rate_missing", "spo2_missing"),
        ),
        Sample(spo2=95, pulse_rate=101, perfusion_index=None),
    ]
    assert decoder.stats.other_packets == 1


def test_nonin_ascii_out_of_range_and_overlong_lines_are_bad() -> None:
    decoder = NoninAsciiDecoder()
    samples = decoder.feed(
        b"SPO2=197 HR=072\r\n" + b"x" * 1500 + b"SPO2=097 HR=072\r\nSPO2=096 HR=070\n"
    )
    assert [s.spo2 for s in samples] == [96]
    assert decoder.stats.bad_frames == 2


# --- Contec ----------------------------------------------------------------------------


def test_contec_v5_packages() -> None:
    samples = [
        _believed(ContecV5Decoder(), bytes([0x86, 0x10, 0x05, 0x48, 0x61])),
        _believed(ContecV5Decoder(), bytes([0x86, 0x10, 0x45, 0x48, 0x5A])),
    ]
    assert [(s.pulse_rate, s.spo2) for s in samples] == [(72, 97), (200, 90)]


def test_contec_v5_probe_error_is_missing_and_sensor_off() -> None:
    sample = _believed(ContecV5Decoder(), bytes([0x96, 0x40, 0x35, 0x00, 0x00]))
    assert (sample.spo2, sample.pulse_rate) == (None, None)
    assert sample.status == (
        "pulse_rate_missing",
        "searching",
        "searching_too_long",
        "sensor_off",
        "spo2_missing",
    )


def test_contec_v5_short_package_is_dropped() -> None:
    decoder = ContecV5Decoder()
    short, ok = bytes([0x86, 0x10, 0x05, 0x48]), bytes([0x86, 0x10, 0x05, 0x49, 0x60])
    samples = decoder.feed(short + ok + ok)
    assert [s.pulse_rate for s in samples] == [73, 73]
    assert decoder.stats.bad_frames == 1


def test_contec_v7_realtime_packet() -> None:
    decoder = ContecV7Decoder()
    samples = decoder.feed(bytes([0x01, 0x80, 0x86, 0xA0, 0x86, 0xC8, 0xE1, 0xDE, 0x81]))
    assert samples == [Sample(spo2=97, pulse_rate=72, perfusion_index=3.5)]


def test_contec_v7_high_byte_restores_bit_7() -> None:
    # HIGH bit 3 set: the pulse-rate byte's real bit 7 is 1, so 0xC8 means 200, not 72.
    (sample,) = ContecV7Decoder().feed(
        bytes([0x01, 0x88, 0x86, 0xA0, 0x86, 0xC8, 0xE1, 0xDE, 0x81])
    )
    assert sample.pulse_rate == 200


def test_contec_v7_finger_out_has_no_numbers() -> None:
    (sample,) = ContecV7Decoder().feed(
        bytes([0x01, 0xE9, 0x80, 0xC0, 0x90, 0xFF, 0xFF, 0xFF, 0xFF])
    )
    assert sample == Sample(
        spo2=None,
        pulse_rate=None,
        perfusion_index=None,
        status=("perfusion_index_missing", "pulse_rate_missing", "sensor_off", "spo2_missing"),
    )


def test_contec_v7_skips_other_packet_types_and_cut_packets() -> None:
    decoder = ContecV7Decoder()
    good = bytes([0x01, 0x80, 0x86, 0xA0, 0x86, 0xC8, 0xE1, 0xDE, 0x81])
    notice = bytes([0x0C, 0x80])  # "free feedback", 2 bytes
    cut = good[:5]
    samples = decoder.feed(notice + cut + good + b"\x7e\x7e" + good)
    assert len(samples) == 2
    assert decoder.stats.other_packets == 1
    assert decoder.stats.bad_frames == 1
    assert decoder.stats.bytes_skipped == 5 + 2


def test_contec_v7_out_of_range_spo2_is_bad() -> None:
    decoder = ContecV7Decoder()
    assert decoder.feed(bytes([0x01, 0x80, 0x86, 0xA0, 0x86, 0xC8, 0xF0, 0xDE, 0x81])) == []
    assert decoder.stats.bad_frames == 1


# --- Masimo ----------------------------------------------------------------------------

RAD8 = (
    b"11/27/26 10:30:00 SN=0000123456 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% "
    b"SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n"
)


def test_masimo_line() -> None:
    assert MasimoAsciiDecoder().feed(RAD8) == [
        Sample(
            spo2=98,
            pulse_rate=97,
            perfusion_index=3.6,
            serial_number="0000123456",
            device_time=datetime(2026, 11, 27, 10, 30, 0),  # noqa: DTZ001 - device wall clock
        )
    ]


def test_masimo_impossible_date_keeps_the_values_without_a_device_time() -> None:
    # A device clock showing 13/45/26 says nothing about time; the values still count.
    (sample,) = MasimoAsciiDecoder().feed(RAD8.replace(b"11/27/26", b"13/45/26"))
    assert (sample.spo2, sample.device_time) == (98, None)


def test_masimo_abbreviated_line_without_sensor() -> None:
    line = (
        b"11/27/26 10:30:01 SN=---------- SPO2=---% BPM=--- DESAT=-- PIDELTA=+-- "
        b"ALARM=0012 EXC=000001\r\n"
    )
    assert MasimoAsciiDecoder().feed(line) == [
        Sample(
            spo2=None,
            pulse_rate=None,
            perfusion_index=None,
            status=("device_alarm", "pulse_rate_missing", "sensor_off", "spo2_missing"),
            device_time=datetime(2026, 11, 27, 10, 30, 1),  # noqa: DTZ001 - device wall clock
        )
    ]


def test_masimo_radical7_line_and_exc_bits() -> None:
    line = (
        b"11/27/26 10:30:02 SN=0000123456 SPO2=091% BPM=110 PI=--.--% SPCO=--% SPMET=--.-% "
        b"SPHB=--.- SPOC=-- RESVD=--- DESAT=-- PIDELTA=+-- PVI=--- ALARM=000000 EXC=0000C14\r\n"
    )
    (sample,) = MasimoAsciiDecoder().feed(line)
    assert (sample.spo2, sample.pulse_rate, sample.perfusion_index) == (91, 110, None)
    assert sample.status == (
        "interference",
        "low_perfusion",
        "low_signal_quality",
        "perfusion_index_missing",
    )


def test_masimo_garbled_value_drops_the_line() -> None:
    decoder = MasimoAsciiDecoder()
    assert decoder.feed(RAD8.replace(b"BPM=097", b"BPM=0x7")) == []
    assert decoder.stats.bad_frames == 1


# --- registry ---------------------------------------------------------------------------


def test_registry_link_settings_follow_the_document() -> None:
    links = {pid: (s.link.baudrate, s.link.parity) for pid, s in PROTOCOLS.items()}
    assert links == {
        "nonin-df2": (9600, "N"),
        "nonin-df7": (9600, "N"),
        "nonin-df8": (9600, "N"),
        "nonin-df13": (9600, "N"),
        "nonin-ascii": (9600, "N"),
        "contec-v5": (19200, "O"),
        "contec-v7": (115200, "N"),
        "masimo-ascii": (9600, "N"),
    }
    assert PROTOCOLS["contec-v7"].init_commands == (bytes.fromhex("7d81a1808080808080"),)
    assert PROTOCOLS["contec-v7"].keepalive_command == bytes.fromhex("7d81af808080808080")
    assert PROTOCOLS["nonin-df8"].init_commands == (bytes.fromhex("027002020803"),)


def test_ascii_noise_before_a_record_costs_nothing_noise_inside_a_value_drops_it() -> None:
    decoder = NoninAsciiDecoder()
    samples = decoder.feed(
        b"\x93\x07\xfeSPO2=097 HR=072\r\n"  # noise glued to the front
        b"SPO2=0\xfe97 HR=072\r\n"  # noise inside the SpO2 value
        b"SPO2=0597 HR=072\r\n"  # a printable digit glued into the value
    )
    assert [(s.spo2, s.pulse_rate) for s in samples] == [(97, 72)]
    assert decoder.stats.bad_frames == 2
    masimo = MasimoAsciiDecoder()
    assert masimo.feed(b"\x81\x82" + RAD8)[0].spo2 == 98
    assert masimo.feed(RAD8.replace(b"SPO2=098", b"SPO2=0\x8198")) == []


@pytest.mark.parametrize(
    "changes",
    [
        {2: 0x89},  # signal strength 9 (the table stops at 8)
        {4: 0xA6},  # bar-graph byte bit 5, always 0
        {7: 0x99, 8: 0x89},  # PI 0x0999 = 24.57 %, above the 22 % the table allows
    ],
)
def test_contec_v7_values_the_table_rules_out_are_bad(changes: dict[int, int]) -> None:
    packet = bytearray([0x01, 0x80, 0x86, 0xA0, 0x86, 0xC8, 0xE1, 0xDE, 0x81])
    for index, value in changes.items():
        packet[index] = value
    decoder = ContecV7Decoder()
    assert decoder.feed(bytes(packet)) == []
    assert decoder.stats.bad_frames == 1


def test_contec_v5_signal_strength_above_eight_is_noise() -> None:
    decoder = ContecV5Decoder()
    package = bytes([0x8C, 0x10, 0x05, 0x48, 0x61])  # signal strength 12
    assert decoder.feed(package * 3) == []
    assert decoder.stats.bad_frames == 3
