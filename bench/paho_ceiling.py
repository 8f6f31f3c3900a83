"""paho's own ceiling: a bare paho client publishing QoS 1 to a private Mosquitto.

The drain benchmark's one-reading-per-message figure is bounded by what paho itself
costs per message. This publishes N copies of a one-reading compact payload (the size
the drain sends) with MQTT 5, QoS 1, keeping ``--window`` messages unacknowledged by
publishing the next one from ``on_publish``, on paho's own single-threaded loop: no
outbox, no encoder, no asyncio. It prints messages/s and CPU us per message (this
process: user + system), with the load average.

    python -m bench.paho_ceiling [--messages 50000] [--window 20] [--properties]

``--properties`` adds the PUBLISH properties a readings message carries (content type and
four user properties, packed by agent.mqttprops as the publisher does).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.localbroker import MosquittoBroker
from agent.mqttprops import publish_properties

# A one-reading compact message as the drain publishes it (429 bytes).
PAYLOAD = (
    b'{"fmt":"wardlink-compact","v":1,"hub":"bench-hub","sw":"bench","tz":"UTC",'
    b'"t0":"2026-11-27T06:23:51.123Z","s0":1,"pt":[["bench-patient",1]],'
    b'"dev":[{"id":"oxi-1","drv":"nonin"}],"st":[{"p":0,"d":0,"k":"spo2","c":"continuous",'
    b'"dv":"bench","q":[["spo2","%"],["pulse_rate","/min"]]}],"cx":[{"s":0,"ts":2,'
    b'"tf":["hub_clock_unsynced"],"boot":"0b7c1c2e-5f3a-4c55-9a21-3f1e2d4c5b6a"}],'
    b'"r":[["Etf0SAXZTEaP9W43kY6mKA",0,0,0,[97,64],{"mono":2484705916891}]]}'
)
CONTENT_TYPE = "application/vnd.wardlink.compact+json; version=1"


def run(broker: MosquittoBroker, count: int, window: int, *, properties: bool) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    state = {"sent": 0, "acked": 0}

    def publish_next() -> None:
        seq = state["sent"] + 1
        props = None
        if properties:
            user = (
                ("wardlink-format", "compact"),
                ("wardlink-count", "1"),
                ("wardlink-seq-first", str(seq)),
                ("wardlink-seq-last", str(seq)),
            )
            props = publish_properties(CONTENT_TYPE, user)
        client.publish("bench/readings", PAYLOAD, qos=1, properties=props)
        state["sent"] = seq

    def on_publish(_c: object, _u: object, _mid: int, _code: object, _p: object) -> None:
        state["acked"] += 1
        if state["sent"] < count:
            publish_next()

    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    while not client.is_connected():
        client.loop(0.1)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(min(window, count)):
        publish_next()
    while state["acked"] < count:
        client.loop(1.0)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    client.disconnect()
    label = "with properties" if properties else "no properties"
    print(
        f"paho alone, QoS 1, window {window}, {label}: {count} messages in {elapsed:.2f} s = "
        f"{count / elapsed:,.0f} messages/s; CPU {cpu / count * 1e6:.1f} us/message; "
        f"load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--properties", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wardlink-paho-") as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mosquitto")
        broker.start()
        try:
            run(broker, args.messages, args.window, properties=args.properties)
        finally:
            broker.kill()


if __name__ == "__main__":
    main()
