"""Health: a 1 Hz stream does not cost a retained device-status publish per sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.clock import HubTime
from agent.health import READING_STATUS_MIN_INTERVAL_S, Health

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class ManualClock:
    """Our Clock seam, moved by the test."""

    def __init__(self) -> None:
        self.elapsed_s = 0.0

    def now(self) -> HubTime:
        return HubTime(
            utc=T0 + timedelta(seconds=self.elapsed_s),
            monotonic_ns=int(self.elapsed_s * 1e9),
            boot_id="b",
            clock_synced=True,
        )


def test_stream_readings_republish_device_status_at_most_once_a_minute() -> None:
    clock = ManualClock()
    health = Health(hub_id="hub", clock=clock)
    health.device("oxi")
    health.take_changed_devices()
    published = 0
    for second in range(180):
        clock.elapsed_s = float(second)
        health.note_reading("oxi", "spo2", clock.now().utc)
        published += len(health.take_changed_devices())
    assert published == 180 // int(READING_STATUS_MIN_INTERVAL_S)
    status = health.devices["oxi"].status(clock.now())
    assert status["last_reading_at"].startswith("2026-11-27T10:02:59")  # still the latest


def test_a_new_kind_of_reading_is_published_at_once() -> None:
    clock = ManualClock()
    health = Health(hub_id="hub", clock=clock)
    health.note_reading("cuff", "blood_pressure", clock.now().utc)
    health.take_changed_devices()
    clock.elapsed_s = 5
    health.note_reading("cuff", "spo2", clock.now().utc)
    assert health.take_changed_devices() == {"cuff"}
