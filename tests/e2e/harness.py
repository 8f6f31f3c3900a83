"""End-to-end harness: the real `wardlink run` process, a pty oximeter and a backend subscriber."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.payloads import EncodedBatch, decode_payload
from agent.payloads.compact import decode_compact
from tests.emulators.subscriber import Received

HUB_ID = "e2e-hub"
PATIENT_ID = "patient-e2e-0001"


def write_config(
    workdir: Path,
    *,
    port: int,
    prefix: str,
    devices_yaml: str,
    payload_format: str = "compact",
    keepalive_s: int = 5,
) -> Path:
    """A real config file, as a technician would write it (plaintext to loopback only)."""
    path = workdir / "wardlink.yaml"
    path.write_text(
        f"hub:\n  id: {HUB_ID}\n"
        f"patient:\n  id: {PATIENT_ID}\n  binding_version: 3\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  insecure_plaintext: true\n"
        f"  topic_prefix: {prefix}\n  keepalive_s: {keepalive_s}\n"
        "  reconnect_min_s: 0.2\n  reconnect_max_s: 1.0\n  batch_size: 10\n"
        f"storage:\n  path: {workdir / 'outbox.db'}\n  group_commit_ms: 2\n"
        f"payload:\n  format: {payload_format}\n"
        "health:\n  interval_s: 2\n"
        "logging:\n  level: INFO\n"
        f"devices:\n{devices_yaml}",
        encoding="utf-8",
    )
    return path


def serial_device(device_id: str, protocol: str, port: Path, interval_s: float = 0.1) -> str:
    """One serial oximeter entry for the devices list."""
    return (
        f"  - id: {device_id}\n    driver: serial-oximeter\n    protocol: {protocol}\n"
        f"    port: {port}\n    interval_s: {interval_s}\n    expected_interval_s: 30\n"
    )


@dataclass
class AgentProcess:
    """`python -m agent run -c FILE` as systemd would run it; killable for real."""

    config: Path
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    async def start(self) -> None:
        """Start the agent process (stderr to the log file)."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent",
                "run",
                "-c",
                str(self.config),
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
            )

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no offline message, no checkpoint."""
        await self._signal(signal.SIGKILL)

    async def terminate(self) -> int:
        """SIGTERM, as `systemctl stop` does; returns the exit code."""
        await self._signal(signal.SIGTERM)
        assert self.process is not None
        return self.process.returncode or 0

    async def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(sig)
        await asyncio.wait_for(self.process.wait(), 15)

    def log_text(self) -> str:
        """Everything the agent wrote to stderr."""
        return self.log_path.read_text(errors="replace")


def decode_readings(messages: list[Received]) -> list[dict[str, Any]]:
    """Every reading in the received readings messages, in arrival order."""
    readings: list[dict[str, Any]] = []
    for msg in messages:
        if not msg.topic.endswith("/readings"):
            continue
        document = decode_payload(EncodedBatch(msg.payload, "", msg.user_properties))
        assert isinstance(document, dict)
        readings.extend(decode_compact(document))
    return readings


def committed_rows(db: Path) -> dict[uuid.UUID, int]:
    """reading_id -> seq of every reading the outbox holds (what was committed)."""
    if not db.exists():
        return {}  # killed before the outbox was first created
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT seq, reading_id FROM readings").fetchall()
    return {uuid.UUID(bytes=bytes(rid)): seq for seq, rid in rows}


def integrity(db: Path) -> str:
    """PRAGMA integrity_check of the outbox file."""
    if not db.exists():
        return "ok"
    with closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def retained_state(messages: list[Received], topic_suffix: str) -> str | None:
    """The state field of the last message on a topic."""
    matching = [m for m in messages if m.topic.endswith(topic_suffix)]
    if not matching:
        return None
    return str(json.loads(matching[-1].payload)["state"])
