"""The link's socket handling against a real Mosquitto: bursts are read in full at once,
and the packets of one loop turn are written in one send, each PUBACK still reaching us."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.mqttlink import BufferedClient, MqttLink, connect_link
from agent.outbox import Outbox
from tests.agent.pubharness import HUB_ID, build, eventually, make_config, make_readings, running
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from agent.config import Config
    from agent.localbroker import MosquittoBroker
    from agent.publisher import Publisher

pytestmark = pytest.mark.broker

BURST = 300


@contextlib.asynccontextmanager
async def hub_with_requests(
    config: Config, got: list[bytes], readings: int = 0
) -> AsyncIterator[tuple[Publisher, Outbox, Subscriber]]:
    """A running publisher subscribed to its requests (payloads into ``got``), a sender."""
    outbox = await Outbox.open(config.storage.path)
    if readings:
        await outbox.capture(make_readings(readings))
    publisher, _ = build(config, outbox)
    prefix = config.mqtt.topic_prefix
    publisher.add_subscription(f"{prefix}/{HUB_ID}/request/#", lambda _t, p, _: got.append(p))
    sender = Subscriber(config.mqtt.host, config.mqtt.port, [f"{prefix}/unused"])
    try:
        async with running(publisher):
            await eventually(lambda: publisher.is_connected)
            yield publisher, outbox, sender
    finally:
        sender.close()
        await outbox.close()


async def test_a_burst_of_requests_is_handled_without_waiting_for_more_traffic(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    # One recv takes many packets off the socket; none may wait in the buffer for the
    # next wake-up (which, on an idle link, is the keepalive ping a minute later).
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path, keepalive_s=60)
    topic = f"{topic_prefix}/{HUB_ID}/request/x"
    got: list[bytes] = []
    async with hub_with_requests(config, got) as (_, _, sender):
        await eventually(lambda: (sender.client.publish(topic, b"warm", qos=0), got)[1])
        for number in range(BURST):
            sender.client.publish(topic, str(number).encode(), qos=0)
        burst = [str(n).encode() for n in range(BURST)]
        await eventually(lambda: [p for p in got if p != b"warm"] == burst, timeout_s=5.0)


async def test_readings_and_requests_interleaved_all_arrive(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path, batch_size=1)
    got: list[bytes] = []
    async with hub_with_requests(config, got, readings=400) as (publisher, outbox, sender):
        for number in range(BURST):
            sender.client.publish(f"{topic_prefix}/{HUB_ID}/request/y", str(number).encode(), qos=1)
        await publisher.flush()
        await eventually(lambda: len(got) == BURST, timeout_s=5.0)
        stats = await outbox.stats()
        assert (stats.pending, stats.sent) == (0, 400)


async def test_an_aborted_link_is_collected_without_an_error(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    # abort() closes the socket itself; paho still holds it and, when the old client is
    # collected, calls our socket-close hook with the dead socket (fd -1). That raised
    # "Exception ignored in Client.__del__" at a random later moment on a busy hub.
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    link = await connect_link(config.mqtt, "abort-test", f"{topic_prefix}/will", _no_ack, _no_msg)
    assert link.is_connected
    link.abort("test")
    await link.finish()
    assert link.closed.done()
    link.client.__del__()  # what the garbage collector runs, whenever it gets to it


def _count_sends(link: MqttLink) -> list[int]:
    """The size of every ``send`` the link's client makes from now on."""
    sizes: list[int] = []
    send = link.client._sock_send  # the one place paho writes the socket

    def counting(data: bytes) -> int:
        sizes.append(len(data))
        return send(data)

    link.client._sock_send = counting  # type: ignore[method-assign,assignment]
    return sizes


