"""An encoded batch crosses a real Mosquitto (MQTT 5) with its properties intact."""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from fhir.resources.R4B.bundle import Bundle
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.payloads import EncodedBatch, decode_payload, encode_batch
from agent.payloads.compact import decode_compact
from tests.emulators.subscriber import Subscriber
from tests.payloads.factory import CONTEXT, hub_time, spo2_stream

if TYPE_CHECKING:
    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker


def publish(broker: MosquittoBroker, topic: str, encoded: EncodedBatch) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho untyped
        props.ContentType = encoded.content_type
        props.UserProperty = list(encoded.user_properties)
        client.publish(topic, encoded.payload, qos=1, properties=props).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize(("fmt", "compression"), [("fhir", "deflate"), ("compact", "none")])
def test_batch_arrives_with_content_type_and_user_properties(
    broker: MosquittoBroker, topic_prefix: str, fmt: str, compression: str
) -> None:
    topic = f"{topic_prefix}/{CONTEXT.hub_id}/readings"
    context = dataclasses.replace(CONTEXT, compression=compression)  # type: ignore[arg-type]
    batch = spo2_stream(10)
    encoded = encode_batch(batch, hub_time(), fmt=fmt, context=context)  # type: ignore[arg-type]
    subscriber = Subscriber(broker.host, broker.port, [topic])
    try:
        publish(broker, topic, encoded)
        (message,) = subscriber.wait_for(lambda msgs: len(msgs) == 1)
    finally:
        subscriber.close()
    assert message.content_type == encoded.content_type
    assert message.user_properties == encoded.user_properties
    received = EncodedBatch(message.payload, message.content_type, message.user_properties)
    document = decode_payload(received)
    assert isinstance(document, dict)
    if fmt == "fhir":
        assert ("content-encoding", "deflate") in message.user_properties
        Bundle.model_validate(document)
        ids = {e["resource"]["identifier"][0]["value"] for e in document["entry"][2:]}
        assert {f"urn:uuid:{s.reading.reading_id}" for s in batch} <= ids
    else:
        assert [r["reading_id"] for r in decode_compact(document)] == [
            s.reading.reading_id for s in batch
        ]
