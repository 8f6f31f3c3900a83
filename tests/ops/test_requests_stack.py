"""Requests through the real stack: real Outbox, real Publisher, real Mosquitto.

The handler is subscribed with ``Publisher.add_subscription`` exactly as ``agent/app.py``
wires it, and answers through ``Publisher.publish_message``. The control seam is a thin
implementation over the real Outbox and Publisher (what the app provides).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest

from agent.clock import SystemClock
from agent.configcheck import redacted
from agent.configload import load_config_text
from agent.errors import ConfigError
from agent.outbox import Outbox
from agent.requests import LogLevelOverride, RequestHandler
from tests.agent.pubharness import build, eventually, make_config, running
from tests.ops.fill import spot_readings
from tests.ops.mqttparts import Requester

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from agent.config import Config
    from agent.localbroker import MosquittoBroker
    from agent.publisher import Publisher

pytestmark = pytest.mark.broker


class StackControl:
    """``AgentControl`` over a real Outbox and Publisher."""

    def __init__(self, config: Config, outbox: Outbox, publisher: Publisher) -> None:
        self.config = config
        self.outbox = outbox
        self.publisher = publisher
        self.log_override = LogLevelOverride(logging.getLogger("wardlink-stack-test"), "INFO")

    def info(self) -> dict[str, Any]:
        return {"hub": self.config.hub.id}

    async def health_now(self) -> dict[str, Any]:
        return await self.publisher.status.health_document()

    def config_redacted(self) -> dict[str, Any]:
        return redacted(self.config)

    async def reload_config(self, text: str | None) -> list[str]:
        try:
            load_config_text(text or "", "request", check_files=False)
        except ConfigError as exc:
            return exc.problems
        return []

    def device_ids(self) -> list[str]:
        return []

    async def reconnect_device(self, device_id: str) -> None:
        raise AssertionError(device_id)  # no devices in this stack

    async def rescan(self) -> None:
        return

    async def requeue_rejected(self, seqs: Sequence[int] | None) -> int:
        moved = await self.outbox.requeue_rejected(seqs)
        self.publisher.rescan()
        return moved

    def set_log_level(self, level: str, duration_s: float) -> None:
        self.log_override.apply(level, duration_s)

    async def flush(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            await self.publisher.flush()
        return {"pending": (await self.outbox.stats()).pending}


async def test_every_request_through_the_real_stack_loses_no_reading(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    outbox = await Outbox.open(config.storage.path)
    readings = spot_readings(6)
    await outbox.capture(readings)
    rows = await outbox.pending_batch(limit=10)
    await outbox.mark_rejected([rows[1].seq, rows[4].seq], "0x87 Not authorized")
    publisher, _health = build(config, outbox)
    control = StackControl(config, outbox, publisher)
    handler = RequestHandler(
        topics=publisher.topics, control=control, responder=publisher, clock=SystemClock()
    )
    publisher.add_subscription(handler.subscription, handler.on_message)
    base = f"{topic_prefix}/{config.hub.id}"
    requester = Requester(broker.port, f"{base}/response/#")
    try:
        async with running(publisher):
            await eventually(lambda: publisher.is_connected)
            await eventually(_stats_match(outbox, sent=4, rejected=2))
            await _until_answered(requester, f"{base}/request/ping")
            requester.clear()
            bad_config = "hub: {id: x}\n"
            bodies: list[tuple[str, dict[str, Any]]] = [
                ("ping", {}),
                ("info", {}),
                ("health", {}),
                ("config", {}),
                ("reload-config", {"config": bad_config}),
                ("rescan", {}),
                ("log-level", {"level": "DEBUG", "duration_s": 1}),
                ("flush", {}),
                ("reconnect-device", {"device": "nope"}),
                ("requeue-rejected", {}),
            ]
            for index, (name, body) in enumerate(bodies):
                await _send_when_subscribed(requester, f"{base}/request/{name}", body, index)
            responses = [r for r in requester.snapshot() if not (r[2] or b"").startswith(b"warm")]
            by_name = {doc["request"]: doc for _, doc, _ in responses}
            assert by_name["health"]["data"]["outbox"]["rejected"] == 2
            assert "PATIENT" not in str(by_name["config"]["data"])
            assert by_name["reload-config"]["error_code"] == "rejected"
            assert by_name["reconnect-device"]["error_code"] == "invalid"
            assert by_name["requeue-rejected"]["data"] == {"requeued": 2}
            assert [c for _, _, c in responses] == [str(i).encode() for i in range(len(bodies))]
            # The requeued readings go out; every captured reading is accounted for.
            await eventually(_stats_match(outbox, sent=6, rejected=0))
            sent = await outbox.list_readings(state="sent")
            assert {r.reading.reading_id for r in sent} == {r.reading_id for r in readings}
    finally:
        control.log_override.cancel()
        await handler.aclose()
        requester.close()
        await outbox.close()


async def _send_when_subscribed(
    requester: Requester, topic: str, body: dict[str, Any], index: int
) -> None:
    # Sent one by one, each after the previous answer, so the order is the order asked.
    correlation = str(index).encode()
    requester.send(topic, body, correlation=correlation)
    await eventually(lambda: any(c == correlation for _, _, c in requester.snapshot()))


async def _until_answered(requester: Requester, topic: str) -> None:
    """The SUBACK of the hub's request subscription is not observable: ping until it is."""
    for attempt in range(20):
        requester.send(topic, {}, correlation=f"warm-up-{attempt}".encode())
        await asyncio.sleep(0.25)
        if requester.snapshot():
            await asyncio.sleep(0.25)  # let any other warm-up answers arrive first
            return
    raise AssertionError("the hub never answered a ping")


def _stats_match(outbox: Outbox, *, sent: int, rejected: int) -> Any:
    async def check() -> bool:
        stats = await outbox.stats()
        return stats.sent == sent and stats.rejected == rejected and stats.pending == 0

    return check
