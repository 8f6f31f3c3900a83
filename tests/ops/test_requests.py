"""Every remote request against a real Mosquitto: answers, errors, replays, safety."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agent.clock import SystemClock
from agent.requests import RequestHandler
from agent.requestschema import MAX_REQUEST_BYTES
from agent.topics import HubTopics
from tests.ops.labcontrol import LabControl, config_text
from tests.ops.mqttparts import HubLink, Requester

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker
HUB = "hub-a"


class Stack:
    """Hub side (handler + link) and backend side (requester) on one broker."""

    def __init__(self, broker: MosquittoBroker, prefix: str) -> None:
        self.prefix = prefix
        self.base = f"{prefix}/{HUB}"
        self.logger = logging.getLogger(f"wardlink-test-{uuid.uuid4().hex[:6]}")
        self.logger.setLevel("INFO")
        self.control = LabControl(config_text(HUB, broker.port, prefix), ["cuff-1"], self.logger)
        self.link = HubLink(broker.port, client_id=f"{HUB}-{uuid.uuid4().hex[:6]}")
        self.handler = RequestHandler(
            topics=HubTopics(prefix, HUB),
            control=self.control,
            responder=self.link,
            clock=SystemClock(),
        )
        self.requester = Requester(broker.port, f"{self.base}/response/#")

    async def ask(
        self, name: str, body: bytes | dict[str, Any], *, correlation: bytes | None = None
    ) -> tuple[str, dict[str, Any], bytes | None]:
        """Send one request and return its response (topic, document, correlation)."""
        before = len(self.requester.snapshot())
        self.requester.send(f"{self.base}/request/{name}", body, correlation=correlation)
        return (await self.requester.wait_count(before + 1))[before]


@pytest.fixture
async def stack(broker: MosquittoBroker, topic_prefix: str) -> AsyncIterator[Stack]:
    made = Stack(broker, topic_prefix)
    await made.link.start()
    await made.link.subscribe(made.handler.subscription, made.handler.on_message)
    yield made
    made.control.log_override.cancel()
    await made.handler.aclose()
    await made.link.stop()
    made.requester.close()


async def test_ping_echoes_correlation_data_and_transaction(stack: Stack) -> None:
    topic, doc, correlation = await stack.ask("ping", {"transaction": "t-1"}, correlation=b"c-1")
    assert topic == f"{stack.base}/response/ping"
    assert doc["status"] == "ok"
    assert doc["data"]["pong"] is True
    assert doc["transaction"] == "t-1"
    assert correlation == b"c-1"
    assert doc["ts"].endswith("Z")


async def test_info_health_and_config_answer_without_patient_identifiers(stack: Stack) -> None:
    _, info, _ = await stack.ask("info", b"")
    assert info["data"]["devices"] == [{"id": "cuff-1"}]
    _, health, _ = await stack.ask("health", {})
    assert health["data"]["hub"] == HUB
    assert health["data"]["outbox"] == {"pending": 3, "rejected": 3}
    assert health["data"]["ts"].endswith("Z")  # a fresh report tells itself apart from old
    _, config, _ = await stack.ask("config", {})
    assert config["data"]["hub"]["id"] == HUB
    assert config["data"]["patient"]["id"] == "<redacted>"
    assert "P-1" not in json.dumps([info, health, config])


async def test_reload_with_a_good_config_applies_it(stack: Stack, broker: MosquittoBroker) -> None:
    text = config_text(HUB, broker.port, stack.prefix, interval=30)
    _, doc, _ = await stack.ask("reload-config", {"config": text})
    assert doc["status"] == "ok"
    assert stack.control.config.health.interval_s == 30


async def test_reload_with_a_bad_config_keeps_the_old_one_and_lists_the_errors(
    stack: Stack, broker: MosquittoBroker
) -> None:
    before = stack.control.config
    bad = config_text(HUB, broker.port, stack.prefix).replace("interval_s", "intervall_s")
    _, doc, _ = await stack.ask("reload-config", {"config": bad, "transaction": 7})
    assert doc["status"] == "error"
    assert doc["error_code"] == "rejected"
    assert "previous config" in doc["error"]
    assert "intervall_s" in doc["error"]
    assert doc["transaction"] == 7
    assert stack.control.config is before
    _, still, _ = await stack.ask("ping", {})  # and the hub keeps answering
    assert still["status"] == "ok"


async def test_reconnect_device_reaches_the_device_and_refuses_unknown_ones(
    stack: Stack,
) -> None:
    _, doc, _ = await stack.ask("reconnect-device", {"device": "cuff-1"})
    assert doc["status"] == "ok"
    assert stack.control.reconnected == ["cuff-1"]
    _, unknown, _ = await stack.ask("reconnect-device", {"device": "scale-9"})
    assert unknown["status"] == "error"
    assert "cuff-1" in unknown["error"]
    assert stack.control.reconnected == ["cuff-1"]


async def test_rescan_and_flush(stack: Stack) -> None:
    _, rescan, _ = await stack.ask("rescan", {})
    assert rescan["status"] == "ok"
    assert stack.control.rescans == 1
    _, flush, _ = await stack.ask("flush", {})
    assert flush["data"] == {"pending": 3}


async def test_requeue_rejected_some_then_all(stack: Stack) -> None:
    _, some, _ = await stack.ask("requeue-rejected", {"seqs": [5, 99]})
    assert some["data"] == {"requeued": 1}
    _, rest, _ = await stack.ask("requeue-rejected", {})
    assert rest["data"] == {"requeued": 2}
    assert stack.control.rejected == set()
    assert stack.control.pending == {1, 2, 3, 4, 5, 8}  # requeued, never dropped


async def test_a_failing_action_answers_with_its_advice(stack: Stack) -> None:
    stack.control.fail_requeue = True
    _, doc, _ = await stack.ask("requeue-rejected", {})
    assert doc["status"] == "error"
    assert doc["error_code"] == "failed"
    assert "check the SD card" in doc["error"]
    assert stack.handler.counters["failed"] == 1


async def test_log_level_is_raised_for_a_bounded_time_then_reverts(stack: Stack) -> None:
    _, doc, _ = await stack.ask("log-level", {"level": "DEBUG", "duration_s": 0.3})
    assert doc["status"] == "ok"
    assert stack.logger.level == logging.DEBUG
    await asyncio.sleep(0.6)
    assert stack.logger.level == logging.INFO


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("reboot", b"{}", "unknown_request"),
        ("ping", b"{not json", "malformed"),
        ("ping", b"\xff\xfe", "malformed"),
        ("ping", b"[1, 2]", "malformed"),
        ("ping", b'{"colour": "red"}', "invalid"),
        ("log-level", b'{"level": "TRACE"}', "invalid"),
        ("log-level", b'{"level": "DEBUG", "duration_s": 86400}', "invalid"),
        ("ping", b'{"pad": "' + b"x" * MAX_REQUEST_BYTES + b'"}', "too_large"),
        ("ping", b"[" * 100_000 + b"]" * 100_000, "too_large"),
        ("ping", b"[" * 2000 + b"]" * 2000, "malformed"),  # under the cap, too deep
    ],
)
async def test_bad_requests_get_an_error_response_and_are_counted(
    stack: Stack, name: str, body: bytes, code: str
) -> None:
    _, doc, correlation = await stack.ask(name, body, correlation=b"bad-1")
    assert doc["status"] == "error"
    assert doc["error_code"] == code
    assert correlation == b"bad-1"
    assert stack.handler.counters[code] == 1
    _, after, _ = await stack.ask("ping", {})
    assert after["status"] == "ok"


async def test_invalid_body_still_echoes_its_transaction(stack: Stack) -> None:
    _, doc, _ = await stack.ask("reconnect-device", {"transaction": "abc", "device": "NOT OK"})
    assert doc["error_code"] == "invalid"
    assert doc["transaction"] == "abc"
    assert "device" in doc["error"]


async def test_a_replayed_request_is_ignored_and_counted(stack: Stack) -> None:
    await stack.ask("requeue-rejected", {"seqs": [3]}, correlation=b"once")
    stack.requester.send(
        f"{stack.base}/request/requeue-rejected", {"seqs": [5]}, correlation=b"once"
    )
    await stack.ask("requeue-rejected", {"seqs": [8], "transaction": "t"})
    stack.requester.send(
        f"{stack.base}/request/requeue-rejected", {"seqs": [8], "transaction": "t"}
    )
    _, last, _ = await stack.ask("ping", {})  # requests run in order: the replays are done
    assert last["status"] == "ok"
    assert len(stack.requester.snapshot()) == 3
    assert stack.handler.counters["replayed"] == 2
    assert stack.control.rejected == {5}  # the replay of seq 5 did not run


async def test_a_retained_request_is_never_run(broker: MosquittoBroker, topic_prefix: str) -> None:
    stack = Stack(broker, topic_prefix)
    request_topic = f"{stack.base}/request/requeue-rejected"
    stack.requester.send(request_topic, {}, retain=True)
    await stack.link.start()
    try:
        await stack.link.subscribe(stack.handler.subscription, stack.handler.on_message)
        _, doc, _ = await stack.ask("ping", {})
        assert doc["status"] == "ok"
        assert stack.handler.counters["retained_ignored"] == 1
        assert stack.control.rejected == {3, 5, 8}
        assert [t for t, _, _ in stack.requester.snapshot()] == [f"{stack.base}/response/ping"]
    finally:
        stack.requester.send(request_topic, b"", retain=True)  # clear the retained message
        await stack.handler.aclose()
        await stack.link.stop()
        stack.requester.close()


async def test_a_flood_of_requests_is_bounded_and_counted(stack: Stack) -> None:
    stack.handler._max_queued = 2
    stack.control.flush_gate = asyncio.Event()
    for index in range(5):
        stack.requester.send(f"{stack.base}/request/flush", {}, correlation=f"f{index}".encode())
    deadline = asyncio.get_running_loop().time() + 10
    while stack.handler.counters.get("busy", 0) < 3:
        assert asyncio.get_running_loop().time() < deadline, stack.handler.counters
        await asyncio.sleep(0.02)
    stack.control.flush_gate.set()
    answered = await stack.requester.wait_count(2)
    assert sorted(c or b"" for _, _, c in answered) == [b"f0", b"f1"]
    _, after, _ = await stack.ask("ping", {})
    assert after["status"] == "ok"
    assert stack.handler.counters["busy"] == 3


async def test_a_second_log_level_request_restarts_the_clock(stack: Stack) -> None:
    await stack.ask("log-level", {"level": "DEBUG", "duration_s": 0.3})
    await asyncio.sleep(0.2)
    await stack.ask("log-level", {"level": "WARNING", "duration_s": 0.5})
    await asyncio.sleep(0.25)  # past the first request's end: the second still holds
    assert stack.logger.level == logging.WARNING
    await asyncio.sleep(0.5)
    assert stack.logger.level == logging.INFO
