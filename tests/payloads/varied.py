"""Many varied readings, made deterministically from a seed, for wire-byte comparisons.

Every case is (batch, now): a message's worth of stored readings and the hub time it is
encoded at. The cases cover what a payload encoder must get exactly right: device times
(as sent, corrected, unset, in the future), status flags, extras, special values,
non-UTC and unsynced hub clocks (restamped, other boot, still unsynced), several
patients and devices in one message, gaps in seq.
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
    Reading,
    StoredReading,
    make_reading,
    natural_key_for,
)
from tests.payloads.factory import DEVICES, SAMPLES

SEED = 20261127
CASES = 160
BOOTS = ("0b7c1c2e-5f3a-4c55-9a21-3f1e2d4c5b6a", "9d2f8a10-1111-4e22-8c33-0a1b2c3d4e5f")
PATIENTS = (PatientBinding("patient-0042", 3), PatientBinding("patiënt-Ω-7", 1))
BARE_DEVICE = DeviceIdentity("bare", "serial-oximeter")
SPECIALS = ("nan", "nres", "+inf", "-inf", "msmt_ongoing")
STATUSES = ("irregular_pulse", "marginal_perfusion", "cuff_loose", "body_movement")
ZONES = ("UTC", "Europe/London", "America/New_York", "Asia/Kolkata")
BASE = datetime(2026, 11, 27, 9, 30, 15, tzinfo=UTC)


def varied_cases(seed: int = SEED, count: int = CASES) -> list[tuple[list[StoredReading], HubTime]]:
    """``count`` messages of 1-12 readings each; the same list for the same seed."""
    rng = random.Random(seed)
    cases = []
    seq = 1000
    for _ in range(count):
        size = rng.choice((1, 1, 1, 2, 3, 5, 8, 12))
        batch = []
        for _ in range(size):
            seq += rng.choice((1, 1, 1, 2, 7))
            batch.append(StoredReading(seq=seq, reading=_reading(rng), state="pending"))
        cases.append((batch, _now(rng)))
    return cases


def _hub_time(rng: random.Random, moment: datetime, *, synced: bool) -> HubTime:
    if rng.random() < 0.2:
        # A hub whose clock is set in another zone: the same instant, another offset.
        moment = moment.astimezone(timezone(timedelta(hours=rng.choice((-5, 1, 2, 5.5)))))
    return HubTime(
        utc=moment,
        monotonic_ns=rng.randrange(10**9, 10**13),
        boot_id=rng.choice(BOOTS),
        clock_synced=synced,
    )


def _now(rng: random.Random) -> HubTime:
    synced = rng.random() < 0.75
    moment = BASE + timedelta(seconds=rng.uniform(0, 7200))
    now = _hub_time(rng, moment, synced=synced)
    # Mostly far along the monotonic clock, so unsynced readings are restamped.
    return dataclasses.replace(now, monotonic_ns=now.monotonic_ns + 10**13)


def _values(rng: random.Random, kind: Kind) -> tuple[Quantity, ...]:
    values = []
    for quantity in SAMPLES[kind]["values"]:
        roll = rng.random()
        if roll < 0.1:
            values.append(Quantity(quantity.name, None, quantity.unit, rng.choice(SPECIALS)))
        elif roll < 0.4:
            values.append(dataclasses.replace(quantity, value=float(rng.randrange(1, 300))))
        else:
            value = round(rng.uniform(0.01, 250.0), rng.choice((1, 2, 3, 6)))
            values.append(dataclasses.replace(quantity, value=value))
    if rng.random() < 0.1:
        values = values[:1]
    return tuple(values)


def _reading(rng: random.Random) -> Reading:
    kind = rng.choice(list(Kind))
    synced = rng.random() < 0.6
    moment = BASE + timedelta(microseconds=rng.randrange(0, 3_600_000_000))
    if not synced and rng.random() < 0.5:
        moment = moment.replace(year=1970)  # no RTC, no NTP yet
    received = _hub_time(rng, moment, synced=synced)
    device_time = None
    if rng.random() < 0.5:
        device_time = moment.replace(tzinfo=None) - timedelta(seconds=rng.uniform(-900, 3600))
        device_time = device_time.replace(microsecond=0)
    reading = make_reading(
        device=DEVICES[kind] if rng.random() < 0.8 else BARE_DEVICE,
        patient=rng.choice(PATIENTS),
        kind=kind,
        cadence=rng.choice(list(Cadence)),
        values=_values(rng, kind),
        received=received,
        driver_version=rng.choice(("1.0.0", "2.1")),
        device_time=device_time,
        device_seq=rng.randrange(0, 65536) if rng.random() < 0.3 else None,
        device_clock_offset_s=round(rng.uniform(-120, 120), 3) if rng.random() < 0.3 else None,
        device_clock_unset=rng.random() < 0.05,
        timezone_name=rng.choice(ZONES),
        status=tuple(rng.sample(STATUSES, rng.choice((0, 0, 1, 2)))),
        extra=_extra(rng),
    )
    reading_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    key = natural_key_for(
        reading.device.device_id,
        kind,
        reading.values,
        reading.device_seq,
        reading.device_time,
        reading_id,
    )
    return dataclasses.replace(reading, reading_id=reading_id, natural_key=key)


def _extra(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.7:
        return {}
    keys = rng.sample(("protocol", "samples", "temperature_type", "note", "ä"), rng.randint(1, 3))
    return {key: rng.choice(("nonin_df7", "3", "ear", "x y", "°C", "")) for key in keys}
