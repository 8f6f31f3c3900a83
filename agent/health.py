"""The hub's in-memory health model: per-device state, publish counters and alarms.

Drivers report through ``Health.device(id)`` (a ``drivers.base.DeviceReporter``), the
capture path calls ``note_reading``, the publisher updates ``Health.publish``. Nothing
here does I/O: ``agent/status.py`` turns ``snapshot()`` into retained MQTT messages.
No reading values and no patient identifiers are ever stored here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from drivers.base import DeviceState

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from agent.clock import Clock, HubTime
    from agent.readings import DeviceIdentity

NS_PER_S: Final = 1_000_000_000
READING_STATUS_MIN_INTERVAL_S: Final = 60.0
READING_STATUS_MIN_NS: Final = int(READING_STATUS_MIN_INTERVAL_S * NS_PER_S)
DEVICE_ERROR_ALARM: Final = "device_error"  # + ":<device id>", one alarm per device


def device_alarm_name(device_id: str) -> str:
    """The hub alarm a device raises while it needs a person (state ERROR)."""
    return f"{DEVICE_ERROR_ALARM}:{device_id}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _parse_iso(text: object) -> datetime | None:
    """A time ``_iso`` wrote, or None for anything else (an old or damaged state file)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# What a device's health knows beyond its current session (carried over on reload).
_HISTORY_FIELDS: Final = (
    "state",
    "reason",
    "last_seen",
    "last_seen_mono_ns",
    "last_reading_at",
    "last_reading_kind",
    "battery_percent",
    "rssi_dbm",
    "clock_offset_s",
    "identity",
)


