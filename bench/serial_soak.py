"""Soak the serial pipeline with one hour of simulated oximeter data, time-compressed.

Per protocol: the emulator's encoder produces an hour of units at the real rate, with
faults injected on a fixed schedule (garbage bursts, corrupted units, finger-out spells
and unplugs that cut a unit in half and lose 3 s of stream). The bytes go, in random
chunk sizes, through the real decoder and interval aggregator into a real SQLite
outbox. Simulated time drives the aggregator; nothing waits on the wall clock.

Prints, per protocol: readings expected (1 s intervals holding at least one intact
unit, counted independently of the aggregator) vs captured (rows in the outbox),
units sent intact vs samples decoded (more samples than units: phantom frames made
of line noise in a format without checksum), and the decoder's error counters.

Usage: python bench/serial_soak.py [--protocol ID ...] [--minutes 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.clock import HubTime
from agent.outbox import Outbox
from agent.readings import (
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    Reading,
    make_reading,
)
from drivers.emulators.serial import PtySerialDevice
from drivers.emulators.serial_frames import STREAMS
from drivers.serial.aggregate import Interval, IntervalAggregator
from drivers.serial.protocols import PROTOCOLS

BASE_UTC = datetime(2026, 11, 27, tzinfo=UTC)
INTERVAL_S = 1.0
UNPLUG_EVERY_S = 600.0
UNPLUG_GAP_S = 3.0
FINGER_OUT_EVERY_S = 420.0
FINGER_OUT_FOR_S = 20.0
GARBAGE_EVERY_S = 37.0
CORRUPT_EVERY_S = 13.0
# DF13 is left out: its spot records carry the device time to the second, and an hour
# compressed into seconds would make them (correctly) duplicates of each other.
SOAK_PROTOCOLS = sorted([*STREAMS, "masimo-ascii"])


@dataclass
class Tally:
    units_intact: int = 0
    units_corrupted: int = 0
    units_cut: int = 0  # half-sent at an unplug: never a sample
    unplugs: int = 0
    expected_windows: set[tuple[int, int]] = field(default_factory=set)
    samples_decoded: int = 0
    readings_captured: int = 0
    readings_missing_spo2: int = 0
    wrong_spo2: int = 0  # a value the emulated patient never had in that interval
    truncated: int = 0
    capture_s: float = 0.0
    bad_frames: int = 0
    bytes_skipped: int = 0


def _hub_time(t_s: float) -> HubTime:
    return HubTime(BASE_UTC + timedelta(seconds=t_s), int(t_s * 1e9), "soak", clock_synced=True)


def _reading(protocol: str, interval: Interval, t_s: float) -> Reading:
    s = interval.sample
    values = [
        Quantity("spo2", None if s.spo2 is None else float(s.spo2), "%",
                 "missing" if s.spo2 is None else None),
        Quantity("pulse_rate", None if s.pulse_rate is None else float(s.pulse_rate), "/min",
                 "missing" if s.pulse_rate is None else None),
    ]  # fmt: skip
    return make_reading(
        device=DeviceIdentity("soak-oximeter", "serial-oximeter"),
        patient=PatientBinding("SOAK-PATIENT", 1),
        kind=Kind.SPO2,
        cadence=Cadence.CONTINUOUS,
        values=tuple(values),
        received=_hub_time(t_s),
        driver_version="soak",
        status=s.status,
        extra={"protocol": protocol, "samples": str(interval.sample_count)},
    )


async def soak(protocol: str, minutes: float, seed: int, db: Path) -> Tally:
    """One protocol's simulated hour; returns the tally."""
    rng = random.Random(seed)
    device = PtySerialDevice(protocol, seed=seed)  # used only as a unit generator
    rate = device.units_per_s
    decoder = PROTOCOLS[protocol].make_decoder()
    aggregator = IntervalAggregator(INTERVAL_S)
    outbox = await Outbox.open(db)
    tally = Tally()
    pending: list[Reading] = []
    segment, segment_start = 0, 0.0
    total_units = int(minutes * 60 * rate)
    next_unplug = UNPLUG_EVERY_S
    for i in range(total_units):
        t = i / rate
        if t >= next_unplug:  # cable pulled mid-unit: half a unit, then silence
            decoder.feed(device.next_unit(t)[:3])
            tally.units_cut += 1
            pending += [_reading(protocol, iv, t) for iv in aggregator.flush(truncated=True)]
            decoder.reset()
            tally.unplugs += 1
            next_unplug += UNPLUG_EVERY_S
            segment, segment_start = segment + 1, t + UNPLUG_GAP_S
            continue
        if t < segment_start:
            continue
        device.set_finger_out(t % FINGER_OUT_EVERY_S < FINGER_OUT_FOR_S and t > FINGER_OUT_FOR_S)
        if int(t / GARBAGE_EVERY_S) != int((t - 1 / rate) / GARBAGE_EVERY_S):
            device.inject_garbage(rng.randint(1, 64))
        if int(t / CORRUPT_EVERY_S) != int((t - 1 / rate) / CORRUPT_EVERY_S):
            device.corrupt_next(1)
        corrupted_before = device.units_corrupted
        unit = device.next_unit(t)
        if device.units_corrupted == corrupted_before:
            tally.expected_windows.add((segment, int((t - segment_start) / INTERVAL_S)))
        for piece in _chunks(unit, rng):
            for sample in decoder.feed(piece):
                tally.samples_decoded += 1
                pending += [_reading(protocol, iv, t) for iv in aggregator.add(sample, t)]
        if len(pending) >= 60:
            await _capture(outbox, pending, tally)
    pending += [_reading(protocol, iv, total_units / rate) for iv in aggregator.flush()]
    await _capture(outbox, pending, tally)
    tally.units_intact = device.units_sent - tally.units_cut
    tally.units_corrupted = device.units_corrupted
    tally.bad_frames, tally.bytes_skipped = decoder.stats.bad_frames, decoder.stats.bytes_skipped
    await _count(outbox, tally, device)
    await outbox.close()
    return tally


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 32)
        out.append(data[pos : pos + size])
        pos += size
    return out


