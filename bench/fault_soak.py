"""Fault soak: the whole agent (real process) on emulated devices under a random fault schedule.

Two pty oximeters (Nonin DF8, Contec V7) feed ``python -m agent run -c FILE``, which
publishes to a private Mosquitto watched by a recording backend subscriber. For
``--minutes`` a random schedule injects, for real: agent kill -9 (then a restart, as
systemd would), broker graceful stop, broker kill -9, quick broker restart, pty unplug and
replug, and garbage / corrupted units on the line. Then the faults stop, the agent drains,
and the backend's copy is set against the outbox.

The agent reaches the broker through a small gate (a TCP forwarder in this script) that
opens only once the backend has subscribed after a broker start; otherwise a reading
published in that instant would be PUBACKed to nobody (0x10) and look lost.

Prints: faults injected (by kind), agent restarts, readings captured (committed), delivered,
lost (must be 0), of which PUBACKed by a broker that was then killed (the documented
broker-crash window, README "A PUBACK means the broker took responsibility"), duplicates on
the wire, id/seq conflicts, integrity, max RSS of the agent. Exit status 1 if anything the
agent is responsible for was lost.

Usage: python bench/fault_soak.py [--minutes 3] [--seed 1] [--mean-gap-s 4]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.localbroker import MosquittoBroker, free_port
from tests.e2e.harness import (
    AgentProcess,
    committed_rows,
    decode_readings,
    integrity,
    serial_device,
)
from tests.emulators.subscriber import Subscriber
from tests.faults.agent_rig import fault_config, oximeter, pending_ids, wait_for, wire_tally

if TYPE_CHECKING:
    from drivers.emulators.serial import PtySerialDevice

PREFIX = "fault-soak"
DRAIN_TIMEOUT_S = 180.0
FAULTS = ("agent_kill", "broker_stop", "broker_kill", "broker_restart", "unplug", "garbage")


class Gate:
    """A loopback TCP forwarder to the broker that can refuse new connections."""

    def __init__(self, upstream_port: int) -> None:
        """Listen later (``start``); closed until ``open``."""
        self.port = free_port()
        self._upstream_port = upstream_port
        self.is_open = False
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on 127.0.0.1:``port``."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            writer.close()  # the agent sees a closed connection and backs off
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            return
        pumps = [_pump(reader, up_writer), _pump(up_reader, writer)]
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass  # either side went away: close both below
    finally:
        writer.close()


class Soak:
    """The rig: broker, gate, backend, devices, agent; and the figures."""

    def __init__(self, workdir: Path, seed: int) -> None:
        """Set up the parts (nothing started)."""
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.broker = MosquittoBroker(workdir=workdir / "mosquitto")
        self.gate = Gate(self.broker.port)
        self.subs: list[Subscriber] = []
        self.faults: collections.Counter[str] = collections.Counter()
        self.restarts = 0
        self.max_rss_kib = 0
        self.acked_before_broker_kill: set[object] = set()
        self.agent: AgentProcess | None = None

    async def broker_up(self) -> None:
        """Start the broker, subscribe the backend, then let the agent through."""
        self.broker.start()
        self.subs.append(
            await asyncio.to_thread(Subscriber, "127.0.0.1", self.broker.port, [f"{PREFIX}/#"])
        )
        self.gate.is_open = True

    async def broker_down(self, how: str) -> None:
        """Close the gate and stop or kill the broker; the backend's client goes too."""
        self.gate.is_open = False
        if how == "kill":
            self.acked_before_broker_kill |= set(self.sent_ids())
            self.broker.kill()
        else:
            self.broker.stop()
        if self.subs:
            await asyncio.to_thread(self.subs[-1].close)

    def sent_ids(self) -> list[object]:
        """reading_ids the outbox has marked sent (PUBACKed)."""
        db = self.workdir / "outbox.db"
        if not db.exists():
            return []
        with closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("SELECT reading_id FROM readings WHERE state >= 1").fetchall()
        return [uuid.UUID(bytes=bytes(r[0])) for r in rows]

    def received(self) -> list[dict[str, object]]:
        """Every reading the backend got, across broker restarts."""
        return [r for s in self.subs for r in decode_readings(s.messages("/readings"))]

    async def sample_rss(self) -> None:
        """Track the agent's peak resident set size (VmHWM of each process)."""
        while True:
            process = self.agent.process if self.agent else None
            if process is not None and process.returncode is None:
                self.max_rss_kib = max(self.max_rss_kib, peak_rss_kib(process.pid))
            await asyncio.sleep(0.5)

    async def inject(self, kind: str, devices: list[PtySerialDevice]) -> None:
        """One fault, for real, and its repair."""
        self.faults[kind] += 1
        rng = self.rng
        if self.agent is None:
            raise RuntimeError("start the agent before injecting faults")
        if kind == "agent_kill":
            await self.agent.kill()
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            await self.agent.start()
            self.restarts += 1
        elif kind in ("broker_stop", "broker_kill"):
            await self.broker_down("kill" if kind == "broker_kill" else "stop")
            await asyncio.sleep(rng.uniform(0.5, 6.0))
            await self.broker_up()
        elif kind == "broker_restart":
            await self.broker_down("stop")
            await self.broker_up()
        elif kind == "unplug":
            device = rng.choice(devices)
            device.unplug()
            await asyncio.sleep(rng.uniform(0.3, 4.0))
            device.plug()
        else:
            device = rng.choice(devices)
            device.inject_garbage(rng.randint(5, 200))
            device.corrupt_next(rng.randint(1, 5))


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in KiB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def run(workdir: Path, minutes: float, seed: int, mean_gap_s: float) -> int:
    """Run the soak; print the figures; return the exit status."""
    soak = Soak(workdir, seed)
    await soak.gate.start()
    await soak.broker_up()
    started = time.monotonic()
    sampler = asyncio.create_task(soak.sample_rss())
    try:
        async with (
            oximeter(workdir / "nonin.tty", "nonin-df8", speed=10.0) as nonin,
            oximeter(workdir / "contec.tty", "contec-v7", speed=1.0, seed=2) as contec,
        ):
            devices = serial_device("nonin", "nonin-df8", nonin.port, interval_s=0.2)
            devices += serial_device("contec", "contec-v7", contec.port, interval_s=0.5)
            config = fault_config(workdir, port=soak.gate.port, prefix=PREFIX, devices_yaml=devices)
            soak.agent = AgentProcess(config=config, log_path=workdir / "agent.log")
            await soak.agent.start()
            deadline = started + minutes * 60
            while time.monotonic() < deadline:
                await asyncio.sleep(soak.rng.expovariate(1 / mean_gap_s))
                await soak.inject(soak.rng.choice(FAULTS), [nonin, contec])
            drain_started = time.monotonic()
            committed = committed_rows(workdir / "outbox.db")
            try:
                await wait_for(
                    lambda: wire_tally(soak.received(), committed).lost == 0,
                    DRAIN_TIMEOUT_S,
                    "every committed reading delivered",
                )
            except TimeoutError as exc:
                print(f"drain: {exc}")
            drain_s = time.monotonic() - drain_started
            await soak.agent.terminate()
        return report(soak, time.monotonic() - started, drain_s)
    finally:
        sampler.cancel()
        if soak.agent is not None:
            await soak.agent.kill()
        for sub in soak.subs:
            sub.close()
        soak.broker.kill()
        await soak.gate.close()