class DeviceHealth:
    """One device's health; implements ``drivers.base.DeviceReporter``."""

    def __init__(
        self,
        device_id: str,
        clock: Clock,
        on_change: Callable[[str], None],
        expected_interval_s: float | None = None,
        alarms: Health | None = None,
    ) -> None:
        """Start as never seen. ``on_change(device_id)`` fires when the status changes.

        ``alarms`` (the hub's Health) gets a ``device_error:<id>`` alarm while the device
        needs a person: raised when it enters ERROR (a wrong device at the patient's home,
        a refused pairing...), cleared by its next reading. Retries in between (seen,
        connected, refused again) do not clear it.
        """
        self.device_id = device_id
        self.expected_interval_s = expected_interval_s
        self.state = DeviceState.NOT_SEEN
        self.reason: str | None = None
        self.last_seen: datetime | None = None
        self.last_seen_mono_ns: int | None = None
        self.last_reading_at: datetime | None = None
        self.last_reading_kind: str | None = None
        self.battery_percent: int | None = None
        self.rssi_dbm: int | None = None
        self.clock_offset_s: float | None = None
        self.identity: DeviceIdentity | None = None
        self.counters: dict[str, int] = {}
        self._clock = clock
        self._on_change = on_change
        self._alarms = alarms
        self._reading_notified_ns: int | None = None

    def _seen(self) -> None:
        now = self._clock.now()
        self.last_seen = now.utc
        self.last_seen_mono_ns = now.monotonic_ns

    def set_state(self, state: DeviceState, reason: str | None = None) -> None:
        """Availability changed; ``reason`` is actionable text for ERROR."""
        changed = (state, reason) != (self.state, self.reason)
        self.state, self.reason = state, reason
        if state in (DeviceState.CONNECTED, DeviceState.SEEN):
            self._seen()
        if state is DeviceState.ERROR and self._alarms is not None:
            self._alarms.raise_alarm(
                device_alarm_name(self.device_id), f"{self.device_id}: {reason or 'error'}"
            )
        if changed:
            self._on_change(self.device_id)

    def set_identity(self, identity: DeviceIdentity) -> None:
        """What the device says of itself."""
        self.identity = identity

    def set_battery(self, percent: int) -> None:
        """Battery level in percent; a change is published."""
        if percent != self.battery_percent:
            self.battery_percent = percent
            self._on_change(self.device_id)

    def set_signal(self, rssi_dbm: int) -> None:
        """Last received signal strength (BLE); too noisy to publish on every change."""
        self.rssi_dbm = rssi_dbm
        self._seen()

    def set_clock_offset(self, offset_s: float) -> None:
        """Measured device clock minus hub clock, in seconds."""
        self.clock_offset_s = offset_s

    def count(self, counter: str, n: int = 1) -> None:
        """Bump a named counter (``decode_errors``, ``frames_skipped``...)."""
        self.counters[counter] = self.counters.get(counter, 0) + n

    def note_reading(self, kind: str, at: datetime) -> None:
        """A reading from this device was committed to the outbox.

        The device's status topic is republished for a new kind of reading, or when the
        last republish for a reading is older than ``READING_STATUS_MIN_INTERVAL_S``: a
        1 Hz stream must not cost a retained publish per sample (the periodic health
        report carries the latest time anyway).
        """
        if self._alarms is not None:
            self._alarms.clear_alarm(device_alarm_name(self.device_id))  # it works again
        first_of_kind = kind != self.last_reading_kind
        self.last_reading_at = at
        self.last_reading_kind = kind
        self._seen()
        now_ns = self.last_seen_mono_ns or 0
        last_ns = self._reading_notified_ns
        if first_of_kind or last_ns is None or now_ns - last_ns >= READING_STATUS_MIN_NS:
            self._reading_notified_ns = now_ns
            self._on_change(self.device_id)

    def carry_over(self, previous: DeviceHealth) -> None:
        """Keep what the previous generation knew (a config reload is not news of the device)."""
        for name in _HISTORY_FIELDS:
            setattr(self, name, getattr(previous, name))
        self.counters = dict(previous.counters)
        self._on_change(self.device_id)

    def restore(self, saved: Mapping[str, Any], now: HubTime) -> None:
        """Take the history of ``saved`` (this device's status from the last run's state file).

        Without it every restart would publish "not seen, never measured" for a device
        used an hour ago. The saved state itself is not trusted (the session is gone): a
        device seen before starts "disconnected", aged by the wall-clock time since it was
        last seen, so it turns "not seen" when its expected interval runs out as if the
        agent had never stopped. With an unsynced or backward clock that age is unknown,
        so it starts "not seen" (its last_seen still shows when it was).
        """
        self.last_seen = _parse_iso(saved.get("last_seen"))
        self.last_reading_at = _parse_iso(saved.get("last_reading_at"))
        kind = saved.get("last_reading_kind")
        self.last_reading_kind = kind if isinstance(kind, str) else None
        self.battery_percent = _int_or_none(saved.get("battery_percent"))
        self.rssi_dbm = _int_or_none(saved.get("rssi_dbm"))
        offset = saved.get("clock_offset_s")
        self.clock_offset_s = float(offset) if isinstance(offset, int | float) else None
        if self.last_seen is not None and now.clock_synced:
            age = now.utc - self.last_seen
            if age.total_seconds() >= 0:
                self.last_seen_mono_ns = now.monotonic_ns - int(age.total_seconds() * NS_PER_S)
                self.state = DeviceState.DISCONNECTED
        self._on_change(self.device_id)

    def is_stale(self, now: HubTime) -> bool:
        """Silent for longer than the device's expected interval (habluetooth watchdog idea)."""
        if self.expected_interval_s is None or self.last_seen_mono_ns is None:
            return False
        silent_ns = now.monotonic_ns - self.last_seen_mono_ns
        return silent_ns > self.expected_interval_s * NS_PER_S

    def status(self, now: HubTime) -> dict[str, Any]:
        """The retained per-device status document (no values, no patient id)."""
        state = self.state
        # Silent past its expected interval: a device that is merely "seen" (advertising,
        # port present) or "disconnected" (reconnecting) is now "not seen", a silent
        # connection is only "seen". An error needing a person keeps its state.
        if self.is_stale(now):
            if state in (DeviceState.SEEN, DeviceState.DISCONNECTED):
                state = DeviceState.NOT_SEEN
            elif state is DeviceState.CONNECTED:
                # The link is up but nothing came over it (an oximeter switched off in its
                # plugged-in cradle): "connected" would read as "the patient did not measure".
                state = DeviceState.SEEN
        ident = self.identity
        return {
            "device": self.device_id,
            "state": state.value,
            "reason": self.reason,
            "last_seen": _iso(self.last_seen),
            "last_reading_at": _iso(self.last_reading_at),
            "last_reading_kind": self.last_reading_kind,
            "battery_percent": self.battery_percent,
            "rssi_dbm": self.rssi_dbm,
            "clock_offset_s": self.clock_offset_s,
            "model": None if ident is None else ident.model,
            "firmware": None if ident is None else ident.firmware,
            "counters": dict(self.counters),
        }


