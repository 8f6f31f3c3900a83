"""Serial decoders on whole streams: chunking, corruption, arbitrary bytes, purity."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import datetime
from typing import get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.emulators.serial_frames import (
    STREAMS,
    Vitals,
    corrupt,
    encode_df13,
    encode_masimo,
)
from drivers.serial.aggregate import Interval, IntervalAggregator, merge
from drivers.serial.protocol_ids import ProtocolId
from drivers.serial.protocols import PROTOCOLS, Sample

WHEN = datetime(2026, 11, 27, 10, 30)  # noqa: DTZ001 - device wall time


def _unit(protocol: str, vitals: Vitals, i: int) -> bytes:
    if protocol == "nonin-df13":
        return encode_df13(vitals, WHEN.replace(second=i % 60))
    if protocol == "masimo-ascii":
        return encode_masimo(vitals, WHEN.replace(second=i % 60))
    return STREAMS[protocol].encode(vitals, i)


def _drifting(i: int) -> Vitals:
    """A patient whose values move the way an oximeter's display values do: slowly."""
    return Vitals(spo2=94 + i % 5, pulse_rate=60 + i)


def _mixed_stream(protocol: str, seed: int) -> tuple[bytes, int]:
    """Good units interleaved with garbage and corrupted units; returns (stream, good)."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    good = 0
    for i in range(60):
        vitals = _drifting(i)
        roll = rng.random()
        if roll < 0.1:
            parts.append(corrupt(protocol, _unit(protocol, vitals, i)))
        elif roll < 0.2:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 12))))
        else:
            parts.append(_unit(protocol, vitals, i))
            good += 1
    return b"".join(parts), good


def _feed_in_chunks(protocol: str, data: bytes, sizes: list[int]) -> tuple[list[Sample], object]:
    decoder = PROTOCOLS[protocol].make_decoder()
    out: list[Sample] = []
    pos = 0
    for size in sizes:
        out += decoder.feed(data[pos : pos + size])
        pos += size
    out += decoder.feed(data[pos:])
    return out, decoder.stats


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_byte_by_byte_equals_whole_buffer(protocol: str) -> None:
    data, _ = _mixed_stream(protocol, seed=7)
    whole, whole_stats = _feed_in_chunks(protocol, data, [])
    single, single_stats = _feed_in_chunks(protocol, data, [1] * len(data))
    rng = random.Random(3)
    chunked, chunked_stats = _feed_in_chunks(
        protocol, data, [rng.randint(1, 40) for _ in range(len(data) // 10)]
    )
    assert whole == single == chunked
    assert whole_stats == single_stats == chunked_stats


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_corruption_never_becomes_a_sample(protocol: str) -> None:
    # Garbage can by chance look like a frame of the unchecked protocols, so the claim
    # tested is: every good unit is decoded, every corrupted unit is rejected.
    decoder = PROTOCOLS[protocol].make_decoder()
    samples: list[Sample] = []
    good = 0
    for i in range(40):
        vitals = _drifting(i)
        if i % 3 == 1:
            samples += decoder.feed(corrupt(protocol, _unit(protocol, Vitals(50, 250), i)))
        else:
            samples += decoder.feed(_unit(protocol, vitals, i))
            good += 1
    # The last unit may be held back until more bytes show it is complete.
    assert good - 1 <= len(samples) <= good
    assert all(s.spo2 != 50 and s.pulse_rate != 250 for s in samples)
    assert decoder.stats.bad_frames + decoder.stats.bytes_skipped > 0


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_resync_after_a_cut_in_the_middle_of_a_unit(protocol: str) -> None:
    unit = _unit(protocol, Vitals(spo2=96, pulse_rate=66), 0)
    decoder = PROTOCOLS[protocol].make_decoder()
    tail = _unit(protocol, Vitals(spo2=94, pulse_rate=77), 1) * 3
    samples = decoder.feed(unit[len(unit) // 2 :] + tail)
    assert [(s.spo2, s.pulse_rate) for s in samples][-2:] == [(94, 77), (94, 77)]


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200), cut=st.integers(min_value=0, max_value=200))
def test_arbitrary_bytes_never_raise(protocol: str, data: bytes, cut: int) -> None:
    decoder = PROTOCOLS[protocol].make_decoder()
    samples = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    for s in samples:
        assert s.spo2 is None or 0 <= s.spo2 <= 100
        assert s.pulse_rate is None or 0 <= s.pulse_rate <= 511
    assert decoder.stats.bytes_skipped <= len(data)


def test_codecs_import_no_io_modules() -> None:
    modules = [
        "drivers.serial.protocols",
        "drivers.serial.protocols.nonin",
        "drivers.serial.protocols.contec",
        "drivers.serial.protocols.masimo",
        "drivers.serial.aggregate",
        "drivers.emulators.serial_frames",
    ]
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        "io = {'asyncio', 'serial', 'sqlite3', 'paho', 'bleak', 'select', 'socket'}\n"
        "bad = io & set(sys.modules)\n"
        "print(sorted(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"


# --- aggregation -------------------------------------------------------------------------


def _s(spo2: int | None, pr: int | None, *status: str) -> Sample:
    return Sample(spo2=spo2, pulse_rate=pr, perfusion_index=None, status=tuple(status))


def test_interval_keeps_worst_status_and_median_of_valid_values() -> None:
    merged = merge(
        [
            _s(97, 70),
            _s(None, None, "sensor_off", "spo2_missing", "pulse_rate_missing"),
            _s(96, 71),
            _s(96, 72),
            _s(31, 250),  # a phantom frame made of line noise, last in the interval
        ]
    )
    # The value, and that part of the interval had none (the finger was out).
    assert merged.sample == _s(
        96, 71, "pulse_rate_partly_missing", "sensor_off", "spo2_partly_missing"
    )
    assert merged.sample_count == 5


def test_interval_without_a_gap_has_no_partly_missing_flag() -> None:
    assert merge([_s(97, 70), _s(96, 71)]).sample == _s(96, 70)


def test_perfusion_index_missing_in_part_of_the_interval_is_flagged() -> None:
    with_pi = Sample(spo2=97, pulse_rate=70, perfusion_index=3.5)
    without = Sample(97, 70, None, status=("perfusion_index_missing",))
    merged = merge([with_pi, without, without])
    assert merged.sample.perfusion_index == 3.5
    assert merged.sample.status == ("perfusion_index_partly_missing",)


def test_interval_all_missing_is_missing() -> None:
    merged = merge([_s(None, None, "spo2_missing", "pulse_rate_missing", "sensor_off")] * 2)
    assert merged.sample == _s(None, None, "pulse_rate_missing", "sensor_off", "spo2_missing")


def test_aggregator_emits_one_interval_per_period() -> None:
    agg = IntervalAggregator(1.0)
    closed = []
    for i in range(75 * 3):  # three seconds of 75 frames/s
        closed += agg.add(_s(90 + i % 5, 70), now_s=100.0 + i / 75)
    closed += agg.due(103.0)
    assert [c.sample_count for c in closed] == [75, 75, 75]


def test_spot_samples_are_never_merged() -> None:
    agg = IntervalAggregator(1.0)
    spot = Sample(spo2=95, pulse_rate=70, perfusion_index=None, spot=True)
    assert agg.add(spot, 1.0) == agg.add(spot, 1.1) == [Interval(spot, 1)]
    assert agg.deadline_s is None


def test_devices_with_the_same_interval_close_together() -> None:
    # Two oximeters that started streaming at different moments: their readings close at
    # the same instant, so they share one COMMIT and one publish.
    nonin, contec = IntervalAggregator(1.0), IntervalAggregator(1.0)
    nonin.add(_s(97, 70), now_s=100.3)
    contec.add(_s(95, 80), now_s=100.75)
    assert nonin.deadline_s == contec.deadline_s == 101.0
    first = nonin.add(_s(96, 71), now_s=101.0)
    assert [c.sample_count for c in first] == [1]  # the rest of the first grid interval
    assert nonin.deadline_s == 102.0


def test_an_interval_after_a_gap_is_its_grid_interval() -> None:
    agg = IntervalAggregator(2.0)
    agg.add(_s(97, 70), now_s=10.5)
    closed = agg.add(_s(96, 71), now_s=17.1)  # the device was silent for 6 s
    assert [c.sample.spo2 for c in closed] == [97]
    assert agg.deadline_s == 18.0


def test_every_protocol_a_config_may_name_has_a_decoder() -> None:
    # The ids live apart from the decoders (config validation imports only the ids).
    assert set(get_args(ProtocolId)) == set(PROTOCOLS)
