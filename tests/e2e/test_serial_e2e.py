"""Every serial protocol: pty emulator -> the real `wardlink run` -> Mosquitto -> a backend.

Each reading the agent commits reaches the backend exactly once (its reading_id counted
with duplicates, not as a set), with values the emulated oximeter sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from drivers.serial.protocols import PROTOCOLS
from tests.agent.pubharness import eventually
from tests.drivers.serial_support import device_for
from tests.e2e.harness import (
    PATIENT_ID,
    AgentProcess,
    committed_rows,
    decode_readings,
    serial_device,
    write_config,
)
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = [pytest.mark.broker, pytest.mark.pty]


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_each_protocol_reaches_the_backend_exactly_once_with_its_values(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str, protocol: str
) -> None:
    device = device_for(protocol, tmp_path, record=True)
    device.plug()
    streaming = asyncio.create_task(device.run())
    config = write_config(
        tmp_path,
        port=broker.port,
        prefix=topic_prefix,
        devices_yaml=serial_device("oxi", protocol, device.port, interval_s=0.2),
    )
    agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    db = tmp_path / "outbox.db"

    def received_ids() -> list[object]:
        return [r["reading_id"] for r in decode_readings(sub.messages("/readings"))]

    try:
        await agent.start()
        await eventually(lambda: len(received_ids()) >= 5, timeout_s=30)
        device.set_silent(True)  # nothing new to capture from here on
        await asyncio.sleep(0.5)  # the open interval closes (0.2 s) and is committed
        committed = set(committed_rows(db))
        await eventually(lambda: committed <= set(received_ids()), timeout_s=30)
        assert await agent.terminate() == 0
        assert "Traceback" not in agent.log_text()
    finally:
        await agent.kill()
        sub.close()
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        device.close()
    counts = Counter(received_ids())
    assert set(counts) <= set(committed_rows(db))  # nothing the hub did not commit
    assert [rid for rid, n in counts.items() if n > 1] == []  # each exactly once
    spo2_sent = {s for _, s, _ in device.sent_log}
    pulse_sent = {p for _, _, p in device.sent_log}
    readings = decode_readings(sub.messages("/readings"))
    for reading in readings:
        values = reading["values"]
        assert reading["patient_id"] == PATIENT_ID
        assert reading["kind"] == "spo2"
        assert values["spo2"] in spo2_sent
        assert values["pulse_rate"] in pulse_sent
        if PROTOCOLS[protocol].has_perfusion_index:
            assert 1.5 <= values["perfusion_index"] <= 4.5  # the emulated patient's range
        else:
            assert "perfusion_index" not in values
