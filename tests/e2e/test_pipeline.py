"""Emulated Nonin DF8 on a pty -> the real `wardlink run` process -> Mosquitto -> a backend.

Faults are injected for real: the broker is stopped and restarted, the agent is killed
with SIGKILL at random moments and started again.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.localbroker import MosquittoBroker
from drivers.emulators.serial import PtySerialDevice
from tests.e2e.harness import (
    HUB_ID,
    AgentProcess,
    committed_rows,
    decode_readings,
    integrity,
    retained_state,
    serial_device,
    write_config,
)
from tests.emulators.subscriber import Subscriber

pytestmark = [pytest.mark.broker, pytest.mark.pty]


@pytest.fixture
async def nonin(tmp_path: Path) -> AsyncIterator[PtySerialDevice]:
    """A Nonin oximeter in data format 8, 20x faster than real time, behind a stable link."""
    device = PtySerialDevice("nonin-df8", link=tmp_path / "nonin.tty", speed=20.0)
    device.plug()
    task = asyncio.create_task(device.run())
    yield device
    task.cancel()
    device.close()


def _agent(tmp_path: Path, broker: MosquittoBroker, prefix: str, port: Path) -> AgentProcess:
    config = write_config(
        tmp_path,
        port=broker.port,
        prefix=prefix,
        devices_yaml=serial_device("oxi", "nonin-df8", port),
    )
    return AgentProcess(config=config, log_path=tmp_path / "agent.log")


async def _wait(predicate: object, timeout_s: float = 20.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def _count_state(sub: Subscriber, state: str) -> int:
    return sum(
        1 for m in sub.messages(f"{HUB_ID}/status") if json.loads(m.payload)["state"] == state
    )


def _check_delivery(sub: Subscriber, db: Path) -> None:
    """Every committed reading arrived; duplicates only with the same id and seq."""
    received = decode_readings(sub.messages("/readings"))
    seq_of: dict[uuid.UUID, int] = {}
    for reading in received:
        rid = reading["reading_id"]
        assert isinstance(rid, uuid.UUID)
        assert seq_of.setdefault(rid, int(str(reading["seq"]))) == reading["seq"]
    committed = committed_rows(db)
    assert set(committed) <= set(seq_of), "a committed reading never reached the backend"
    assert all(seq_of[rid] == seq for rid, seq in committed.items())
    assert len(set(seq_of.values())) == len(seq_of), "a seq was given to two readings"
    assert integrity(db) == "ok"


async def test_readings_flow_in_seq_order_with_ids_and_status(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str, nonin: PtySerialDevice
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    agent = _agent(tmp_path, broker, topic_prefix, nonin.port)
    try:
        await agent.start()
        await _wait(lambda: len(decode_readings(sub.messages("/readings"))) >= 30)
        assert retained_state(sub.messages(), f"{HUB_ID}/status") == "online"
        assert await agent.terminate() == 0
        readings = decode_readings(sub.messages("/readings"))
        seqs = [int(str(r["seq"])) for r in readings]
        assert seqs == sorted(seqs)  # first delivery of each is in seq order
        first = readings[0]
        assert first["patient_id"] == "patient-e2e-0001"
        assert first["binding_version"] == 3
        assert first["kind"] == "spo2"
        assert set(first["values"]) >= {"spo2", "pulse_rate"}
        _check_delivery(sub, tmp_path / "outbox.db")
        # A clean stop leaves a retained offline status saying why.
        assert retained_state(sub.messages(), f"{HUB_ID}/status") == "offline"
        assert "Traceback" not in agent.log_text()
    finally:
        await agent.kill()
        sub.close()


async def test_broker_outage_mid_stream_loses_nothing(
    tmp_path: Path, private_broker: MosquittoBroker, topic_prefix: str, nonin: PtySerialDevice
) -> None:
    private_broker.start()
    agent = _agent(tmp_path, private_broker, topic_prefix, nonin.port)
    sub = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
    db = tmp_path / "outbox.db"
    subs = [sub]

    def delivered() -> set[object]:
        return {r["reading_id"] for s in subs for r in decode_readings(s.messages("/readings"))}

    try:
        await agent.start()
        await _wait(lambda: len(delivered()) >= 10)
        # The backend's broker goes away (the subscriber with it); capture continues.
        private_broker.stop()
        sub.close()
        before = max(committed_rows(db).values())
        await _wait(lambda: max(committed_rows(db).values()) >= before + 30)
        private_broker.start()
        sub = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
        subs.append(sub)
        outage = {rid for rid, seq in committed_rows(db).items() if seq > before}
        assert len(outage) >= 30
        # Captured during the outage, delivered after it.
        await _wait(lambda: outage <= delivered())
        assert await agent.terminate() == 0
        assert integrity(db) == "ok"
    finally:
        await agent.kill()
        sub.close()


# 21 agent starts and bounded waits of up to 75 s: the global 60 s cap is too tight on a
# loaded CI machine; the waits inside say what failed.
@pytest.mark.timeout(180)
async def test_kill_9_at_random_moments_loses_no_committed_reading(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str, nonin: PtySerialDevice
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    agent = _agent(tmp_path, broker, topic_prefix, nonin.port)
    rng = random.Random(20261127)
    db = tmp_path / "outbox.db"
    try:
        last_max_seq = 0
        for _trial in range(20):
            await agent.start()
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            await agent.kill()
            committed = committed_rows(db)
            assert integrity(db) == "ok"
            if committed:
                # seq never goes backwards across crashes (AUTOINCREMENT, never reused)
                assert max(committed.values()) >= last_max_seq
                last_max_seq = max(committed.values())
        # The hub died without saying so: the broker published its Last Will.
        await _wait(
            lambda: retained_state(sub.messages(), f"{HUB_ID}/status") == "offline", timeout_s=45
        )
        onlines = _count_state(sub, "online")
        await agent.start()
        await _wait(lambda: _count_state(sub, "online") > onlines)
        committed = committed_rows(db)
        await _wait(
            lambda: set(committed) <= {r["reading_id"] for r in decode_readings(sub.messages())},
            timeout_s=30,
        )
        assert await agent.terminate() == 0
        _check_delivery(sub, db)
        assert agent.starts == 21
    finally:
        await agent.kill()
        sub.close()
