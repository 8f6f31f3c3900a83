"""The soak's faults injected into every serial decoder: no value is ever a wrong one.

Each example is a stream from the pty emulator's own encoder (a drifting patient, finger
out and back) with the faults bench/serial_soak.py injects: bursts of 1-64 random bytes
(line noise), units damaged the way the line damages them (``corrupt``: a bad checksum,
a lost byte, a noise byte inside an ASCII value), and unplugs that cut a unit in half
(the driver then resets the decoder). Every decoded sample must be one the emulator
sent intact, in the order sent: never a value made of noise or of a damaged unit.

The noise is random bytes from a seeded generator, as on a real line, not bytes chosen
to mimic a unit: in a format without a checksum (Nonin DF8, Contec V5/V7, ASCII) noise
that copies a valid unit carrying the patient's current values cannot be told from one
(docs/serial.md gives the odds). The examples are derandomised so that odds of about
one in a million per burst never make this test flaky on a shared machine.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.emulators.serial import PtySerialDevice
from drivers.emulators.serial_frames import corrupt
from drivers.serial.protocols import PROTOCOLS, Sample

if TYPE_CHECKING:
    from drivers.serial.protocols import Decoder

EVENTS = st.lists(
    st.sampled_from(["unit"] * 8 + ["garbage", "corrupt", "cut", "finger"]),
    min_size=4,
    max_size=120,
)


def _reference(protocol: str, unit: bytes) -> Sample:
    """What a unit says, decoded on its own (twice over: a bit-7 unit needs a successor)."""
    return PROTOCOLS[protocol].make_decoder().feed(unit + unit)[0]


def _feed_chunked(decoder: Decoder, data: bytes, rng: random.Random) -> list[Sample]:
    out: list[Sample] = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 32)
        out += decoder.feed(data[pos : pos + size])
        pos += size
    return out


def _run(protocol: str, events: list[str], seed: int) -> tuple[list[Sample], list[Sample], int]:
    """Feed the faulty stream; returns (decoded, sent intact, faults injected)."""
    rng = random.Random(seed)
    device = PtySerialDevice(protocol, seed=seed)  # its encoder and patient, no pty
    decoder = PROTOCOLS[protocol].make_decoder()
    decoded: list[Sample] = []
    sent: list[Sample] = []
    finger_out = False
    faults = 0
    for index, event in enumerate(events):
        unit = device.next_unit(index / device.units_per_s)
        if event == "finger":
            finger_out = not finger_out
            device.set_finger_out(finger_out)
        elif event == "cut":  # unplugged mid-unit: half a unit, then a fresh session
            decoded += _feed_chunked(decoder, unit[: len(unit) // 2], rng)
            decoder.reset()
            faults += 1
            continue
        elif event == "corrupt":
            decoded += _feed_chunked(decoder, corrupt(protocol, unit), rng)
            faults += 1
            continue
        elif event == "garbage":
            noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            decoded += _feed_chunked(decoder, noise, rng)
            faults += 1
        sent.append(_reference(protocol, unit))
        decoded += _feed_chunked(decoder, unit, rng)
    return decoded, sent, faults


def _same(decoded: Sample, sent: Sample) -> bool:
    """Equal, except that noise glued to the front of a Masimo line may cost its time
    stamp (used only for the clock offset): a stamp lost is allowed, a wrong one is not."""
    if decoded.device_time is None and not decoded.spot:
        return dataclasses.replace(decoded, device_time=sent.device_time) == sent
    return decoded == sent


def _in_order_within(decoded: list[Sample], sent: list[Sample]) -> bool:
    """Whether ``decoded`` is ``sent`` with some samples left out (nothing added)."""
    remaining = iter(sent)
    return all(any(_same(sample, candidate) for candidate in remaining) for sample in decoded)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=EVENTS, seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_soak_faults_never_become_a_wrong_value(
    protocol: str, events: list[str], seed: int
) -> None:
    decoded, sent, faults = _run(protocol, events, seed)
    assert _in_order_within(decoded, sent), "a sample the emulator never sent was decoded"
    # Liveness, loosely: a fault may cost the units next to it, not the stream.
    assert len(decoded) >= len(sent) - 2 * faults - events.count("finger") - 1


def test_the_check_sees_a_wrong_value() -> None:
    # The property above must be able to fail: one noise unit in the stream is caught.
    ok = _reference("nonin-df8", bytes([0x80, 0x48, 0x61, 0x00]))
    phantom = Sample(spo2=31, pulse_rate=160, perfusion_index=None)
    assert _in_order_within([ok, ok], [ok, ok, ok])
    assert not _in_order_within([ok, phantom], [ok, ok, ok])
    assert not _in_order_within([ok, ok], [ok])
