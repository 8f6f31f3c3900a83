"""Fleet simulator: N hubs in one process against a private Mosquitto, to size a broker.

Every simulated hub is a real paho MQTT 5 client with the agent's topic layout: a
retained ``status`` with a Last Will, QoS 1 ``readings`` at a steady rate, and the
request subscription. A backend client subscribes to every hub's readings. All clients
are driven by ONE selector loop on one thread (no thread per hub), so thousands fit.

Prints connects/s, messages/s (published, PUBACKed, received by the backend) and the
broker's CPU and memory from /proc. ``--restart`` stops the broker a third of the way in
(persistence off: retained state is lost), starts it again, and prints how the hubs
reconnect under full-jitter backoff (``sleep = uniform(0, min(cap, base * 2**n))``).

Loopback only, bounded time. Figures are for THIS machine (2 shared cores, noisy); the
simulator competes with the broker for CPU, so real broker capacity is higher.

    python bench/fleet_sim.py --hubs 1000 --seconds 30
    python bench/fleet_sim.py --hubs 2000 --seconds 40 --restart
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import selectors
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.localbroker import MosquittoBroker

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

PREFIX = "fleet"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Bounded so that one pass during a reconnect storm still reads sockets often; a due
# retry not opened in this pass opens in the next (milliseconds later).
MAX_OPENS_PER_PASS = 400


@dataclass
class Counters:
    connects: int = 0
    published: int = 0
    acked: int = 0
    received: int = 0
    reconnect_at: list[float] = field(default_factory=list)


@dataclass
class Hub:
    hub_id: str
    client: mqtt.Client
    connected: bool = False
    failures: int = 0
    retry_at: float | None = None
    next_publish: float = 0.0
    seq: int = 0


class Fleet:
    """All the clients and the one loop that drives them.

    A subclass may set ``backend_class`` to give the backend another client type.
    """

    backend_class: type[mqtt.Client] = mqtt.Client

    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.port = port
        self.rng = random.Random(args.seed)
        self.selector = selectors.DefaultSelector()
        # The socket each client was registered with: paho closes (and the kernel reuses
        # the fd of) a dropped socket before we hear of it, so unregister by object.
        self.registered: dict[mqtt.Client, Any] = {}
        self.counters = Counters()
        self.broker_back_at: float | None = None
        self.hubs = [self._make_hub(f"hub-{i:05d}") for i in range(args.hubs)]
        self.backend = self._make_backend()
        self.clients = [h.client for h in self.hubs]
        self.payload = b"x" * args.payload_bytes

    def _client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.on_publish = self._on_publish
        return client

    def _make_hub(self, hub_id: str) -> Hub:
        client = self._client(hub_id)
        client.will_set(f"{PREFIX}/{hub_id}/status", b'{"state":"offline"}', qos=1, retain=True)
        hub = Hub(hub_id, client)
        client.on_connect = lambda _c, _u, _f, rc, _p: self._on_connect(hub, rc)
        client.on_disconnect = lambda _c, _u, _f, _rc, _p: self._on_disconnect(hub)
        return hub

    def _make_backend(self) -> mqtt.Client:
        # The backend has its own paho thread: paho reads one packet per loop_read() for
        # a client with nothing in flight, too slow to drain thousands of hubs from the
        # shared loop. Only this thread touches counters.received.
        backend = self.backend_class(
            CallbackAPIVersion.VERSION2,
            client_id="fleet-backend",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        backend.reconnect_delay_set(1, 2)
        backend.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/+/readings", qos=1)
        backend.on_message = self._on_message
        return backend

    def _on_publish(self, *_: object) -> None:
        self.counters.acked += 1

    def _on_message(self, *_: object) -> None:
        self.counters.received += 1

    def _on_connect(self, hub: Hub, code: ReasonCode) -> None:
        if code.is_failure:
            return
        hub.connected = True
        hub.failures = 0
        self.counters.connects += 1
        if self.broker_back_at is not None:
            self.counters.reconnect_at.append(time.monotonic() - self.broker_back_at)
        status = f"{PREFIX}/{hub.hub_id}/status"
        hub.client.publish(status, b'{"state":"online"}', qos=1, retain=True)
        hub.client.subscribe(f"{PREFIX}/{hub.hub_id}/request/+", qos=1)
        # Heartbeat phase randomised per hub (reliability.md 6.7).
        hub.next_publish = time.monotonic() + self.rng.uniform(0, 1 / self.args.rate)

    def _on_disconnect(self, hub: Hub) -> None:
        if hub.connected:
            hub.connected = False
            self._schedule_retry(hub)

    def _schedule_retry(self, hub: Hub) -> None:
        ceiling_s = min(self.args.cap_s, self.args.base_s * 2**hub.failures)
        hub.failures += 1
        hub.retry_at = time.monotonic() + self.rng.uniform(0, ceiling_s)  # full jitter

    def open(self, client: mqtt.Client) -> bool:
        """Blocking TCP connect (loopback: sub-millisecond) and register the socket."""
        try:
            client.connect("127.0.0.1", self.port, keepalive=60)
        except OSError:
            return False
        sock = client.socket()
        if sock is not None:
            self.selector.register(sock, selectors.EVENT_READ, client)
            self.registered[client] = sock
        client.loop_write()  # CONNECT goes out now, not on the next pass
        return True

    def forget(self, client: mqtt.Client) -> None:
        sock = self.registered.pop(client, None)
        if sock is not None:
            self.selector.unregister(sock)

    def pump(self, timeout_s: float) -> None:
        """Read whatever the broker sent (CONNACKs, PUBACKs, messages)."""
        for key, _events in self.selector.select(timeout_s):
            client = key.data
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                self.forget(client)
                client.loop_misc()

    def step(self, now: float, timeout_s: float = 0.02) -> None:
        """One pass: socket I/O, due publishes, due reconnects."""
        self.pump(timeout_s)
        opens = 0
        for hub in self.hubs:
            if hub.connected and now >= hub.next_publish:
                hub.seq += 1
                info = hub.client.publish(f"{PREFIX}/{hub.hub_id}/readings", self.payload, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.counters.published += 1
                hub.next_publish = now + 1 / self.args.rate
            elif (
                not hub.connected
                and hub.retry_at is not None
                and now >= hub.retry_at
                and opens < MAX_OPENS_PER_PASS
            ):
                opens += 1
                hub.retry_at = None
                self.forget(hub.client)
                if not self.open(hub.client):
                    self._schedule_retry(hub)
        for client in self.clients:
            if client.want_write():
                client.loop_write()

    def housekeeping(self) -> None:
        """paho's keepalive and timeouts; cheap, so once a second is plenty."""
        for client in self.clients:
            client.loop_misc()


