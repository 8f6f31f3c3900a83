from __future__ import annotations

from typing import TYPE_CHECKING

from paho.mqtt import publish

from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from agent.localbroker import MosquittoBroker


def test_session_broker_relays_a_message(broker: MosquittoBroker, topic_prefix: str) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    try:
        publish.single(f"{topic_prefix}/x", b"hello", qos=1, hostname=broker.host, port=broker.port)
        msgs = sub.wait_for(lambda m: len(m) == 1)
        assert msgs[0].payload == b"hello"
    finally:
        sub.close()