@dataclass
class PublishCounters:
    """What the publisher did since start. ``connection`` is its current status."""

    connection: str = "starting"
    last_connect_error: str | None = None
    last_connect_error_detail: str | None = None
    connects: int = 0
    reconnects: int = 0
    connect_attempts: int = 0
    messages_published: int = 0
    readings_published: int = 0
    messages_acked: int = 0
    readings_acked: int = 0
    messages_rejected: int = 0
    readings_rejected: int = 0
    no_subscriber_warnings: int = 0
    last_reject_reason: str | None = None
    last_publish_at: str | None = None  # UTC ISO time of the last PUBACK < 0x80


@dataclass
class Alarm:
    """Something a person must look at."""

    name: str
    detail: str
    since: str


@dataclass
class Health:
    """Hub-level health: devices, publish counters, alarms. Plain memory, no I/O."""

    hub_id: str
    clock: Clock
    publish: PublishCounters = field(default_factory=PublishCounters)
    alarms: dict[str, Alarm] = field(default_factory=dict)
    devices: dict[str, DeviceHealth] = field(default_factory=dict)
    changed_devices: set[str] = field(default_factory=set)
    listeners: list[Callable[[], None]] = field(default_factory=list)
    ignored_readings: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # remote requests by outcome

    def device(self, device_id: str, *, expected_interval_s: float | None = None) -> DeviceHealth:
        """The reporter of ``device_id`` (made on first use, the same object afterwards)."""
        existing = self.devices.get(device_id)
        if existing is not None:
            if expected_interval_s is not None:
                existing.expected_interval_s = expected_interval_s
            return existing
        made = DeviceHealth(device_id, self.clock, self._device_changed, expected_interval_s, self)
        self.devices[device_id] = made
        self._device_changed(device_id)
        return made

    def carry_over(self, previous: Health) -> None:
        """A reload: keep counters, alarms and the history of devices still configured."""
        self.publish = previous.publish
        self.ignored_readings = previous.ignored_readings
        self.requests = previous.requests
        for name, alarm in previous.alarms.items():
            prefix, _, device_id = name.partition(":")
            if prefix == DEVICE_ERROR_ALARM and device_id not in self.devices:
                continue  # that device is no longer configured
            self.alarms.setdefault(name, alarm)
        for device_id, device in self.devices.items():
            earlier = previous.devices.get(device_id)
            if earlier is not None:
                device.carry_over(earlier)

    def restore_devices(self, saved: Mapping[str, Any], now: HubTime) -> None:
        """A restart: device history from the last state file's ``devices`` (configured ones)."""
        for device_id, device in self.devices.items():
            entry = saved.get(device_id)
            if isinstance(entry, dict):
                device.restore(entry, now)

    def _device_changed(self, device_id: str) -> None:
        self.changed_devices.add(device_id)
        for listener in self.listeners:
            listener()

    def take_changed_devices(self) -> set[str]:
        """The devices whose status changed since the last call (the status publisher's queue)."""
        taken, self.changed_devices = self.changed_devices, set()
        return taken

    def note_reading(self, device_id: str, kind: str, at: datetime) -> None:
        """Called by the capture path after a reading's COMMIT."""
        self.device(device_id).note_reading(kind, at)

    def raise_alarm(self, name: str, detail: str) -> None:
        """Raise (or refresh the detail of) a named alarm."""
        current = self.alarms.get(name)
        since = current.since if current else _iso(self.clock.now().utc) or ""
        self.alarms[name] = Alarm(name, detail, since)

    def clear_alarm(self, name: str) -> None:
        """The condition is over."""
        self.alarms.pop(name, None)

    def snapshot(
        self,
        now: HubTime,
        *,
        uptime_s: float,
        outbox: dict[str, Any],
        disk_free_bytes: int | None,
    ) -> dict[str, Any]:
        """The retained health document. ``outbox`` is already summarised by the caller."""
        return {
            "hub": self.hub_id,
            "ts": _iso(now.utc),
            "uptime_s": round(uptime_s, 3),
            "clock_synced": now.clock_synced,
            "boot_id": now.boot_id,
            "outbox": outbox,
            "disk_free_bytes": disk_free_bytes,
            "publish": asdict(self.publish),
            "alarms": [asdict(a) for a in self.alarms.values()],
            "requests": dict(self.requests),
            "devices": {d: h.status(now) for d, h in sorted(self.devices.items())},
        }