def broker_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, resident set in bytes) of the broker, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu_s, rss_kib * 1024


def connect_all(fleet: Fleet, deadline: float) -> float:
    """Connect every hub as fast as the broker accepts; returns seconds taken."""
    started = time.monotonic()
    fleet.backend.connect("127.0.0.1", fleet.port, keepalive=60)
    fleet.backend.loop_start()
    for index, hub in enumerate(fleet.hubs):
        if not fleet.open(hub.client):
            fleet._schedule_retry(hub)  # noqa: SLF001 - the fleet's own retry path
        if index % 50 == 0:
            fleet.pump(0)
    while fleet.counters.connects < len(fleet.hubs) and time.monotonic() < deadline:
        fleet.step(time.monotonic())
    return time.monotonic() - started


def run(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker inherits it
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as workdir:
        broker = MosquittoBroker(workdir=Path(workdir), extra_lines=["max_connections -1"])
        broker.start()
        fleet = Fleet(args, broker.port)
        try:
            report(args, broker, fleet)
        finally:
            fleet.backend.disconnect()
            fleet.backend.loop_stop()
            broker.kill()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def report(args: argparse.Namespace, broker: MosquittoBroker, fleet: Fleet) -> None:
    if broker.process is None:
        raise RuntimeError("the broker is not running")
    start = time.monotonic()
    deadline = start + args.seconds
    cpu_before, _ = broker_sample(broker.process.pid)
    connect_s = connect_all(fleet, deadline)
    cpu0, rss0 = broker_sample(broker.process.pid)
    print(
        f"hubs: {args.hubs}, connected {fleet.counters.connects} in {connect_s:.2f} s "
        f"-> {fleet.counters.connects / connect_s:.0f} connects/s; broker CPU "
        f"{100 * (cpu0 - cpu_before) / connect_s:.0f}% of one core, RSS {rss0 / 2**20:.1f} MiB"
    )
    steady_start = time.monotonic()
    base = (fleet.counters.published, fleet.counters.acked, fleet.counters.received)
    restart_at = steady_start + (deadline - steady_start) / 3 if args.restart else None
    restarter: threading.Thread | None = None
    last_misc = steady_start
    peak_rss = 0
    while (now := time.monotonic()) < deadline:
        fleet.step(now)
        if now - last_misc >= 1.0:
            fleet.housekeeping()
            last_misc = now
            if broker.is_running:
                peak_rss = max(peak_rss, broker_sample(broker.process.pid)[1])
        if restart_at is not None and now >= restart_at:
            restart_at = None
            # On its own thread, so the downtime is what was asked for however busy the
            # hubs' loop is; the hubs keep running: they notice, retry and back off.
            restarter = threading.Thread(target=restart_broker, args=(fleet, broker))
            restarter.start()
        if restarter is not None and not restarter.is_alive() and broker.process is not None:
            restarter.join()
            restarter = None
            cpu0 = broker_sample(broker.process.pid)[0]
    wall_s = time.monotonic() - steady_start
    cpu1, rss = broker_sample(broker.process.pid)
    published, acked, received = (
        fleet.counters.published - base[0],
        fleet.counters.acked - base[1],
        fleet.counters.received - base[2],
    )
    print(
        f"steady {wall_s:.1f} s: published {published / wall_s:.0f} msg/s, "
        f"PUBACKed {acked / wall_s:.0f} msg/s, backend received {received / wall_s:.0f} msg/s"
    )
    print(
        f"broker: CPU {100 * (cpu1 - cpu0) / wall_s:.0f}% of one core "
        f"(since last start), RSS {rss / 2**20:.1f} MiB (peak {max(peak_rss, rss) / 2**20:.1f})"
    )
    if args.restart:
        print_reconnects(fleet, args)


def restart_broker(fleet: Fleet, broker: MosquittoBroker) -> None:
    """Stop (SIGTERM), stay down ``--down-s``, start again on the same port."""
    began = time.monotonic()
    broker.stop()
    time.sleep(fleet.args.down_s)
    broker.start()
    fleet.broker_back_at = time.monotonic()
    print(f"restart: broker down for {fleet.broker_back_at - began:.2f} s")


def print_reconnects(fleet: Fleet, args: argparse.Namespace) -> None:
    times = sorted(fleet.counters.reconnect_at)
    print(
        f"reconnected after restart: {len(times)}/{args.hubs} hubs "
        f"(full jitter, base {args.base_s} s, cap {args.cap_s} s)"
    )
    if not times:
        return
    for q in (0.5, 0.9, 0.99, 1.0):
        within_s = times[min(len(times) - 1, int(q * len(times)))]
        print(f"  {int(q * 100):>3}% back within {within_s:.2f} s")
    buckets: dict[int, int] = {}
    for t in times:
        buckets[int(t)] = buckets.get(int(t), 0) + 1
    peak = max(buckets.values())
    print("  reconnects per second after the broker came back:")
    for second in range(max(buckets) + 1):
        count = buckets.get(second, 0)
        print(f"  {second:>4}s {count:>6} {'#' * (count * 50 // peak)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hubs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0, help="total run time bound")
    parser.add_argument("--rate", type=float, default=0.5, help="reading messages/s per hub")
    parser.add_argument("--payload-bytes", type=int, default=400)
    parser.add_argument("--restart", action="store_true", help="restart the broker mid-run")
    parser.add_argument("--down-s", type=float, default=2.0, help="broker downtime on restart")
    parser.add_argument("--base-s", type=float, default=1.0, help="backoff base")
    parser.add_argument("--cap-s", type=float, default=10.0, help="backoff cap")
    parser.add_argument("--seed", type=int, default=1)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
