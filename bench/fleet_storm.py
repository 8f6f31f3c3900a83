"""Fleet reconnect storm: N hubs against a Mosquitto that restarts; nothing may be lost.

Builds on bench/fleet_sim.py (its one-thread selector ``Fleet``, full-jitter retries,
``restart_broker`` and the reconnect histogram) and adds what a storm test needs:

- every readings message carries a unique number, and the backend keeps the set it got,
  so ``lost = sent - received`` is exact and duplicates are counted;
- the broker keeps sessions across the restart (``persistence true``, graceful stop), and
  the backend holds a persistent session, so messages PUBACKed while the backend was
  away are queued for it rather than dropped (with persistence off, Mosquitto forgets
  them: that loss is the broker's, see docs/faults-network.md);
- after the run, a drain phase waits until the backend has everything (bounded).

The simulated hubs keep unacknowledged messages in paho's memory and resend them after
reconnecting (the real agent keeps them in its SQLite outbox instead).

Loopback only, bounded in time. Figures are for THIS machine (2 shared cores, noisy).

    python bench/fleet_storm.py --hubs 500 --seconds 15
    python bench/fleet_storm.py --hubs 2000 --seconds 40 --down-s 5 --cap-s 20
    python bench/fleet_storm.py --hubs 500 --seconds 8 --json   # one JSON line (CI test)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import selectors
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # agent.* when run as a script

from fleet_sim import (
    PREFIX,
    Fleet,
    Hub,
    connect_all,
    print_reconnects,
    restart_broker,
)

from agent.localbroker import MosquittoBroker

if TYPE_CHECKING:
    from collections.abc import Sequence

    from paho.mqtt.reasoncodes import ReasonCode

SESSION_EXPIRY_S = 3600
DRAIN_LIMIT_S = 30.0


class _PersistentBackend(mqtt.Client):
    """The backend's client: a persistent session, driven by its own epoll thread.

    paho's own ``loop_start`` thread uses select(), which cannot watch a descriptor above
    1023: with thousands of hub sockets open, the backend's socket after a broker
    restart is above that and paho's thread never reconnects it. This thread uses the
    selectors module (epoll) instead.
    """

    _stopping: threading.Event
    _runner: threading.Thread

    def connect(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - paho's signature
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        kwargs.update(clean_start=False, properties=props)
        return super().connect(*args, **kwargs)

    def loop_start(self) -> MQTTErrorCode:
        """Run the epoll loop on a thread of its own."""
        self._stopping = threading.Event()
        self._runner = threading.Thread(target=self._run, name="backend", daemon=True)
        self._runner.start()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_stop(self) -> MQTTErrorCode:
        """Stop the loop thread."""
        self._stopping.set()
        self._runner.join(5)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            watched: Any = None
            last_misc = 0.0
            while not self._stopping.is_set():
                sock = self.socket()
                if sock is not watched:
                    if watched is not None:
                        with contextlib.suppress(KeyError, ValueError, OSError):
                            selector.unregister(watched)
                    if sock is not None:
                        selector.register(sock, selectors.EVENT_READ)
                    watched = sock
                if sock is None:
                    self._stopping.wait(0.5)
                    with contextlib.suppress(OSError):
                        self.reconnect()
                    continue
                if selector.select(0.05):
                    self.loop_read(1000)
                if self.want_write():
                    self.loop_write()
                if time.monotonic() - last_misc >= 1.0:
                    self.loop_misc()
                    last_misc = time.monotonic()


class StormFleet(Fleet):
    """A Fleet whose readings are numbered and whose backend keeps its session."""

    def __init__(self, args: argparse.Namespace, port: int) -> None:
        """Build the hubs and a numbered-message backend."""
        self.sent_numbers = 0
        self.received_numbers: set[int] = set()
        self.received_total = 0
        self._padding = b""
        self._lock = threading.Lock()
        self.first_connect_done: set[str] = set()
        self.reconnected_at: list[float] = []  # time.monotonic() of every later CONNACK
        super().__init__(args, port)

    def _on_connect(self, hub: Hub, code: ReasonCode) -> None:
        # Fleet records reconnects only once broker_back_at is set, which the restart
        # thread does just after the port opens: hubs quicker than that would be missed.
        super()._on_connect(hub, code)
        if code.is_failure:
            return
        if hub.hub_id in self.first_connect_done:
            self.reconnected_at.append(time.monotonic())
        self.first_connect_done.add(hub.hub_id)

    @property
    def payload(self) -> bytes:
        """A new numbered payload each time ``Fleet.step`` publishes one."""
        self.sent_numbers += 1
        return b"%d|" % self.sent_numbers + self._padding

    @payload.setter
    def payload(self, value: bytes) -> None:
        self._padding = value

    def _make_backend(self) -> mqtt.Client:
        backend = _PersistentBackend(
            CallbackAPIVersion.VERSION2,
            client_id="fleet-backend",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        backend.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/+/readings", qos=1)
        backend.on_message = self._on_message
        return backend

    def _on_message(self, *args: object) -> None:
        msg = args[2]
        if not isinstance(msg, mqtt.MQTTMessage):
            raise TypeError(f"paho gave {type(msg).__name__}, not a message")
        number = int(bytes(msg.payload).split(b"|", 1)[0])
        with self._lock:
            self.received_numbers.add(number)
            self.received_total += 1
            self.counters.received += 1


@dataclass
class StormResult:
    """What a storm run measured."""

    hubs: int
    connected_at_start: int
    down_s: float
    reconnected: int
    reconnect_s: list[float] = field(default_factory=list)
    sent: int = 0
    received_unique: int = 0
    duplicates: int = 0
    drain_s: float = 0.0

    @property
    def lost(self) -> int:
        """Messages a hub sent that the backend never got."""
        return self.sent - self.received_unique


def run_storm(args: argparse.Namespace) -> StormResult:
    """Connect, stream, restart the broker a third of the way in, stream, drain."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker inherits it
    try:
        with tempfile.TemporaryDirectory(prefix="fleet-storm-") as workdir:
            broker = MosquittoBroker(
                workdir=Path(workdir), persistence=True, extra_lines=["max_connections -1"]
            )
            broker.start()
            fleet = StormFleet(args, broker.port)
            try:
                return _storm(args, broker, fleet)
            finally:
                fleet.backend.disconnect()
                fleet.backend.loop_stop()
                for client in fleet.clients:
                    fleet.forget(client)
                    if client.socket() is not None:
                        client.disconnect()
                fleet.selector.close()
                broker.kill()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _storm(args: argparse.Namespace, broker: MosquittoBroker, fleet: StormFleet) -> StormResult:
    deadline = time.monotonic() + args.seconds
    connect_all(fleet, deadline)
    result = StormResult(args.hubs, fleet.counters.connects, args.down_s, 0)
    restart_at = time.monotonic() + (deadline - time.monotonic()) / 3
    restarter: threading.Thread | None = None
    last_misc = time.monotonic()
    while (now := time.monotonic()) < deadline:
        fleet.step(now)
        if now - last_misc >= 1.0:
            fleet.housekeeping()
            last_misc = now
        if restarter is None and now >= restart_at:
            restarter = threading.Thread(target=restart_broker, args=(fleet, broker))
            restarter.start()
    if restarter is not None:
        restarter.join()
    result.sent = fleet.sent_numbers
    drain_started = time.monotonic()
    _drain(fleet, result.sent, DRAIN_LIMIT_S, verbose=args.verbose)
    result.drain_s = time.monotonic() - drain_started
    with fleet._lock:  # noqa: SLF001
        result.received_unique = len(fleet.received_numbers & set(range(1, result.sent + 1)))
        result.duplicates = fleet.received_total - len(fleet.received_numbers)
    back_at = fleet.broker_back_at or 0.0
    result.reconnect_s = sorted(max(0.0, t - back_at) for t in fleet.reconnected_at)
    result.reconnected = len(result.reconnect_s)
    return result