async def test_publishes_of_one_loop_turn_go_in_one_send_each_with_its_reason_code(
    private_broker: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = f"{topic_prefix}/{HUB_ID}"
    private_broker.acl_lines = [f"topic readwrite {base}/ok", f"topic readwrite {base}/nobody"]
    private_broker.extra_lines.append("user root")  # see test_publisher's ACL test
    private_broker.start()
    listener = Subscriber(private_broker.host, private_broker.port, [f"{base}/ok"])
    config = make_config(private_broker.host, private_broker.port, topic_prefix, tmp_path)
    link = await connect_link(config.mqtt, "send-test", f"{base}/will", _no_ack, _no_msg)
    try:
        sizes = _count_sends(link)
        decoded: list[bytes] = []  # PUBACKs that went through paho's own decoder
        paho_decode = paho_packet.decode_puback

        def counting_decode(header: int, packet: bytes, protocol: int) -> object:
            decoded.append(bytes(packet))
            return paho_decode(header, packet, protocol)  # type: ignore[arg-type]

        monkeypatch.setattr(paho_packet, "decode_puback", counting_decode)
        # Mosquitto closes the connection after a 0x87, so the refused message goes last.
        leaves = ("ok", "nobody", "ok", "nobody", "denied")
        mids = [link.client.publish(f"{base}/{leaf}", b"x", qos=1).mid for leaf in leaves]
        codes = await asyncio.gather(*[link.wait_ack(mid) for mid in mids])
        assert codes == [0x00, 0x10, 0x00, 0x10, 0x87]
        assert len(sizes) == 1  # five PUBLISH packets, one send
        assert decoded == []  # every reason code came through BufferedClient's own read
        await eventually(lambda: len(listener.messages()) == 2)
    finally:
        listener.close()
        link.abort()
        await link.finish()


async def test_a_burst_larger_than_the_socket_buffer_is_written_in_full(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    # 40 x 256 KiB in one loop turn: the joined packet is written in parts as the socket
    # drains (paho keeps the rest and the link waits for "writable"); every PUBACK comes.
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    link = await connect_link(config.mqtt, "burst-test", f"{topic_prefix}/will", _no_ack, _no_msg)
    try:
        sizes = _count_sends(link)
        payload = bytes(256 * 1024)
        topic = f"{topic_prefix}/{HUB_ID}/big"
        mids = [link.client.publish(topic, payload, qos=1).mid for _ in range(40)]
        codes = await asyncio.gather(*[link.wait_ack(mid) for mid in mids])
        assert codes == [0x10] * 40
        assert sum(sizes) >= 40 * len(payload)
        assert len(sizes) > 1  # it did not fit in one send
    finally:
        link.abort()
        await link.finish()


def _puback_outcome(client: mqtt.Client, packet: bytes) -> tuple[object, ...]:
    """What handling ``packet`` as the PUBACK of a queued QoS 1 message does in ``client``."""
    seen: list[tuple[int, int, str, object]] = []
    client.on_publish = lambda _c, _u, mid, code, props: seen.append(
        (mid, code.value, code.getName(), str(props))
    )
    mid = client.publish("t", b"x", qos=1).mid  # not connected: kept, waiting
    client._in_packet["packet"] = bytearray(mid.to_bytes(2, "big") + packet[2:])
    client._in_packet["remaining_length"] = len(packet)
    try:
        result: object = client._handle_pubackcomp("PUBACK")
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the error's type
        result = type(exc).__name__
    return result, seen, mid in client._out_messages


@pytest.mark.parametrize(
    "packet",
    [
        b"\0\0",  # success, reason code left out
        b"\0\0\x00",
        b"\0\0\x10",  # no matching subscribers
        b"\0\0\x80",
        b"\0\0\x87",  # not authorized
        b"\0\0\x97",  # quota exceeded
        b"\0\0\x05",  # not a PUBACK reason code
        b"\0\0\x87\x00",  # empty properties
        b"\0\0\x87\x05\x1f\x00\x02no",  # a reason string
    ],
)
def test_a_puback_read_by_the_link_does_what_paho_does(packet: bytes) -> None:
    def fresh(cls: type[mqtt.Client]) -> mqtt.Client:
        return cls(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

    assert _puback_outcome(fresh(BufferedClient), packet) == _puback_outcome(
        fresh(mqtt.Client), packet
    )


def _no_ack(_link: MqttLink, _mid: int, _code: int) -> None:
    pytest.fail("no publish was made")


def _no_msg(_topic: str, _payload: bytes, _props: object) -> None:
    pytest.fail("no subscription was made")