def report(soak: Soak, wall_s: float, drain_s: float) -> int:
    """Print the figures; 0 when the agent lost nothing."""
    db = soak.workdir / "outbox.db"
    committed = committed_rows(db)
    tally = wire_tally(soak.received(), committed, pending_ids(db))
    seen = {r["reading_id"] for r in soak.received()}
    lost_ids = set(committed) - seen
    broker_window = len(lost_ids & soak.acked_before_broker_kill)
    print(f"wall time             {wall_s:.0f} s (drain after the last fault {drain_s:.1f} s)")
    print(f"faults injected       {sum(soak.faults.values())}  {dict(sorted(soak.faults.items()))}")
    print(f"agent restarts        {soak.restarts}")
    print(f"readings captured     {tally.committed}")
    print(f"delivered             {tally.delivered}")
    print(f"lost                  {tally.lost}")
    print(f"  of which PUBACKed, then the broker was killed: {broker_window}")
    print(f"owed (still pending)  {tally.owed}")
    print(f"duplicates on wire    {tally.duplicates}  (of {tally.copies} copies)")
    print(f"id/seq conflicts      {tally.id_seq_conflicts}")
    print(f"uncommitted on wire   {tally.uncommitted_on_wire}")
    print(f"integrity             {integrity(db)}")
    print(f"max RSS of the agent  {soak.max_rss_kib / 1024:.1f} MiB")
    broken = tally.lost - broker_window or tally.id_seq_conflicts or tally.uncommitted_on_wire
    return 1 if broken or integrity(db) != "ok" else 0


def main() -> int:
    """Parse arguments and run in a throw-away directory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mean-gap-s", type=float, default=4.0, help="mean time between faults")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fault-soak-") as tmp:
        return asyncio.run(run(Path(tmp), args.minutes, args.seed, args.mean_gap_s))


if __name__ == "__main__":
    sys.exit(main())
