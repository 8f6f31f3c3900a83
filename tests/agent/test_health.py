"""Health: a 1 Hz stream does not cost a retained device-status publish per sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.clock import HubTime
from agent.health import READING_STATUS_MIN_INTERVAL_S, Health, device_alarm_name
from drivers.base import DeviceState

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class ManualClock:
    """Our Clock seam, moved by the test."""

    def __init__(self, *, synced: bool = True) -> None:
        self.elapsed_s = 0.0
        self.synced = synced

    def now(self) -> HubTime:
        return HubTime(
            utc=T0 + timedelta(seconds=self.elapsed_s),
            monotonic_ns=int(self.elapsed_s * 1e9),
            boot_id="b",
            clock_synced=self.synced,
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


def _saved_status(clock: ManualClock, seen_ago_s: float) -> dict[str, object]:
    """What the last run's state file holds for a cuff seen ``seen_ago_s`` ago."""
    earlier = Health(hub_id="hub", clock=clock)
    clock.elapsed_s -= seen_ago_s
    earlier.device("cuff").note_reading("blood_pressure", clock.now().utc)
    earlier.devices["cuff"].set_battery(80)
    saved = earlier.devices["cuff"].status(clock.now())
    clock.elapsed_s += seen_ago_s
    return saved


def test_a_restart_keeps_history_and_ages_it_by_the_wall_clock() -> None:
    clock = ManualClock()
    clock.elapsed_s = 7200.0
    saved = _saved_status(clock, seen_ago_s=1800)  # measured half an hour before the restart
    health = Health(hub_id="hub", clock=clock)
    health.device("cuff", expected_interval_s=3600)
    health.restore_devices({"cuff": saved, "gone": saved}, clock.now())
    status = health.devices["cuff"].status(clock.now())
    assert status["state"] == "disconnected"
    assert status["last_reading_at"] == saved["last_reading_at"]
    assert status["last_reading_kind"] == "blood_pressure"
    assert status["battery_percent"] == 80
    assert "gone" not in health.devices  # no longer configured: not resurrected
    clock.elapsed_s += 1799  # 59 min 59 s since last seen: still within the interval
    assert health.devices["cuff"].status(clock.now())["state"] == "disconnected"
    clock.elapsed_s += 2  # past the hour: not seen, as if the agent had never stopped
    assert health.devices["cuff"].status(clock.now())["state"] == "not_seen"


def test_with_an_unsynced_clock_restored_history_starts_not_seen() -> None:
    # The hub's clock cannot say how long ago "last seen" was: do not claim it is recent.
    clock = ManualClock(synced=False)
    clock.elapsed_s = 7200.0
    saved = _saved_status(clock, seen_ago_s=60)
    health = Health(hub_id="hub", clock=clock)
    health.device("cuff", expected_interval_s=3600)
    health.restore_devices({"cuff": saved}, clock.now())
    status = health.devices["cuff"].status(clock.now())
    assert status["state"] == "not_seen"
    assert status["last_seen"] == saved["last_seen"]


def test_a_damaged_state_file_entry_restores_nothing_and_raises_nothing() -> None:
    clock = ManualClock()
    health = Health(hub_id="hub", clock=clock)
    health.device("cuff", expected_interval_s=3600)
    damaged = {"last_seen": "yesterday", "last_reading_at": 12, "battery_percent": True}
    health.restore_devices({"cuff": damaged}, clock.now())
    status = health.devices["cuff"].status(clock.now())
    assert (status["state"], status["last_seen"], status["battery_percent"]) == (
        "not_seen",
        None,
        None,
    )


def test_a_reload_carries_devices_alarms_and_counters_over() -> None:
    clock = ManualClock()
    old = Health(hub_id="hub", clock=clock)
    old.device("cuff", expected_interval_s=3600).note_reading("blood_pressure", clock.now().utc)
    old.publish.readings_acked = 42
    old.raise_alarm("readings_rejected", "0x87")
    new = Health(hub_id="hub", clock=clock)
    new.device("cuff", expected_interval_s=3600)
    new.carry_over(old)
    assert new.devices["cuff"].status(clock.now()) == old.devices["cuff"].status(clock.now())
    assert new.publish.readings_acked == 42
    assert "readings_rejected" in new.alarms


def test_a_connection_silent_past_its_interval_is_only_seen() -> None:
    clock = ManualClock()
    health = Health(hub_id="hub", clock=clock)
    oxi = health.device("oxi", expected_interval_s=60)
    oxi.set_state(DeviceState.CONNECTED)  # the port opened; the oximeter is off
    clock.elapsed_s = 59
    assert oxi.status(clock.now())["state"] == "connected"
    clock.elapsed_s = 61
    assert oxi.status(clock.now())["state"] == "seen"
    oxi.note_reading("spo2", clock.now().utc)  # switched on
    assert oxi.status(clock.now())["state"] == "connected"


def test_a_device_needing_a_person_raises_a_hub_alarm_until_it_reads_again() -> None:
    clock = ManualClock()
    health = Health(hub_id="hub", clock=clock)
    cuff = health.device("cuff")
    cuff.set_state(DeviceState.ERROR, "serial mismatch: expected A, device reports B")
    alarm = health.alarms[device_alarm_name("cuff")]
    assert "serial mismatch" in alarm.detail
    clock.elapsed_s = 120.0  # retried: seen, connected, refused again
    cuff.set_state(DeviceState.SEEN)
    cuff.set_state(DeviceState.ERROR, "serial mismatch: expected A, device reports B")
    assert health.alarms[device_alarm_name("cuff")].since == alarm.since
    cuff.note_reading("blood_pressure", clock.now().utc)  # the right cuff is back
    assert device_alarm_name("cuff") not in health.alarms


def test_a_reload_drops_the_alarm_of_a_device_no_longer_configured() -> None:
    clock = ManualClock()
    old = Health(hub_id="hub", clock=clock)
    old.device("cuff").set_state(DeviceState.ERROR, "pairing failed")
    old.device("scale").set_state(DeviceState.ERROR, "pairing failed")
    new = Health(hub_id="hub", clock=clock)
    new.device("scale")  # the cuff was removed from the config
    new.carry_over(old)
    assert set(new.alarms) == {device_alarm_name("scale")}
