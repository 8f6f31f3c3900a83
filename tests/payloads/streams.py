"""Continuous-stream messages, made deterministically from a seed, for wire-byte comparisons.

The compact encoder reads a plain stream sample through its stream's template (a regex
over the stored text, agent/payloads/stream_template.py) instead of parsing it. These
cases hold what that path must get exactly right: numbers of every form a value can take
(whole and fractional floats, ints, huge, tiny, negative, negative zero), specials (no
value), streams interleaved in one message, extras and status that make a stream's
text differ, non-ASCII text, unsynced hub clocks (monotonic time kept; re-stamped once
the clock synced, which a template must not be used for), non-UTC receipt times, and
one-reading messages. golden/compact_wire_streams.jsonl holds the bytes the encoder made
before templates existed (commit f6d36f1).
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

from agent.clock import HubTime
from agent.readings import (
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    StoredReading,
    make_reading,
)

SEED = 20261128
CASES = 120
BOOT = "5a4f7c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
PATIENT = PatientBinding("patiënt-0042", 3)
BASE = datetime(2026, 11, 28, 8, 0, 0, tzinfo=UTC)
# (device, kind, quantities, extra, status): a stream's constant part.
_Stream = tuple[DeviceIdentity, Kind, tuple[tuple[str, str], ...], dict[str, str], tuple[str, ...]]
STREAMS: tuple[_Stream, ...] = (
    (
        DeviceIdentity("oximeter", "nonin3150", "00:1C:05:AA:BB:CC", "Nonin"),
        Kind.SPO2,
        (("spo2", "%"), ("pulse_rate", "/min")),
        {},
        (),
    ),
    (
        DeviceIdentity("oximeter", "nonin3150", "00:1C:05:AA:BB:CC", "Nonin"),
        Kind.SPO2,
        (("spo2", "%"), ("pulse_rate", "/min"), ("perfusion_index", "%")),
        {"protocol": "nonin_df7", "ä": "°C"},
        ("marginal_perfusion",),
    ),
    (
        DeviceIdentity("chest-strap", "ble_hrs", "D0:0D:00:00:00:02", "Polar", "H10"),
        Kind.HEART_RATE,
        (("heart_rate", "/min"), ("rr_interval", "s")),
        {},
        (),
    ),
)
SPECIALS = ("nan", "nres", "+inf", "msmt_ongoing")


def _value(rng: random.Random) -> float | int:
    roll = rng.random()
    if roll < 0.4:
        return float(rng.randrange(40, 101))  # a whole number, stored as 97.0
    if roll < 0.6:
        return round(rng.uniform(0.0, 250.0), rng.choice((1, 2, 3)))
    if roll < 0.7:
        return rng.randrange(0, 300)  # an int
    return rng.choice(
        (-0.0, -3.5, 0.1 + 0.2, 1e20, 1e-7, 1e16, 123456789.0, 2.0**53, 2**70, -(2**70), -7)
    )


def _quantity(rng: random.Random, name: str, unit: str) -> Quantity:
    if rng.random() < 0.08:
        return Quantity(name, None, unit, rng.choice(SPECIALS))
    return Quantity(name, _value(rng), unit)


def _received(rng: random.Random, moment: datetime, *, synced: bool, mono: int) -> HubTime:
    if rng.random() < 0.05:
        moment = moment.astimezone(timezone(timedelta(hours=1)))  # stored as ISO text
    return HubTime(utc=moment, monotonic_ns=mono, boot_id=BOOT, clock_synced=synced)


def stream_cases(seed: int = SEED, count: int = CASES) -> list[tuple[list[StoredReading], HubTime]]:
    """``count`` messages of 1-50 stream samples; the same list for the same seed."""
    rng = random.Random(seed)
    cases = []
    seq = 1
    mono = 10**12
    moment = BASE
    for _ in range(count):
        size = rng.choice((1, 1, 2, 7, 20, 50))
        streams = rng.sample(range(len(STREAMS)), rng.choice((1, 1, 1, 2, 3)))
        synced = rng.random() < 0.6
        batch = []
        for _ in range(size):
            seq += rng.choice((1, 1, 1, 3))
            mono += rng.randrange(10**6, 10**9)
            moment += timedelta(microseconds=rng.randrange(1000, 1_000_000))
            device, kind, quantities, extra, status = STREAMS[rng.choice(streams)]
            reading = make_reading(
                device=device,
                patient=PATIENT,
                kind=kind,
                cadence=Cadence.CONTINUOUS,
                values=tuple(_quantity(rng, name, unit) for name, unit in quantities),
                received=_received(rng, moment, synced=synced, mono=mono),
                driver_version="1.0.0",
                status=status,
                extra=dict(extra),
            )
            reading_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            reading = dataclasses.replace(
                reading,
                reading_id=reading_id,
                natural_key=f"{device.device_id}:{kind}:id:{reading_id}",
            )
            batch.append(StoredReading(seq=seq, reading=reading, state="pending"))
        now_synced = rng.random() < 0.7
        now = HubTime(
            utc=moment + timedelta(seconds=5),
            monotonic_ns=mono + 5 * 10**9,
            boot_id=BOOT if rng.random() < 0.8 else "other-boot",
            clock_synced=now_synced,
        )
        cases.append((batch, now))
    return cases
