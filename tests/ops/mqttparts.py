"""MQTT parts for the operations tests: a hub-side link and a backend-side requester.

``HubLink`` stands in for ``agent/publisher.py``'s message path (our own
``ResponsePublisher`` seam) until a real Outbox + Publisher stack can be built in these
tests: a real paho MQTT 5 client against the real Mosquitto, delivering requests to the
handler on the asyncio loop exactly as the Publisher does (``handler(topic, payload,
properties)`` on the loop thread).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import PublishError

if TYPE_CHECKING:
    from pathlib import Path

    from paho.mqtt.reasoncodes import ReasonCode

Handler = Callable[..., None]


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file made with the real mosquitto_passwd."""
    first = True
    for user, password in users.items():
        args = ["mosquitto_passwd", "-b"] + (["-c"] if first else []) + [str(path), user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=10)
        first = False
    return path


def fleet_acl(prefix: str, backend_user: str) -> list[str]:
    """The ACL docs/operations.md recommends: a hub's username is its hub id."""
    return [
        f"user {backend_user}",
        f"topic readwrite {prefix}/#",
        "",
        f"pattern write {prefix}/%u/status",
        f"pattern write {prefix}/%u/info",
        f"pattern write {prefix}/%u/health",
        f"pattern write {prefix}/%u/readings",
        f"pattern write {prefix}/%u/devices/+/status",
        f"pattern write {prefix}/%u/response/+",
        f"pattern read {prefix}/%u/request/+",
        f"pattern read {prefix}/%u/receipts",
    ]


def _client(client_id: str, user: str | None, password: str | None) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    if user is not None:
        client.username_pw_set(user, password)
    return client


class HubLink:
    """The hub's MQTT side for request tests (implements ``ResponsePublisher``)."""

    def __init__(
        self, port: int, *, client_id: str, user: str | None = None, password: str | None = None
    ) -> None:
        """Remember where to connect; ``start`` connects."""
        self._port = port
        self._loop = asyncio.get_running_loop()
        self.client = _client(client_id, user, password)
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._early: dict[int, int] = {}
        self._lock = threading.Lock()
        self._handlers: list[tuple[str, Handler]] = []
        self.suback_codes: list[int] = []
        self._subscribed = threading.Event()

    async def start(self) -> None:
        """Connect and start paho's network thread."""
        await asyncio.to_thread(self.client.connect, "127.0.0.1", self._port, 30)
        self.client.loop_start()

    async def subscribe(self, topic: str, handler: Handler) -> list[int]:
        """Subscribe and wait for the SUBACK; returns its reason codes."""
        self._handlers.append((topic, handler))
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        ok = await asyncio.to_thread(self._subscribed.wait, 10)
        assert ok, "no SUBACK within 10 s"
        return list(self.suback_codes)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        self.suback_codes = [int(c.value) for c in codes]
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        for pattern, handler in self._handlers:
            if mqtt.topic_matches_sub(pattern, msg.topic):
                self._loop.call_soon_threadsafe(self._deliver, handler, msg)

    @staticmethod
    def _deliver(handler: Handler, msg: mqtt.MQTTMessage) -> None:
        handler(msg.topic, bytes(msg.payload), msg.properties, retain=bool(msg.retain))

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, code: ReasonCode, _p: object
    ) -> None:
        self._loop.call_soon_threadsafe(self._ack, mid, int(code.value))

    def _ack(self, mid: int, code: int) -> None:
        future = self._acks.pop(mid, None)
        if future is None:
            self._early[mid] = code
        elif not future.done():
            future.set_result(code)

    async def publish_message(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int:
        """Publish and wait for the PUBACK's reason code (as the Publisher does)."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        for name, value in (properties or {}).items():
            setattr(props, name, value)
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishError(mqtt.error_string(info.rc))
        if info.mid in self._early:
            return self._early.pop(info.mid)
        future: asyncio.Future[int] = self._loop.create_future()
        self._acks[info.mid] = future
        async with asyncio.timeout(10):
            return await future

    async def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


class Requester:
    """The backend's side: publishes requests, records every response with its properties."""

    def __init__(
        self,
        port: int,
        response_filter: str,
        *,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        """Connect, subscribe to ``response_filter`` and wait for the SUBACK."""
        self.client = _client(f"backend-{uuid.uuid4().hex[:8]}", user, password)
        self._lock = threading.Lock()
        self.responses: list[tuple[str, dict[str, Any], bytes | None]] = []
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        self.client.subscribe(response_filter, qos=1)
        assert self._subscribed.wait(10), "requester did not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None)
        with self._lock:
            self.responses.append((msg.topic, json.loads(msg.payload), correlation))

    def send(
        self,
        topic: str,
        body: bytes | dict[str, Any],
        *,
        correlation: bytes | None = None,
        retain: bool = False,
    ) -> None:
        """Publish one request at QoS 1 and wait until the broker has it."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation is not None:
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(10)

    def clear(self) -> None:
        """Forget the responses so far."""
        with self._lock:
            self.responses.clear()

    def snapshot(self) -> list[tuple[str, dict[str, Any], bytes | None]]:
        """The responses so far."""
        with self._lock:
            return list(self.responses)

    async def wait_count(
        self, count: int, timeout_s: float = 10.0
    ) -> list[tuple[str, dict[str, Any], bytes | None]]:
        """Wait until at least ``count`` responses arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self.snapshot()) < count:
            assert time.monotonic() < deadline, f"only {self.snapshot()} after {timeout_s} s"
            await asyncio.sleep(0.02)
        return self.snapshot()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
