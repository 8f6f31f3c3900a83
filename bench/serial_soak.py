"""Soak the real serial path with an hour of simulated oximeter data per protocol.

Per protocol: the pty emulator streams ``--speed`` times faster than the device (its
patient and its clock run that much faster too), and the agent's own path reads it:
``SerialTransport`` (pyserial on the event loop) -> ``SerialOximeterDriver`` (decoder,
interval aggregation at one simulated second) -> a real SQLite outbox. Faults follow a
fixed schedule of simulated time:

- a burst of 1-64 random bytes every 37 s, a damaged unit every 13 s (bad checksum,
  lost byte, noise byte inside an ASCII value);
- the finger out for 20 s every 7 min;
- an unplug every 10 min: the device falls quiet for 0.1 s of wall time (so that every
  complete unit it sent has been read: bytes still in the kernel when a cable is pulled
  are lost by the kernel, not by us), sends half a unit, then the pty is closed and the
  by-id link removed; 3 simulated seconds later a new pty appears behind the link, and
  the driver must find it and reopen it by itself.

Prints, per protocol:
- ``expected``: intact units the emulator wrote while the driver had the port open;
- ``captured``: samples in the outbox (the sum of every reading's ``samples``); more
  than expected would mean units made of noise, fewer means units lost;
- ``readings`` stored vs ``intervals``: the intervals of the driver's grid in which those
  units were written (a unit read late lands in the next one, so this is approximate);
- ``wrong``: readings whose SpO2 or pulse rate is not a value the emulator sent around
  that reading's interval;
- the decoder's counters, reconnects, and the process CPU time per unit.

``--noise-bursts N`` measures instead, with the decoders alone, how often line noise
becomes a sample in the formats without checksum: N bursts of 1-64 random bytes, each
followed by one real unit (far noisier than the soak: noise before every unit).

Usage: python -m bench.serial_soak [--protocol ID ...] [--minutes 60] [--speed 30] [--seed 1]
       python -m bench.serial_soak --noise-bursts 100000
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.clock import SystemClock
from agent.errors import DeviceError
from agent.outbox import Outbox
from drivers.base import DeviceState, DriverContext
from drivers.emulators.serial import PtySerialDevice
from drivers.emulators.serial_frames import STREAMS, Vitals
from drivers.serial.driver import build
from drivers.serial.protocols import PROTOCOLS
from drivers.serial.transport import READ_PERIOD_S
from tests.drivers.serial_support import PATIENT, RecordingReporter, settings_for

UNPLUG_EVERY_S = 600.0
UNPLUG_GAP_S = 3.0
QUIET_BEFORE_UNPLUG_WALL_S = 0.1
FINGER_OUT_EVERY_S = 420.0
FINGER_OUT_FOR_S = 20.0
GARBAGE_EVERY_S = 37.0
CORRUPT_EVERY_S = 13.0
SPOT_PERIOD_S = 5.0  # one DF13 spot check every 5 simulated seconds
SOAK_PROTOCOLS = sorted(PROTOCOLS)


class TimedReporter(RecordingReporter):
    """The tests' recording reporter, plus when each state was reported."""

    def __init__(self) -> None:
        super().__init__()
        self.state_times: list[tuple[float, DeviceState]] = []

    def set_state(self, state: DeviceState, reason: str | None = None) -> None:
        super().set_state(state, reason)
        self.state_times.append((time.monotonic(), state))


@dataclass
class Tally:
    expected: int = 0
    intervals: int = 0  # intervals (grid of the loop clock) in which expected units were sent
    captured_samples: int = 0
    readings: int = 0
    wrong: int = 0
    spo2_missing: int = 0
    truncated: int = 0
    reconnects: int = 0
    decode_errors: int = 0
    bytes_skipped: int = 0
    units_corrupted: int = 0
    units_cut: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


