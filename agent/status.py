"""Retained hub topics: info, health (periodic) and per-device status.

Everything is republished right after each connect, because a broker without
persistence forgets retained messages when it restarts, and the fleet dashboard must not
show a stale or missing hub. Device status goes out when it changes. Publishing goes
through the publisher's live connection; while offline nothing is sent and nothing is
queued (the next connect republishes the current state, which is all that matters).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, Final

from agent.errors import PublishError
from agent.power import SYSFS_THROTTLED, read_power_flags
from agent.topics import encode_json, info_payload, online_payload, reason_text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from pathlib import Path

    from agent.clock import Clock, HubTime
    from agent.health import Health
    from agent.outbox import Outbox, OutboxStats
    from agent.topics import HubTopics

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S: Final = 30.0
FILLING_ALARM_FRACTION: Final = 0.8  # alarm well before the outbox must evict (R6)
NS_PER_S: Final = 1_000_000_000


def summarise_outbox(stats: OutboxStats, now: HubTime) -> dict[str, Any]:
    """The outbox part of the health document."""
    oldest = stats.oldest_pending_received_at
    age_s = None if oldest is None else max(0.0, (now.utc - oldest).total_seconds())
    return {
        "pending": stats.pending,
        "oldest_pending_age_s": None if age_s is None else round(age_s, 3),
        "oldest_pending_seq": stats.oldest_pending_seq,
        "rejected": stats.rejected,
        "sent": stats.sent,
        "delivered": stats.delivered,
        "evicted_total": stats.evicted_total,
        "evicted_by_cadence": dict(stats.evicted_by_cadence),
        "duplicates_total": stats.duplicates_total,
        "quarantined": stats.quarantined,
        "audit_truncated": stats.audit_truncated,
        "last_seq": stats.last_seq,
        "capacity_readings": stats.capacity_readings,
        "db_bytes": stats.db_bytes,
    }


def disk_free_bytes(directory: Path) -> int | None:
    """Free bytes for an unprivileged writer on the outbox's filesystem, or None."""
    try:
        usage = os.statvfs(directory)
    except OSError:
        return None
    return usage.f_bavail * usage.f_frsize


