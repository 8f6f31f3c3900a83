"""The real agent under a fake systemd: READY after the outbox opens, watchdog pings, STOPPING."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.localbroker import MosquittoBroker
from tests.e2e.harness import AgentProcess, write_config
from tests.lifecycle.test_sdnotify import FakeSystemd

pytestmark = [pytest.mark.broker]


async def test_agent_speaks_sd_notify_and_stops_cleanly(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    fake = FakeSystemd(tmp_path / "notify.sock")
    config = write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml="  []\n")
    agent = AgentProcess(
        config=config,
        log_path=tmp_path / "agent.log",
        env={"NOTIFY_SOCKET": str(fake.path), "WATCHDOG_USEC": "1000000"},
    )
    try:
        await agent.start()
        deadline = time.monotonic() + 20
        while len(fake.pings()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        messages = [m for _, m in fake.received]
        assert messages[0].startswith("READY=1")
        assert (tmp_path / "outbox.db").exists()  # READY only once the outbox is open
        assert len(fake.pings()) >= 3  # every 0.5 s while the loop and the outbox answer
        stopping_at = time.monotonic()
        assert await agent.terminate() == 0
        assert time.monotonic() - stopping_at < 10  # SIGTERM -> exit within 10 s
        assert [m for _, m in fake.received][-1] == "STOPPING=1"
    finally:
        await agent.kill()
        fake.close()