def _schedule(minutes: float) -> list[tuple[float, str]]:
    """(simulated second, fault) in time order."""
    end = minutes * 60.0
    events: list[tuple[float, str]] = []
    for every, name in ((GARBAGE_EVERY_S, "garbage"), (CORRUPT_EVERY_S, "corrupt")):
        events += [(k * every, name) for k in range(1, int(end / every) + 1)]
    for k in range(int(end / FINGER_OUT_EVERY_S) + 1):
        start = k * FINGER_OUT_EVERY_S + FINGER_OUT_FOR_S  # not in the very first seconds
        events += [(start, "finger_out"), (start + FINGER_OUT_FOR_S, "finger_in")]
    events += [(k * UNPLUG_EVERY_S, "unplug") for k in range(1, int(end / UNPLUG_EVERY_S) + 1)]
    return sorted(e for e in events if e[0] < end)


async def _inject(
    device: PtySerialDevice, events: list[tuple[float, str]], speed: float, rng: random.Random
) -> list[tuple[float, float]]:
    """Run the fault schedule; returns the (quiet from, plugged again) wall spans."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    away: list[tuple[float, float]] = []
    for sim_s, fault in events:
        await asyncio.sleep(max(start + sim_s / speed - loop.time(), 0.0))
        if fault == "garbage":
            device.inject_garbage(rng.randint(1, 64))
        elif fault == "corrupt":
            device.corrupt_next(1)
        elif fault in ("finger_out", "finger_in"):
            device.set_finger_out(fault == "finger_out")
        else:
            quiet_from = time.monotonic()
            device.set_silent(True)
            await asyncio.sleep(QUIET_BEFORE_UNPLUG_WALL_S)
            device.unplug(mid_unit=True)
            await asyncio.sleep(UNPLUG_GAP_S / speed)
            device.plug()
            device.set_silent(False)
            away.append((quiet_from, time.monotonic()))
    return away


def _open_spans(
    reporter: TimedReporter, away: list[tuple[float, float]], end: float
) -> list[tuple[float, float]]:
    """Wall spans in which the driver had the port open and the device was sending."""
    spans: list[tuple[float, float]] = []
    opened: float | None = None
    for at, state in reporter.state_times:
        if state is DeviceState.CONNECTED and opened is None:
            opened = at
        elif state is not DeviceState.CONNECTED and opened is not None:
            spans.append((opened, at))
            opened = None
    if opened is not None:
        spans.append((opened, end))
    # The device falls quiet before each unplug, before the driver sees the port go.
    cut = [(a, min(b, next((q for q, _ in away if a <= q < b), b))) for a, b in spans]
    return [(a, b) for a, b in cut if b > a]


def _within(spans: list[tuple[float, float]], t: float) -> bool:
    return any(a <= t < b for a, b in spans)


def _sent_around(log: list[tuple[float, int | None, int | None]], times: list[float],
                 start: float, end: float) -> tuple[set[int | None], set[int | None]]:  # fmt: skip
    """SpO2 and pulse values the emulator sent in [start, end] (and the one before)."""
    lo = max(bisect.bisect_left(times, start) - 1, 0)
    hi = bisect.bisect_right(times, end)
    window = log[lo:hi]
    return {spo2 for _, spo2, _ in window}, {pulse for _, _, pulse in window}


async def soak(protocol: str, minutes: float, speed: float, seed: int, tmp: Path) -> Tally:
    """One protocol's simulated hour through the real path; returns the tally."""
    rng = random.Random(seed)
    interval_s = 1.0 / speed  # one simulated second
    device = PtySerialDevice(
        protocol,
        link=tmp / f"by-id-{protocol}",
        speed=speed,
        seed=seed,
        spot_period_s=SPOT_PERIOD_S,
        record=True,
    )
    device.plug()
    outbox = await Outbox.open(tmp / f"{protocol}.db")
    reporter = TimedReporter()
    ctx = DriverContext(
        sink=outbox,
        clock=SystemClock(),
        reporter=reporter,
        patient=PATIENT,
        timezone_name="Europe/London",
    )
    driver = build(settings_for(device.port, protocol, interval_s=interval_s), ctx)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    streaming = asyncio.create_task(device.run())
    reading = asyncio.create_task(driver.run())
    try:
        away = await _inject(device, _schedule(minutes), speed, rng)
        await asyncio.sleep(max(minutes * 60 / speed - (time.perf_counter() - wall0), 0.0))
        end = time.monotonic()
        device.set_silent(True)
        await asyncio.sleep(QUIET_BEFORE_UNPLUG_WALL_S)  # let the driver read the last units
    finally:
        for task in (reading, streaming):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, DeviceError):
                await task
        await driver.close()
        device.close()
    tally = Tally(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0)
    spans = _open_spans(reporter, away, end)
    sent_open = [t for t, _, _ in device.sent_log if _within(spans, t)]
    tally.expected = len(sent_open)
    tally.intervals = len({int(t / interval_s) for t in sent_open})
    rows = await outbox.list_readings(state="pending", limit=10_000_000)
    await outbox.close()
    times = [t for t, _, _ in device.sent_log]
    slack_s = interval_s + 2 * READ_PERIOD_S
    for row in rows:
        r = row.reading
        tally.readings += 1
        tally.captured_samples += int(r.extra["samples"])
        tally.spo2_missing += "spo2_missing" in r.status
        tally.truncated += "interval_truncated" in r.status
        end_s = r.received.monotonic_ns / 1e9
        spo2_sent, pulse_sent = _sent_around(device.sent_log, times, end_s - slack_s, end_s)
        spo2, pulse = r.value("spo2"), r.value("pulse_rate")
        wrong_spo2 = spo2 is not None and spo2.value is not None and spo2.value not in spo2_sent
        wrong_pulse = (
            pulse is not None and pulse.value is not None and pulse.value not in pulse_sent
        )
        tally.wrong += wrong_spo2 or wrong_pulse
    tally.reconnects = sum(s is DeviceState.CONNECTED for _, s in reporter.state_times) - 1
    tally.decode_errors = reporter.counters.get("decode_errors", 0)
    tally.bytes_skipped = reporter.counters.get("bytes_skipped", 0)
    tally.units_corrupted, tally.units_cut = device.units_corrupted, device.units_cut
    return tally