async def _capture(outbox: Outbox, pending: list[Reading], tally: Tally) -> None:
    if not pending:
        return
    start = time.perf_counter()
    await outbox.capture(pending)
    tally.capture_s += time.perf_counter() - start
    pending.clear()


async def _count(outbox: Outbox, tally: Tally, device: PtySerialDevice) -> None:
    rows = await outbox.list_readings(state="pending", limit=10_000_000)
    tally.readings_captured = len(rows)
    tally.wrong_spo2 = sum(not _plausible(r.reading, device) for r in rows)
    tally.readings_missing_spo2 = sum("spo2_missing" in r.reading.status for r in rows)
    tally.truncated = sum("interval_truncated" in r.reading.status for r in rows)


def _plausible(reading: Reading, device: PtySerialDevice) -> bool:
    """Whether the reading's SpO2 is a value the emulated patient had in its interval."""
    spo2 = reading.value("spo2")
    if spo2 is None or spo2.value is None:
        return True
    end_s = reading.received.monotonic_ns / 1e9
    truth = {device.vitals(end_s - k / 10).spo2 for k in range(int(INTERVAL_S * 10) + 11)}
    return spo2.value in truth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", action="append", choices=SOAK_PROTOCOLS)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    protocols = args.protocol or SOAK_PROTOCOLS
    print(f"serial soak: {args.minutes:g} simulated minutes per protocol, seed {args.seed}")
    print("(2-core shared noisy machine: wall times are indicative only)")
    header = "protocol      expected captured  diff  units_ok  samples  corrupt  bad_frames"
    print(header + "  skipped_B  finger_out  truncated  wrong_spo2  wall_s  capture_s")
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in protocols:
            start = time.perf_counter()
            tally = asyncio.run(
                soak(protocol, args.minutes, args.seed, Path(tmp) / f"{protocol}.db")
            )
            wall = time.perf_counter() - start
            expected = len(tally.expected_windows)
            print(
                f"{protocol:13} {expected:8} {tally.readings_captured:8} "
                f"{tally.readings_captured - expected:+5} {tally.units_intact:9} "
                f"{tally.samples_decoded:8} {tally.units_corrupted:8} {tally.bad_frames:11}"
                f" {tally.bytes_skipped:10} {tally.readings_missing_spo2:11} {tally.truncated:10}"
                f" {tally.wrong_spo2:11}"
                f" {wall:7.1f} {tally.capture_s:10.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
