"""Publisher against a real Mosquitto: order, reconnect, ACL rejection, no-subscriber."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING

import pytest

from agent.outbox import Outbox
from tests.agent.pubharness import (
    HUB_ID,
    build,
    eventually,
    make_config,
    make_readings,
    reading_ids,
    retained_json,
    running,
    seqs,
)
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker


@pytest.fixture
def subscriber_factory() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for sub in made:
        sub.close()


async def test_captured_readings_arrive_in_seq_order_and_become_sent(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, subscriber_factory: list[Subscriber]
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    subscriber_factory.append(sub)
    config = make_config(
        broker.host, broker.port, topic_prefix, tmp_path, batch_size=7, inflight_window=3
    )
    outbox = await Outbox.open(config.storage.path)
    before = make_readings(60)
    await outbox.capture(before)  # pending before the publisher even starts
    publisher, health = build(config, outbox)
    async with running(publisher):
        after = make_readings(40)
        for i in range(0, 40, 10):  # captured while connected: the notify path
            await outbox.capture(after[i : i + 10])
            publisher.notify_new_readings()
        expected = {str(r.reading_id) for r in before + after}
        await eventually(lambda: expected <= set(reading_ids(sub.messages())))
        await publisher.flush()
    arrived = seqs(sub.messages())
    assert arrived == sorted(arrived), "readings must go out in seq order"
    stats = await outbox.stats()
    assert (stats.pending, stats.sent, stats.rejected) == (0, 100, 0)
    assert health.publish.readings_acked == 100
    first = sub.messages("/readings")[0]
    assert first.content_type == "application/json"
    assert not first.retain
    await outbox.close()


async def test_broker_restart_mid_stream_loses_nothing_and_restores_retained(
    private_broker: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    subscriber_factory: list[Subscriber],
) -> None:
    private_broker.start()
    sub = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
    subscriber_factory.append(sub)
    config = make_config(
        private_broker.host, private_broker.port, topic_prefix, tmp_path, batch_size=5
    )
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    first, second = make_readings(30), make_readings(30)
    async with running(publisher):
        await outbox.capture(first)
        publisher.notify_new_readings()
        await publisher.flush()
        sub.close()
        private_broker.stop()  # persistence off: retained status/info/health are gone
        await eventually(lambda: not publisher.is_connected)
        await outbox.capture(second)  # captured while the broker is down
        publisher.notify_new_readings()
        assert (await outbox.stats()).pending == 30
        private_broker.start()
        late = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
        subscriber_factory.append(late)
        wanted = {str(r.reading_id) for r in second}
        await eventually(lambda: wanted <= set(reading_ids(late.messages())))
        await publisher.flush()
        # A fresh subscriber gets the retained topics the publisher restored.
        probe = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
        subscriber_factory.append(probe)
        await eventually(lambda: retained_json(probe, "/health") is not None)
        status = retained_json(probe, "/status")
        assert status is not None
        assert status["state"] == "online"
        assert set(status) == {"state", "since", "ts"}
        assert retained_json(probe, "/info") is not None
    stats = await outbox.stats()
    assert (stats.pending, stats.sent) == (0, 60)
    assert health.publish.reconnects >= 1
    await outbox.close()


def _acl(prefix: str, *, readings_allowed: bool) -> list[str]:
    base = f"{prefix}/{HUB_ID}"
    lines = [
        f"topic readwrite {base}/status",
        f"topic readwrite {base}/info",
        f"topic readwrite {base}/health",
        f"topic readwrite {base}/devices/#",
    ]
    if readings_allowed:
        lines.append(f"topic readwrite {base}/readings")
    return lines


async def test_acl_denial_rejects_and_keeps_rows_then_requeue_delivers(
    private_broker: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    subscriber_factory: list[Subscriber],
) -> None:
    private_broker.acl_lines = _acl(topic_prefix, readings_allowed=False)
    # Running as root, mosquitto drops to user "mosquitto", which cannot read pytest's
    # private tmp dir; "user root" keeps it able to (ignored when not started as root).
    private_broker.extra_lines.append("user root")
    private_broker.start()
    config = make_config(
        private_broker.host, private_broker.port, topic_prefix, tmp_path, batch_size=4
    )
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    readings = make_readings(10)
    async with running(publisher):
        await outbox.capture(readings)
        publisher.notify_new_readings()
        await publisher.flush()
        stats = await outbox.stats()
        assert (stats.pending, stats.rejected, stats.sent) == (0, 10, 0)
        rows = await outbox.pending_batch(after_seq=0, limit=100)
        assert rows == []  # rejected rows are not retried blindly...
        assert health.publish.readings_rejected == 10
        assert health.publish.last_reject_reason == "0x87 Not authorized"
        assert "readings_rejected" in health.alarms
        # ...but kept: fix the ACL, requeue, and they go.
        private_broker.stop()
        private_broker.acl_lines = _acl(topic_prefix, readings_allowed=True)
        private_broker.start()
        sub = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
        subscriber_factory.append(sub)
        assert await outbox.requeue_rejected() == 10
        publisher.rescan()
        wanted = {str(r.reading_id) for r in readings}
        await eventually(lambda: wanted <= set(reading_ids(sub.messages())))
        await publisher.flush()
    stats = await outbox.stats()
    assert (stats.pending, stats.rejected, stats.sent) == (0, 0, 10)
    await outbox.close()


async def test_no_subscriber_is_accepted_with_a_warning(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path, batch_size=2)
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    async with running(publisher):
        await outbox.capture(make_readings(6))
        publisher.notify_new_readings()
        await publisher.flush()
    assert (await outbox.stats()).sent == 6
    assert health.publish.no_subscriber_warnings == 3
    assert health.publish.readings_rejected == 0
    await outbox.close()


async def test_request_subscription_and_publish_message_share_the_connection(
    broker: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    subscriber_factory: list[Subscriber],
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build(config, outbox)
    got: list[tuple[str, bytes]] = []
    publisher.add_subscription(
        f"{topic_prefix}/{HUB_ID}/request/#", lambda t, p, _props: got.append((t, p))
    )
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/response/#"])
    subscriber_factory.append(sub)
    async with running(publisher):
        await eventually(lambda: publisher.is_connected)
        await eventually(
            lambda: (
                sub.client.publish(f"{topic_prefix}/{HUB_ID}/request/ping", b"{}", qos=1),
                got,
            )[1]
        )
        assert got[0] == (f"{topic_prefix}/{HUB_ID}/request/ping", b"{}")
        code = await publisher.publish_message(
            f"{topic_prefix}/{HUB_ID}/response/ping",
            b'{"ok":true}',
            properties={"CorrelationData": b"42"},
        )
        assert code == 0
        await eventually(lambda: sub.messages("/response/ping"))
    await outbox.close()


async def test_mqtt_311_still_delivers_and_warns_that_denials_are_invisible(
    broker: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    subscriber_factory: list[Subscriber],
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    subscriber_factory.append(sub)
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path, protocol="3.1.1")
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build(config, outbox)
    readings = make_readings(5)
    async with running(publisher):
        await outbox.capture(readings)
        publisher.notify_new_readings()
        await publisher.flush()
        wanted = {str(r.reading_id) for r in readings}
        await eventually(lambda: wanted <= set(reading_ids(sub.messages())))
    assert (await outbox.stats()).sent == 5
    assert any("3.1.1" in r.message and r.levelname == "WARNING" for r in caplog.records)
    await outbox.close()


@pytest.mark.slow  # bounded below by MQTT keepalive: >= 2 x keepalive_s (5 s minimum)
# Its own bounded waits (20 s detection, 45 s recovery) exceed the global 60 s cap.
@pytest.mark.timeout(120)
async def test_frozen_broker_is_detected_by_keepalive_and_nothing_is_lost(
    private_broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    private_broker.start()
    assert private_broker.process is not None
    config = make_config(
        private_broker.host,
        private_broker.port,
        topic_prefix,
        tmp_path,
        keepalive_s=5,
        connect_timeout_s=2.0,
    )
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    async with running(publisher):
        await eventually(lambda: publisher.is_connected)
        # A half-open link: the broker is alive to TCP but answers nothing (SIGSTOP).
        os.kill(private_broker.process.pid, signal.SIGSTOP)
        try:
            await outbox.capture(make_readings(5))
            publisher.notify_new_readings()
            await eventually(lambda: not publisher.is_connected, timeout_s=20)
            await eventually(lambda: health.publish.connection != "online")
        finally:
            os.kill(private_broker.process.pid, signal.SIGCONT)
        # Generous: after SIGCONT the broker first works off its backlog; a loaded CI
        # machine adds seconds (the detection bound itself is tested in tests/faults).
        await asyncio.wait_for(publisher.flush(), 45)
    assert (await outbox.stats()).sent == 5
    assert health.publish.reconnects >= 1
    await outbox.close()


async def test_a_retained_request_is_never_replayed_to_the_hub(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, subscriber_factory: list[Subscriber]
) -> None:
    # Somebody published a request with the retain flag: without care it would run on
    # every reconnect (a stale reload-config or requeue, again and again).
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/none"])
    subscriber_factory.append(sub)
    request_topic = f"{topic_prefix}/{HUB_ID}/request/reload-config"
    sub.client.publish(request_topic, b'{"stale": true}', qos=1, retain=True).wait_for_publish(5)
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build(config, outbox)
    got: list[bytes] = []
    publisher.add_subscription(
        f"{topic_prefix}/{HUB_ID}/request/#", lambda _t, p, _props: got.append(p)
    )
    async with running(publisher):
        await eventually(lambda: publisher.is_connected)
        # Until the subscription is active, publish again (non-retained, so none is kept).
        await eventually(lambda: (sub.client.publish(request_topic, b'{"fresh": true}'), got)[1])
        await asyncio.sleep(0.3)
    await outbox.close()
    sub.client.publish(request_topic, b"", qos=1, retain=True)  # clear it for other tests
    assert got
    assert set(got) == {b'{"fresh": true}'}


async def test_a_backlog_drain_reports_its_progress(
    broker: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent import publisher as publisher_module

    monkeypatch.setattr(publisher_module, "DRAIN_REPORT_S", 0.2)
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    outbox = await Outbox.open(config.storage.path)
    await outbox.capture(make_readings(1500))  # what piled up during an outage
    publisher, _ = build(config, outbox)
    with caplog.at_level("INFO", logger="agent.publisher"):
        async with running(publisher):
            await asyncio.wait_for(publisher.flush(), 30)
            await eventually(lambda: "backlog drained" in caplog.text)
    await outbox.close()
    assert "draining a backlog of 1500 readings" in caplog.text