def _drain(fleet: StormFleet, sent: int, limit_s: float, *, verbose: bool) -> None:
    """Stop publishing; service the sockets until the backend has all and every hub is back."""
    started = last_misc = time.monotonic()
    while time.monotonic() - started < limit_s:
        fleet.pump(0.02)
        for client in fleet.clients:
            if client.want_write():
                client.loop_write()
        if time.monotonic() - last_misc >= 1.0:
            fleet.housekeeping()
            last_misc = time.monotonic()
        _retry_due(fleet)
        with fleet._lock:  # noqa: SLF001 - our own subclass's lock
            have_all = len(fleet.received_numbers) >= sent
        if have_all and all(hub.connected for hub in fleet.hubs):
            return
        # Leave the GIL to the backend's thread: it is the one with work to do.
        time.sleep(0.05)
        if verbose:
            print(f"drain: {len(fleet.received_numbers)}/{sent} received")


def _retry_due(fleet: StormFleet) -> None:
    """Open connections whose full-jitter retry time has come (drain phase)."""
    now = time.monotonic()
    for hub in fleet.hubs:
        if not hub.connected and hub.retry_at is not None and now >= hub.retry_at:
            hub.retry_at = None
            fleet.forget(hub.client)
            if not fleet.open(hub.client):
                fleet._schedule_retry(hub)  # noqa: SLF001 - the fleet's own retry path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line (also used by the CI test to build a small run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hubs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=15.0, help="run time before drain")
    parser.add_argument("--rate", type=float, default=0.5, help="reading messages/s per hub")
    parser.add_argument("--payload-bytes", type=int, default=400)
    parser.add_argument("--down-s", type=float, default=2.0, help="broker downtime")
    parser.add_argument("--base-s", type=float, default=0.5, help="backoff base")
    parser.add_argument("--cap-s", type=float, default=8.0, help="backoff cap")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print drain progress")
    parser.add_argument("--json", action="store_true", help="print one JSON result line")
    return parser.parse_args(argv)


def main() -> None:
    """Run one storm and print the figures."""
    args = parse_args()
    args.restart = True
    result = run_storm(args)
    if args.json:
        print(json.dumps(asdict(result) | {"lost": result.lost}), flush=True)
        return
    print(
        f"hubs {result.hubs} (connected {result.connected_at_start}), broker down "
        f"{result.down_s:.1f} s; reconnected {result.reconnected}/{result.hubs}"
    )
    print(
        f"messages sent {result.sent}, received {result.received_unique}, "
        f"lost {result.lost}, duplicates {result.duplicates}, drain {result.drain_s:.1f} s"
    )
    fake = argparse.Namespace(hubs=args.hubs, base_s=args.base_s, cap_s=args.cap_s)
    holder = argparse.Namespace(counters=argparse.Namespace(reconnect_at=result.reconnect_s))
    print_reconnects(holder, fake)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
