"""The fleet ACL (docs/operations.md) enforced by a real Mosquitto acl_file.

A hub's username is its hub id. It may publish only under its own prefix and read only
its own requests (and receipts); the backend may do everything under the prefix.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
from typing import TYPE_CHECKING

import pytest

from agent.clock import SystemClock
from agent.requests import RequestHandler
from agent.topics import HubTopics
from tests.ops.labcontrol import LabControl, config_text
from tests.ops.mqttparts import HubLink, Requester, fleet_acl, make_password_file

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker
PREFIX = "wardlink"
USERS = {"hub-a": "pw-a", "hub-b": "pw-b", "backend": "pw-backend"}
NOT_AUTHORIZED = 0x87


@pytest.fixture
async def acl_broker(private_broker: MosquittoBroker, tmp_path: Path) -> MosquittoBroker:
    passwords = make_password_file(tmp_path / "passwd", USERS)
    private_broker.acl_lines = fleet_acl(PREFIX, "backend")
    private_broker.extra_lines = [
        "allow_anonymous false",
        f"password_file {passwords}",
        # Started as root, mosquitto would switch to its own user and could not read the
        # password file in pytest's private tmp dir; stay the user running the tests.
        f"user {getpass.getuser()}",
    ]
    await asyncio.to_thread(private_broker.start)
    return private_broker


async def _hub(broker: MosquittoBroker, hub: str) -> tuple[HubLink, RequestHandler, LabControl]:
    control = LabControl(config_text(hub, broker.port, PREFIX), [], logging.getLogger(hub))
    link = HubLink(broker.port, client_id=hub, user=hub, password=USERS[hub])
    handler = RequestHandler(
        topics=HubTopics(PREFIX, hub), control=control, responder=link, clock=SystemClock()
    )
    await link.start()
    await link.subscribe(handler.subscription, handler.on_message)
    return link, handler, control


async def test_a_hub_answers_its_own_requests_under_the_acl(acl_broker: MosquittoBroker) -> None:
    link, handler, _ = await _hub(acl_broker, "hub-a")
    backend = Requester(
        acl_broker.port, f"{PREFIX}/+/response/#", user="backend", password=USERS["backend"]
    )
    try:
        backend.send(f"{PREFIX}/hub-a/request/ping", {"transaction": 1})
        responses = await backend.wait_count(1)
        assert responses[0][0] == f"{PREFIX}/hub-a/response/ping"
        assert responses[0][1]["status"] == "ok"
    finally:
        backend.close()
        await handler.aclose()
        await link.stop()


async def test_a_hub_cannot_read_another_hubs_requests(acl_broker: MosquittoBroker) -> None:
    link_a, handler_a, _ = await _hub(acl_broker, "hub-a")
    snooper = HubLink(acl_broker.port, client_id="hub-b", user="hub-b", password=USERS["hub-b"])
    await snooper.start()
    seen: list[str] = []
    await snooper.subscribe(
        f"{PREFIX}/hub-a/request/+", lambda topic, *_a, **_k: seen.append(topic)
    )
    backend = Requester(
        acl_broker.port, f"{PREFIX}/+/response/#", user="backend", password=USERS["backend"]
    )
    try:
        backend.send(f"{PREFIX}/hub-a/request/ping", {})
        await backend.wait_count(1)  # hub-a got and answered it...
        await asyncio.sleep(0.3)
        assert seen == []  # ...and hub-b, subscribed to the same topic, never saw it
    finally:
        backend.close()
        await snooper.stop()
        await handler_a.aclose()
        await link_a.stop()


async def _publish_as_hub_b(
    broker: MosquittoBroker, topic: str, payload: bytes, *, retain: bool = False
) -> int:
    # One connection per publish: Mosquitto 2.0.11 drops the connection right after a
    # denied PUBLISH's PUBACK (0x87), as seen in its log ("Bad socket read/write").
    link = HubLink(broker.port, client_id="hub-b", user="hub-b", password=USERS["hub-b"])
    await link.start()
    try:
        return await link.publish_message(topic, payload, retain=retain)
    finally:
        await link.stop()


async def test_a_hub_can_neither_request_of_nor_publish_as_another_hub(
    acl_broker: MosquittoBroker,
) -> None:
    link_a, handler_a, control_a = await _hub(acl_broker, "hub-a")
    backend = Requester(acl_broker.port, f"{PREFIX}/#", user="backend", password=USERS["backend"])
    try:
        request_code = await _publish_as_hub_b(
            acl_broker, f"{PREFIX}/hub-a/request/requeue-rejected", b"{}"
        )
        status_code = await _publish_as_hub_b(
            acl_broker, f"{PREFIX}/hub-a/status", b'{"state":"offline"}', retain=True
        )
        own_code = await _publish_as_hub_b(acl_broker, f"{PREFIX}/hub-b/status", b"{}")
        await backend.wait_count(1)
        await asyncio.sleep(0.3)
        assert request_code == NOT_AUTHORIZED
        assert status_code == NOT_AUTHORIZED
        assert own_code == 0
        assert [t for t, _, _ in backend.snapshot()] == [f"{PREFIX}/hub-b/status"]
        assert handler_a.counters == {}  # the forged request never reached hub-a
        assert control_a.rejected == {3, 5, 8}
    finally:
        backend.close()
        await handler_a.aclose()
        await link_a.stop()
