"""The link's socket handling against a real Mosquitto: bursts are read in full at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agent.outbox import Outbox
from tests.agent.pubharness import HUB_ID, build, eventually, make_config, make_readings, running
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker

BURST = 300


async def test_a_burst_of_requests_is_handled_without_waiting_for_more_traffic(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    # One recv takes many packets off the socket; none may wait in the buffer for the
    # next wake-up (which, on an idle link, is the keepalive ping a minute later).
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path, keepalive_s=60)
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build(config, outbox)
    got: list[bytes] = []
    publisher.add_subscription(f"{topic_prefix}/{HUB_ID}/request/#", lambda _t, p, _: got.append(p))
    sender = Subscriber(broker.host, broker.port, [f"{topic_prefix}/unused"])
    try:
        async with running(publisher):
            await eventually(lambda: publisher.is_connected)
            await eventually(
                lambda: (
                    sender.client.publish(f"{topic_prefix}/{HUB_ID}/request/x", b"warm", qos=0),
                    got,
                )[1]
            )
            for number in range(BURST):
                sender.client.publish(
                    f"{topic_prefix}/{HUB_ID}/request/x", str(number).encode(), qos=0
                )
            burst = [str(n).encode() for n in range(BURST)]
            await eventually(lambda: [p for p in got if p != b"warm"] == burst, timeout_s=5.0)
    finally:
        sender.close()
        await outbox.close()


async def test_readings_and_requests_interleaved_all_arrive(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path, batch_size=1)
    outbox = await Outbox.open(config.storage.path)
    await outbox.capture(make_readings(400))
    publisher, _ = build(config, outbox)
    got: list[bytes] = []
    publisher.add_subscription(f"{topic_prefix}/{HUB_ID}/request/#", lambda _t, p, _: got.append(p))
    sender = Subscriber(broker.host, broker.port, [f"{topic_prefix}/unused"])
    try:
        async with running(publisher):
            await eventually(lambda: publisher.is_connected)
            for number in range(BURST):
                sender.client.publish(
                    f"{topic_prefix}/{HUB_ID}/request/y", str(number).encode(), qos=1
                )
            await publisher.flush()
            await eventually(lambda: len(got) == BURST, timeout_s=5.0)
        stats = await outbox.stats()
        assert (stats.pending, stats.sent) == (0, 400)
    finally:
        sender.close()
        await outbox.close()
