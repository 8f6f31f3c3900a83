"""A test subscriber: a plain paho client that records every message it receives."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from agent.mqttprops import new_properties


@dataclass(frozen=True)
class Received:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    content_type: str | None
    user_properties: tuple[tuple[str, str], ...]


class Subscriber:
    """Subscribe to ``topics`` on a broker and keep every message, thread-safely."""

    def __init__(
        self, host: str, port: int, topics: list[str], qos: int = 1, *, persistent: bool = False
    ) -> None:
        """Connect, subscribe and start paho's network thread.

        ``persistent``: a backend's kind of session (clean_start off, kept for an hour), so
        the broker queues what is published while this subscriber is away, including
        across a broker restart when the broker has ``persistence``. paho reconnects by
        itself.
        """
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._subscribed = threading.Event()
        self._topics = topics
        self._qos = qos
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        if persistent:
            properties = new_properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            self.client.connect(host, port, keepalive=30, clean_start=False, properties=properties)
        else:
            self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            msg = "subscriber did not subscribe within 10 s"
            raise TimeoutError(msg)

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe([(t, self._qos) for t in self._topics])

    def _on_subscribe(self, *_: object) -> None:
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        content_type = getattr(props, "ContentType", None) if props else None
        user = tuple(getattr(props, "UserProperty", ()) or ()) if props else ()
        with self._lock:
            self._messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), content_type, user)
            )

    def messages(self, topic_suffix: str | None = None) -> list[Received]:
        """A snapshot of the messages so far, optionally only those whose topic ends so."""
        with self._lock:
            snapshot = list(self._messages)
        if topic_suffix is None:
            return snapshot
        return [m for m in snapshot if m.topic.endswith(topic_suffix)]

    def wait_for(
        self, predicate: object, timeout_s: float = 10.0, topic_suffix: str | None = None
    ) -> list[Received]:
        """Wait until ``predicate(messages)`` is true; return the messages. Raises on timeout."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout_s
        while True:
            msgs = self.messages(topic_suffix)
            if predicate(msgs):
                return msgs
            if time.monotonic() > deadline:
                msg = f"condition not met within {timeout_s}s; got {len(msgs)} messages"
                raise TimeoutError(msg)
            time.sleep(0.02)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