class StatusPublisher:
    """Publishes info, health and device status; run by ``Publisher.run``."""

    def __init__(
        self,
        *,
        publish: Callable[[str, bytes], Awaitable[int]],
        is_connected: Callable[[], bool],
        health: Health,
        outbox: Outbox,
        clock: Clock,
        topics: HubTopics,
        info: Mapping[str, Any],
        paho_version: str,
        interval_s: float,
        outbox_dir: Path,
    ) -> None:
        """Store collaborators; the start time (for uptime) is read now."""
        self._publish = publish
        self._is_connected = is_connected
        self._health = health
        self._outbox = outbox
        self._clock = clock
        self._topics = topics
        self._info = info_payload(info, paho_version)
        self._interval_s = interval_s
        self._outbox_dir = outbox_dir
        started = clock.now()
        self._started_mono_ns = started.monotonic_ns
        self._online_since = started.utc
        self._published_state: dict[str, str] = {}
        self.power_path = SYSFS_THROTTLED  # the Pi firmware's flags (a test points elsewhere)
        # More parts of the health document, by key (e.g. "ble_adapter": the adapter ladder).
        self.reports: dict[str, Callable[[], Any]] = {}
        self._full = asyncio.Event()
        self._changed = asyncio.Event()
        health.listeners.append(self._changed.set)

    def online(self, now: HubTime) -> bytes:
        """The online status payload for a connect happening now."""
        self._online_since = now.utc
        return online_payload(self._online_since, now.utc)

    def trigger_full(self) -> None:
        """Republish everything soon (called after each connect)."""
        self._full.set()

    async def run(self) -> None:
        """Publish on connect, on device change and every ``interval_s``, until cancelled."""
        loop = asyncio.get_running_loop()
        next_health = loop.time()
        while True:
            await self._wait_until(next_health)
            if not self._is_connected():
                # Nothing to do until the next connect, which calls trigger_full().
                self._full.clear()
                await self._full.wait()
                continue
            if self._full.is_set():
                self._full.clear()
                self._health.take_changed_devices()
                await self._send(self._topics.info, self._info)
                await self._send_health()
                for device_id in sorted(self._health.devices):
                    await self._send_device(device_id)
                next_health = loop.time() + self._interval_s
                continue
            if loop.time() >= next_health:
                await self._send_health()
                await self._send_devices_gone_stale()
                next_health = loop.time() + self._interval_s
            for device_id in sorted(self._health.take_changed_devices()):
                await self._send_device(device_id)

    async def _wait_until(self, deadline: float) -> None:
        self._changed.clear()
        if self._full.is_set() or self._health.changed_devices:
            return
        timeout_s = max(0.0, deadline - asyncio.get_running_loop().time())
        waits = [
            asyncio.ensure_future(self._full.wait()),
            asyncio.ensure_future(self._changed.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def health_document(self) -> dict[str, Any]:
        """The current health document (also useful for a local ``status`` command)."""
        now = self._clock.now()
        stats = await self._outbox.stats()
        if stats.pending >= FILLING_ALARM_FRACTION * stats.capacity_readings:
            self._health.raise_alarm("outbox_filling", f"{stats.pending} readings pending")
        else:
            self._health.clear_alarm("outbox_filling")
        free = await asyncio.to_thread(disk_free_bytes, self._outbox_dir)
        uptime_s = (now.monotonic_ns - self._started_mono_ns) / NS_PER_S
        document = self._health.snapshot(
            now, uptime_s=uptime_s, outbox=summarise_outbox(stats, now), disk_free_bytes=free
        )
        # A consumer judges staleness from this (docs/operations.md, the offline rule).
        document["interval_s"] = self._interval_s
        document["power"] = await asyncio.to_thread(self._power_report)
        for key, report in self.reports.items():
            document[key] = report()
        return document

    def _power_report(self) -> dict[str, Any] | None:
        """Under-voltage/throttling from the Pi firmware (None elsewhere); alarm if it happened."""
        flags = read_power_flags(self.power_path)
        if flags is None:
            return None
        if flags.occurred:
            # "Has occurred since boot" bits: a weak supply corrupts SD cards and drops radios.
            self._health.raise_alarm("power_supply", "since boot: " + ", ".join(flags.occurred))
        return {"now": list(flags.now), "since_boot": list(flags.occurred), "raw": hex(flags.raw)}

    async def _send_health(self) -> None:
        await self._send(self._topics.health, encode_json(await self.health_document()))

    async def _send_device(self, device_id: str) -> None:
        device = self._health.devices[device_id]
        document = device.status(self._clock.now())
        self._published_state[device_id] = document["state"]
        await self._send(self._topics.device_status(device_id), encode_json(document))

    async def _send_devices_gone_stale(self) -> None:
        """A device silent past its expected interval becomes not_seen on its own topic too.

        Nothing happens at that moment (no callback fires for silence), so the periodic
        health tick compares each device's state now with the state last published.
        """
        now = self._clock.now()
        for device_id, device in sorted(self._health.devices.items()):
            if device.status(now)["state"] != self._published_state.get(device_id):
                await self._send_device(device_id)

    async def _send(self, topic: str, payload: bytes) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                code = await self._publish(topic, payload)
        except (PublishError, TimeoutError) as exc:
            # Offline or lost mid-way: the next connect republishes everything.
            log.info("status %s not published: %s", topic.rsplit("/", 1)[-1], exc)
            return
        if code >= 0x80:  # noqa: PLR2004 - MQTT 5 failure threshold
            self._health.raise_alarm("status_rejected", f"{topic}: {reason_text(code)}")
            log.warning("broker refused status topic %s: %s", topic, reason_text(code))
