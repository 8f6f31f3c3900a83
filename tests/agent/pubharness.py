"""Helpers for the publisher/status/TLS tests: config, readings, a JSON encoder, waits.

Also runnable as a child process (``python -m tests.agent.pubharness``) for the
last-will test, which must SIGKILL a publisher that is really connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.clock import HubTime, SystemClock
from agent.config import Config, HubConfig, MqttConfig, PatientConfig, StorageConfig
from agent.health import Health
from agent.outbox import Outbox
from agent.payloads import EncodedBatch
from agent.publisher import Publisher
from agent.readings import (
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    Reading,
    make_reading,
    reading_to_dict,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from agent.readings import StoredReading
    from tests.emulators.subscriber import Received, Subscriber

HUB_ID = "hub-test"
PATIENT_ID = "PATIENT-9434765919"


def json_encode(rows: Sequence[StoredReading], now: HubTime) -> EncodedBatch:
    """The tests' stand-in for the real payload builders: one JSON list of readings."""
    body = [{"seq": r.seq, "reading": reading_to_dict(r.reading)} for r in rows]
    return EncodedBatch(
        payload=json.dumps({"sent_at": now.utc.isoformat(), "readings": body}).encode(),
        content_type="application/json",
        user_properties=(("count", str(len(rows))),),
    )


def make_config(host: str, port: int, prefix: str, tmp: Path, **mqtt: Any) -> Config:
    """A config for a loopback broker: plaintext unless ``tls`` is given."""
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "topic_prefix": prefix,
        "insecure_plaintext": "tls" not in mqtt,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "connect_timeout_s": 5.0,
        "keepalive_s": 5,
    }
    settings.update(mqtt)
    return Config(
        hub=HubConfig(id=HUB_ID),
        patient=PatientConfig(id=PATIENT_ID, binding_version=1),
        mqtt=MqttConfig(**settings),
        storage=StorageConfig(path=tmp / "outbox.db"),
    )


def make_readings(count: int, device_id: str = "oxi-1") -> list[Reading]:
    """``count`` distinct SpO2 stream readings from one device."""
    clock = SystemClock()
    device = DeviceIdentity(device_id=device_id, driver="nonin")
    patient = PatientBinding(PATIENT_ID, 1)
    return [
        make_reading(
            device=device,
            patient=patient,
            kind=Kind.SPO2,
            cadence=Cadence.CONTINUOUS,
            values=(Quantity("spo2", 90.0 + i % 9, "%"), Quantity("pulse_rate", 61.0, "/min")),
            received=clock.now(),
            driver_version="test",
        )
        for i in range(count)
    ]


def build(config: Config, outbox: Outbox, **info: Any) -> tuple[Publisher, Health]:
    """A publisher on the real system clock with the JSON encoder."""
    clock = SystemClock()
    health = Health(hub_id=config.hub.id, clock=clock)
    document = {"wardlink": "test", "config_hash": "abc", "devices": []} | info
    return Publisher(config, outbox, json_encode, health, clock, document), health


@contextlib.asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[asyncio.Task[None]]:
    """Run the publisher in a task; close it cleanly afterwards."""
    task = asyncio.create_task(publisher.run())
    try:
        yield task
    finally:
        await publisher.close(timeout_s=3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            msg = f"condition not met within {timeout_s}s (last: {result!r})"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


def reading_ids(messages: list[Received]) -> list[str]:
    """Every reading_id in readings messages, in arrival order (duplicates kept)."""
    return [
        r["reading"]["reading_id"]
        for m in messages
        if m.topic.endswith("/readings")
        for r in json.loads(m.payload)["readings"]
    ]


def seqs(messages: list[Received]) -> list[int]:
    """Every seq in readings messages, in arrival order."""
    return [
        r["seq"]
        for m in messages
        if m.topic.endswith("/readings")
        for r in json.loads(m.payload)["readings"]
    ]


def retained_json(sub: Subscriber, suffix: str) -> dict[str, Any] | None:
    """The last retained message on a topic ending ``suffix``, decoded."""
    found = [m for m in sub.messages(suffix) if m.retain]
    return json.loads(found[-1].payload) if found else None


async def _child(host: str, port: int, prefix: str, workdir: str) -> None:
    config = make_config(host, port, prefix, Path(workdir), keepalive_s=5)
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build(config, outbox)
    task = asyncio.create_task(publisher.run())
    while not publisher.is_connected:
        await asyncio.sleep(0.02)
    print("online", datetime.now(UTC).isoformat(), flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
