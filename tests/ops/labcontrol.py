"""An ``AgentControl`` for the request tests: our own seam, with real parts behind it.

Config validation is the real ``load_config_text``; health is the real ``Health``
snapshot; the log level is really changed through ``LogLevelOverride``. Device
reconnects, rescans, requeues and flushes are recorded (the composition root wires the
real ones: drivers, ``Outbox.requeue_rejected``, ``Publisher.flush``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from agent.clock import SystemClock
from agent.configload import load_config_text
from agent.errors import ConfigError, OutboxError
from agent.health import Health
from agent.requests import LogLevelOverride

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.config import Config

CONFIG_TEMPLATE = """\
hub: {{id: {hub}}}
patient: {{id: {patient}, binding_version: 1}}
mqtt: {{host: 127.0.0.1, port: {port}, insecure_plaintext: true, topic_prefix: {prefix}}}
health: {{interval_s: {interval}}}
"""


def config_text(
    hub: str, port: int, prefix: str, *, interval: int = 60, patient: str = "P-1"
) -> str:
    """A small valid config (no devices: none are needed to exercise requests)."""
    return CONFIG_TEMPLATE.format(
        hub=hub, port=port, prefix=prefix, interval=interval, patient=patient
    )


class LabControl:
    """Implements ``agent.requests.AgentControl`` for tests."""

    def __init__(self, text: str, devices: list[str], logger: logging.Logger) -> None:
        """Start from ``text`` (must be valid)."""
        self.config: Config = load_config_text(text, "lab.yaml", check_files=False)
        self.devices = devices
        self.health = Health(hub_id=self.config.hub.id, clock=SystemClock())
        self.log_override = LogLevelOverride(logger, "INFO")
        self.reconnected: list[str] = []
        self.rescans = 0
        self.rejected: set[int] = {3, 5, 8}
        self.pending: set[int] = {1, 2, 4}
        self.fail_requeue = False
        self.flush_gate: asyncio.Event | None = None  # set: flush waits for it

    def info(self) -> dict[str, Any]:
        return {"hub": self.config.hub.id, "devices": [{"id": d} for d in self.devices]}

    async def health_now(self) -> dict[str, Any]:
        now = self.health.clock.now()
        outbox = {"pending": len(self.pending), "rejected": len(self.rejected)}
        return self.health.snapshot(now, uptime_s=1.0, outbox=outbox, disk_free_bytes=None)

    def config_redacted(self) -> dict[str, Any]:
        document = self.config.model_dump(mode="json")
        document["patient"]["id"] = "<redacted>"
        return document

    async def reload_config(self, text: str | None) -> list[str]:
        if text is None:
            return ["lab.yaml: no file to re-read in this test"]
        try:
            self.config = load_config_text(text, "request", check_files=False)
        except ConfigError as exc:
            return exc.problems
        return []

    def device_ids(self) -> list[str]:
        return list(self.devices)

    async def reconnect_device(self, device_id: str) -> None:
        self.reconnected.append(device_id)

    async def rescan(self) -> None:
        self.rescans += 1

    async def requeue_rejected(self, seqs: Sequence[int] | None) -> int:
        if self.fail_requeue:
            raise OutboxError("outbox.db: disk I/O error; check the SD card")
        chosen = set(self.rejected) if seqs is None else self.rejected & set(seqs)
        self.rejected -= chosen
        self.pending |= chosen
        return len(chosen)

    def set_log_level(self, level: str, duration_s: float) -> None:
        self.log_override.apply(level, duration_s)

    async def flush(self) -> dict[str, Any]:
        if self.flush_gate is not None:
            await self.flush_gate.wait()
        return {"pending": len(self.pending)}
