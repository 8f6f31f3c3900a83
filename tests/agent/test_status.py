"""Retained status, info, health and device topics on a real Mosquitto; last will on kill."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from agent.clock import HubTime, SystemClock
from agent.health import Health
from agent.outbox import Outbox
from agent.topics import HubTopics, info_payload, offline_payload, reason_text
from drivers.base import DeviceState
from tests.agent.pubharness import (
    HUB_ID,
    PATIENT_ID,
    build,
    eventually,
    make_config,
    make_readings,
    retained_json,
    running,
)
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for sub in made:
        sub.close()


def _subscribe(broker: MosquittoBroker, prefix: str, made: list[Subscriber]) -> Subscriber:
    sub = Subscriber(broker.host, broker.port, [f"{prefix}/#"])
    made.append(sub)
    return sub


async def test_health_info_and_device_status_are_retained_and_carry_no_patient_data(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, subscribers: list[Subscriber]
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    outbox = await Outbox.open(config.storage.path)
    devices = [{"id": "oxi-1", "driver": "nonin", "patient": PATIENT_ID}]
    publisher, health = build(config, outbox, devices=devices)
    oxi = health.device("oxi-1", expected_interval_s=600)
    async with running(publisher):
        await eventually(lambda: publisher.is_connected)
        oxi.set_state(DeviceState.CONNECTED)
        oxi.set_battery(80)
        oxi.count("decode_errors", 2)
        readings = make_readings(4)
        await outbox.capture(readings)
        health.note_reading("oxi-1", "spo2", readings[-1].received.utc)
        publisher.notify_new_readings()
        await publisher.flush()
        sub = _subscribe(broker, topic_prefix, subscribers)
        device_topic = f"/{HUB_ID}/devices/oxi-1/status"
        await eventually(lambda: (retained_json(sub, device_topic) or {}).get("battery_percent"))
        await eventually(lambda: retained_json(sub, "/health"))
    device = retained_json(sub, device_topic)
    assert device is not None
    assert device["state"] == "connected"
    assert device["last_reading_kind"] == "spo2"
    assert device["counters"] == {"decode_errors": 2}
    info = retained_json(sub, "/info")
    assert info is not None
    assert info["devices"] == [{"id": "oxi-1", "driver": "nonin"}]
    assert set(info) >= {"wardlink", "config_hash", "paho", "devices"}
    doc = retained_json(sub, "/health")
    assert doc is not None
    assert set(doc["outbox"]) >= {
        "pending",
        "oldest_pending_age_s",
        "rejected",
        "sent",
        "evicted_total",
        "db_bytes",
        "quarantined",
    }
    assert doc["disk_free_bytes"] > 0
    assert doc["uptime_s"] >= 0
    assert isinstance(doc["clock_synced"], bool)
    assert set(doc["publish"]) >= {
        "messages_published",
        "readings_acked",
        "reconnects",
        "no_subscriber_warnings",
        "readings_rejected",
        "last_connect_error",
    }
    assert doc["devices"]["oxi-1"]["device"] == "oxi-1"
    everything = b"".join(m.payload for m in sub.messages() if not m.topic.endswith("/readings"))
    assert PATIENT_ID.encode() not in everything
    assert b"pulse_rate" not in everything  # no reading values either
    await outbox.close()


async def test_health_is_republished_every_interval(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, subscribers: list[Subscriber]
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    config = config.model_copy(
        update={"health": config.health.model_copy(update={"interval_s": 1.0})}
    )
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build(config, outbox)
    sub = _subscribe(broker, topic_prefix, subscribers)
    async with running(publisher):
        await eventually(lambda: len(sub.messages("/health")) >= 3, timeout_s=8)
    stamps = [json.loads(m.payload)["ts"] for m in sub.messages("/health")]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    await outbox.close()


async def test_clean_close_leaves_retained_offline_shutdown(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, subscribers: list[Subscriber]
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build(config, outbox)
    async with running(publisher):
        await eventually(lambda: publisher.is_connected)
    assert not publisher.is_connected
    sub = _subscribe(broker, topic_prefix, subscribers)
    status = await eventually(lambda: retained_json(sub, f"{HUB_ID}/status"))
    assert status["state"] == "offline"
    assert status["reason"] == "shutdown"
    await outbox.close()


async def test_killed_hub_leaves_retained_offline_by_last_will(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, subscribers: list[Subscriber]
) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.agent.pubharness",
            broker.host,
            str(broker.port),
            topic_prefix,
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        assert line.startswith(b"online")
        sub = _subscribe(broker, topic_prefix, subscribers)
        status = await eventually(lambda: retained_json(sub, f"{HUB_ID}/status"))
        assert status["state"] == "online"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        await eventually(lambda: b"offline" in sub.messages(f"{HUB_ID}/status")[-1].payload)
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    late = _subscribe(broker, topic_prefix, subscribers)  # sees only what is retained
    assert await eventually(lambda: retained_json(late, f"{HUB_ID}/status")) == {
        "state": "offline",
        "reason": "connection lost",
    }


async def test_auth_refusal_is_its_own_status_and_a_good_password_file_works(
    private_broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    passwords = tmp_path / "passwd"
    passwords.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "hub-test", "s3cret"], check=True)
    private_broker.extra_lines += [
        "user root",
        "allow_anonymous false",
        f"password_file {passwords}",
    ]
    private_broker.start()
    secret = tmp_path / "secret"
    secret.write_text("wrong\n", encoding="utf-8")
    config = make_config(
        private_broker.host,
        private_broker.port,
        topic_prefix,
        tmp_path,
        username="hub-test",
        password_file=secret,
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
    )
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    async with running(publisher):
        await eventually(lambda: health.publish.connection == "auth_error")
        assert not publisher.is_connected
        assert health.publish.last_connect_error_detail in {
            "0x86 Bad User Name or Password",
            "0x87 Not authorized",
        }
        secret.write_text("s3cret\n", encoding="utf-8")  # fixed: read again on the next try
        await eventually(lambda: publisher.is_connected)
    assert health.publish.connects == 1
    await outbox.close()


def test_pure_payloads() -> None:
    topics = HubTopics("wardlink", "hub-1")
    assert topics.device_status("cuff-1") == "wardlink/hub-1/devices/cuff-1/status"
    assert topics.readings == "wardlink/hub-1/readings"
    assert reason_text(0x87) == "0x87 Not authorized"
    assert reason_text(0x10) == "0x10 No matching subscribers"
    assert json.loads(offline_payload("connection lost")) == {
        "state": "offline",
        "reason": "connection lost",
    }
    info = json.loads(
        info_payload({"devices": [{"id": "a", "driver": "b", "patient": "P"}]}, "2.2.0")
    )
    assert info == {"devices": [{"id": "a", "driver": "b"}], "paho": "2.2.0"}


def test_device_goes_not_seen_after_its_expected_interval() -> None:
    class StepClock(SystemClock):
        offset_ns = 0

        def now(self) -> HubTime:
            real = super().now()
            return HubTime(
                real.utc, real.monotonic_ns + self.offset_ns, real.boot_id, real.clock_synced
            )

    clock = StepClock()
    health = Health(hub_id="h", clock=clock)
    cuff = health.device("cuff-1", expected_interval_s=60)
    cuff.set_state(DeviceState.SEEN)
    assert cuff.status(clock.now())["state"] == "seen"
    clock.offset_ns = 61 * 1_000_000_000
    assert cuff.status(clock.now())["state"] == "not_seen"
