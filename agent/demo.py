"""``wardlink demo``: the agent on emulated devices against a private local Mosquitto.

Everything runs in one process and a throw-away directory: a Mosquitto on a free loopback
port (never the machine's own), serial oximeters on ptys speaking their real protocols,
BLE peripherals served by bumble over an in-process link, the real agent (config file,
outbox, publisher) and a subscriber that prints each reading as the backend receives it.
Printing reading values is the point of the demo; the agent's own logs never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.app import Runtime, configure_logging
from agent.configload import load_config
from agent.localbroker import MOSQUITTO_MISSING, MosquittoBroker, find_mosquitto
from agent.payloads import EncodedBatch, decode_payload
from agent.payloads.compact import decode_compact

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from drivers.emulators.ble import BleWorld
    from drivers.emulators.ble_peripherals import EmulatedPeripheral

HUB_ID: Final = "demo-hub"
PREFIX: Final = "wardlink"
SERIAL_DEVICES: Final = (("pulse-ox-nonin", "nonin-df8"), ("pulse-ox-contec", "contec-v7"))
# (device id, driver, emulated profile, address, extra settings): one of each kind a
# patient is given; the episodic ones hold stored records and re-send them, as real ones do.
BLE_DEVICES: Final = (
    ("bp-cuff", "ble-blood-pressure", "blood-pressure", "C0:FF:EE:00:00:01", "idle_s: 1.0"),
    ("thermometer", "ble-thermometer", "thermometer", "C0:FF:EE:00:00:02", "idle_s: 1.0"),
    ("scale", "ble-weight-scale", "weight-scale", "C0:FF:EE:00:00:03", "idle_s: 1.0"),
    ("glucose-meter", "ble-glucose", "glucose", "C0:FF:EE:00:00:04", "idle_s: 1.0"),
    ("heart-rate", "ble-heart-rate", "heart-rate", "C0:FF:EE:00:00:05", "interval_s: 5.0"),
)


def demo_config(workdir: Path, port: int, payload_format: str, devices: list[str]) -> str:
    """The YAML a technician would write for this demo hub."""
    device_yaml = "".join(devices) if devices else " []\n"
    return (
        f"hub:\n  id: {HUB_ID}\n  timezone: Europe/London\n"
        "patient:\n  id: demo-patient-0001\n  binding_version: 1\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  insecure_plaintext: true\n"
        f"  topic_prefix: {PREFIX}\n  keepalive_s: 30\n  reconnect_min_s: 0.5\n"
        f"  reconnect_max_s: 10\n  batch_size: 20\n"
        f"storage:\n  path: {workdir / 'outbox.db'}\n  audit_window_h: 1\n"
        f"payload:\n  format: {payload_format}\n"
        "health:\n  interval_s: 15\n"
        "logging:\n  level: WARNING\n"
        f"devices:{device_yaml}"
    )


def serial_device_yaml(device_id: str, protocol: str, port: Path) -> str:
    """One serial-oximeter entry."""
    return (
        f"\n  - id: {device_id}\n    driver: serial-oximeter\n"
        f"    protocol: {protocol}\n    port: {port}\n    interval_s: 1.0\n"
    )


def ble_device_yaml(device_id: str, driver: str, address: str, extra: str) -> str:
    """One BLE device entry, bound by address."""
    return f'\n  - id: {device_id}\n    driver: {driver}\n    address: "{address}"\n    {extra}\n'


def describe_reading(reading: dict[str, Any]) -> str:
    """One line per reading, as a ward dashboard might show it."""
    values = "  ".join(
        f"{name} {'-' if value is None else value} {reading['units'].get(name, '')}".rstrip()
        for name, value in reading["values"].items()
    )
    when = reading["effective_time"].astimezone(UTC).strftime("%H:%M:%S")
    device = reading["device"]
    device_id = device.get("id", "?") if isinstance(device, dict) else device
    flags = reading.get("st") or reading.get("status") or ""
    return f"{when}  seq {reading['seq']:>5}  {device_id:<18} {reading['kind']:<17} {values}" + (
        f"  [{flags}]" if flags else ""
    )


def fhir_lines(document: dict[str, Any]) -> Iterator[str]:
    """Observation summaries from a FHIR transaction Bundle."""
    for entry in document.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") != "Observation":
            continue
        code = resource.get("code", {}).get("coding", [{}])
        display = next((c.get("display") for c in code if c.get("display")), None)
        name = display or code[-1].get("code", "?")
        parts = [resource.get("valueQuantity", {})] + [
            c.get("valueQuantity", {}) for c in resource.get("component", [])
        ]
        values = "  ".join(f"{p.get('value')} {p.get('unit', '')}" for p in parts if p)
        yield f"{resource.get('effectiveDateTime', '?')}  {name:<40} {values}"


class ReadingPrinter:
    """A backend stand-in: subscribes to the readings topic and prints what arrives."""

    def __init__(self, port: int, out: TextIO) -> None:
        """Connect and subscribe (paho's own network thread; this is a tool, not the agent)."""
        self._out = out
        self._lock = threading.Lock()
        self.readings = 0
        self._last_state: dict[str, str] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"demo-backend-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/{HUB_ID}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith("/readings"):
            self._print_status(msg)
            return
        props = msg.properties
        user = tuple(getattr(props, "UserProperty", ()) or ()) if props else ()
        document = decode_payload(EncodedBatch(bytes(msg.payload), "", user))
        if not isinstance(document, dict):
            return
        if document.get("resourceType") == "Bundle":
            lines = list(fhir_lines(document))
        else:
            lines = [describe_reading(r) for r in decode_compact(document)]
        with self._lock:
            self.readings += len(lines)
            for line in lines:
                print(line, file=self._out, flush=True)

    def _print_status(self, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic.removeprefix(f"{PREFIX}/{HUB_ID}/")
        if topic == "status" or topic.startswith("devices/"):
            with contextlib.suppress(ValueError):
                state = json.loads(msg.payload).get("state", "?")
                if self._last_state.get(topic) != state:  # changes only, not refreshes
                    self._last_state[topic] = state
                    print(f"-- {topic}: {state}", file=self._out, flush=True)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


class BleRadio:
    """bumble's in-process radio with the demo's BLE peripherals on it."""

    def __init__(self, world: BleWorld, peripherals: list[EmulatedPeripheral]) -> None:
        """Keep what must be closed."""
        self.world = world
        self.peripherals = peripherals

    def driver_factories(self) -> dict[str, Callable[..., Any]]:
        """BLE drivers on this radio instead of BlueZ (every other driver as registered)."""
        from drivers.ble.driver import build  # noqa: PLC0415

        bound = functools.partial(
            build, link_factory=self.world.link_factory, scanner_factory=self.world.scanner_factory
        )
        return {driver: bound for _, driver, _, _, _ in BLE_DEVICES}

    async def close(self) -> None:
        """Stop advertising and close the radio."""
        for peripheral in self.peripherals:
            await peripheral.close()
        await self.world.close()


async def start_ble_radio() -> BleRadio:
    """Start the radio and put one emulated device of each BLE profile on it."""
    from drivers.emulators.ble import BleWorld  # noqa: PLC0415 - bumble is demo-only
    from drivers.emulators.ble_cli import demo_peripheral  # noqa: PLC0415

    world = BleWorld()
    await world.start()
    peripherals = []
    for _, _, profile, address, _ in BLE_DEVICES:
        peripheral = demo_peripheral(profile, address)
        await peripheral.attach(world)
        peripherals.append(peripheral)
    return BleRadio(world, peripherals)


async def run_demo(workdir: Path, payload_format: str, seconds: float | None, out: TextIO) -> int:
    """Start broker, emulators, agent and printer; run until Ctrl-C or ``seconds``."""
    from drivers.emulators.serial import PtySerialDevice  # noqa: PLC0415 - emulators are demo-only

    broker = MosquittoBroker(workdir=workdir / "mosquitto")
    broker.start()
    radio = await start_ble_radio()
    emulators = [
        PtySerialDevice(protocol, link=workdir / f"{device_id}.tty")
        for device_id, protocol in SERIAL_DEVICES
    ]
    printer: ReadingPrinter | None = None
    try:
        for emulator in emulators:
            emulator.plug()
        devices = [
            serial_device_yaml(device_id, protocol, emulator.port)
            for (device_id, protocol), emulator in zip(SERIAL_DEVICES, emulators, strict=True)
        ] + [ble_device_yaml(d, driver, a, extra) for d, driver, _, a, extra in BLE_DEVICES]
        config_path = workdir / "wardlink.yaml"
        config_path.write_text(demo_config(workdir, broker.port, payload_format, devices))
        config = load_config(config_path)
        printer = ReadingPrinter(broker.port, out)
        print(f"demo: broker 127.0.0.1:{broker.port}, config {config_path}", file=out)
        print("demo: readings as the backend receives them (Ctrl-C to stop)", file=out, flush=True)
        runtime = Runtime(
            config, config_path=config_path, driver_factories=radio.driver_factories()
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.request_stop)
        if seconds is not None:
            loop.call_later(seconds, runtime.request_stop)
        async with asyncio.TaskGroup() as group:
            emulator_tasks = [group.create_task(e.run(), name="emulator") for e in emulators]
            await runtime.run()
            for task in emulator_tasks:
                task.cancel()
        print(f"demo: stopped; {printer.readings} readings received", file=out)
        return 0
    finally:
        if printer is not None:
            printer.close()
        for emulator in emulators:
            emulator.close()
        await radio.close()
        broker.stop()


def demo_main(*, seconds: float | None, payload_format: str, out: TextIO = sys.stdout) -> int:
    """``wardlink demo``."""
    if find_mosquitto() is None:
        print(f"wardlink demo: {MOSQUITTO_MISSING}", file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    configure_logging("WARNING")
    workdir = Path(tempfile.mkdtemp(prefix="wardlink-demo-"))
    try:
        return asyncio.run(run_demo(workdir, payload_format, seconds, out))
    except KeyboardInterrupt:
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