def noise_odds(protocol: str, bursts: int, seed: int) -> tuple[int, set[tuple[object, ...]]]:
    """Samples made of noise when a burst comes before every unit; and their values."""
    rng = random.Random(seed)
    decoder = PROTOCOLS[protocol].make_decoder()
    unit = STREAMS[protocol].encode(Vitals(spo2=97, pulse_rate=72), 0)
    (truth, *_) = decoder.feed(unit * 3)
    phantoms: list[tuple[object, ...]] = []
    for _ in range(bursts):
        noise = rng.randbytes(rng.randint(1, 64))
        samples = decoder.feed(noise + unit)
        phantoms += [(s.spo2, s.pulse_rate, s.status) for s in samples if s != truth]
    return len(phantoms), set(phantoms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", action="append", choices=SOAK_PROTOCOLS)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--speed", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise-bursts", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # each unplug logs a warning; counted below
    if args.noise_bursts:
        for protocol in args.protocol or sorted(STREAMS):
            count, values = noise_odds(protocol, args.noise_bursts, args.seed)
            print(f"{protocol:13} {count} samples made of noise in {args.noise_bursts} bursts")
            for value in sorted(values, key=str)[:5]:
                print(f"    e.g. spo2, pulse, flags = {value}")
        return 0
    protocols = args.protocol or SOAK_PROTOCOLS
    print(
        f"serial soak, real path (pty -> transport -> driver -> outbox): {args.minutes:g} "
        f"simulated minutes per protocol at {args.speed:g}x, seed {args.seed}"
    )
    print(
        "protocol      expected captured  diff intervals readings wrong corrupted cut reconnects"
        " decode_errors skipped_B spo2_missing truncated wall_s cpu_us/unit"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in protocols:
            t = asyncio.run(soak(protocol, args.minutes, args.speed, args.seed, Path(tmp)))
            per_unit = 1e6 * t.cpu_s / max(t.expected, 1)
            print(
                f"{protocol:13} {t.expected:8} {t.captured_samples:8}"
                f" {t.captured_samples - t.expected:+5} {t.intervals:9} {t.readings:8} {t.wrong:5}"
                f" {t.units_corrupted:9} {t.units_cut:3} {t.reconnects:10}"
                f" {t.decode_errors:13} {t.bytes_skipped:9} {t.spo2_missing:12}"
                f" {t.truncated:9} {t.wall_s:6.1f} {per_unit:11.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
