"""Thin a high-rate sample stream to one value per interval, keeping the worst status.

Pure: the caller passes the (monotonic) time in seconds; nothing here reads a clock.

Policy (docs/serial.md): an interval's status is the union of every sample's flags, so
a finger-out or artifact lasting one frame is never hidden. Its representative value is,
per quantity, the *median* (the lower middle one, so always a value the device sent) of
the interval's valid values: oximeters update SpO2 about once a second, so within an
interval the values barely move, and the median keeps a rare phantom frame decoded from
line noise in a format without checksum (Contec, Nonin DF8) from becoming the reading,
which "last value" would not. A quantity is missing (``spo2_missing``) only if no
sample in the interval had it; when only part of the interval had no valid value, the
reading carries the value and ``spo2_partly_missing`` (and so on), so a clinician sees
that the finger slipped out for part of it.

Intervals sit on a grid of the caller's clock, ``[k * interval_s, (k + 1) * interval_s)``:
every device with the same interval closes its intervals at the same instant, so their
readings share one outbox COMMIT and one publish instead of one each. The first interval
after a (re)connection is what is left of its grid interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from drivers.serial.protocols.base import (
    PARTLY_MISSING,
    PERFUSION_INDEX_MISSING,
    PULSE_RATE_MISSING,
    SPO2_MISSING,
    Sample,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

_MISSING_FLAGS: Final = frozenset({SPO2_MISSING, PULSE_RATE_MISSING, PERFUSION_INDEX_MISSING})
INTERVAL_TRUNCATED: Final = "interval_truncated"


@dataclass(frozen=True, slots=True)
class Interval:
    """One aggregated reading's worth of samples.

    Attributes:
        sample: the representative sample (values and merged status).
        sample_count: how many decoded samples it summarises.
    """

    sample: Sample
    sample_count: int


@dataclass(slots=True)
class _Window:
    start_s: float
    samples: list[Sample] = field(default_factory=list)


class IntervalAggregator:
    """Collect samples into fixed intervals; spot samples pass straight through."""

    def __init__(self, interval_s: float) -> None:
        """``interval_s`` > 0 is the length of one aggregation interval."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._interval_s = interval_s
        self._window: _Window | None = None

    @property
    def deadline_s(self) -> float | None:
        """When the open interval ends (the caller should call ``due`` then), or None."""
        return None if self._window is None else self._window.start_s + self._interval_s

    def add(self, sample: Sample, now_s: float) -> list[Interval]:
        """Add a sample received at ``now_s``; return any interval this closed."""
        if sample.spot:
            return [Interval(sample, 1)]
        closed = self.due(now_s)
        if self._window is None:
            self._window = _Window(math.floor(now_s / self._interval_s) * self._interval_s)
        self._window.samples.append(sample)
        return closed

    def due(self, now_s: float) -> list[Interval]:
        """Close the open interval if ``now_s`` is at or past its end."""
        deadline = self.deadline_s
        if deadline is None or now_s < deadline:
            return []
        return self.flush()

    def flush(self, *, truncated: bool = False) -> list[Interval]:
        """Close the open interval now (``truncated``: it was cut short by an unplug)."""
        window, self._window = self._window, None
        if window is None or not window.samples:
            return []
        return [merge(window.samples, truncated=truncated)]


def _median_valid(values: Iterable[float | None]) -> float | None:
    # The lower median, as statistics.median_low gives it, without importing statistics
    # into a running agent that needs nothing else from it.
    valid = sorted(value for value in values if value is not None)
    return valid[(len(valid) - 1) // 2] if valid else None


def merge(samples: list[Sample], *, truncated: bool = False) -> Interval:
    """Merge an interval's samples by the policy in the module docstring."""
    spo2 = _median_valid(s.spo2 for s in samples)
    pulse_rate = _median_valid(s.pulse_rate for s in samples)
    perfusion = _median_valid(s.perfusion_index for s in samples)
    flags = {f for s in samples for f in s.status if f not in _MISSING_FLAGS}
    if spo2 is None:
        flags.add(SPO2_MISSING)
    if pulse_rate is None:
        flags.add(PULSE_RATE_MISSING)
    if perfusion is None and any(PERFUSION_INDEX_MISSING in s.status for s in samples):
        flags.add(PERFUSION_INDEX_MISSING)
    marked = {f for s in samples for f in s.status if f in _MISSING_FLAGS}
    flags.update(PARTLY_MISSING[f] for f in marked - flags)  # a value, but not throughout
    if truncated:
        flags.add(INTERVAL_TRUNCATED)
    last = samples[-1]
    merged = Sample(
        spo2=None if spo2 is None else int(spo2),
        pulse_rate=None if pulse_rate is None else int(pulse_rate),
        perfusion_index=perfusion,
        status=tuple(sorted(flags)),
        device_time=last.device_time,
        serial_number=_last_serial(samples),
    )
    return Interval(merged, len(samples))


def _last_serial(samples: list[Sample]) -> str | None:
    return next((s.serial_number for s in reversed(samples) if s.serial_number), None)
