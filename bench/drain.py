"""Drain benchmark: N pending readings in a real outbox -> local Mosquitto, PUBACK-confirmed.

Prints readings/s for batched messages and for one reading per message, with machine
info and load. Every reading counted is PUBACKed (reason < 0x80) and marked sent in
SQLite. No subscriber is attached (the broker answers 0x10, which counts as accepted), so
the figure is the hub's cost, not a consumer's.

On a shared machine readings/s follows the load; the CPU figures do much less: "CPU"
is this process's user+system time per reading, "loop" the event-loop thread's share
(encoding, paho, publisher), the rest is the outbox's SQLite thread (select,
mark_sent). Mosquitto's own CPU is not counted.

    python -m bench.drain [--readings 200000] [--format compact|fhir] [--batch-size 50]

``python -m bench.paho_ceiling`` measures paho alone, the ceiling of the one-reading
figure (docs/publisher.md has both, measured together).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt

from agent.clock import SystemClock
from agent.config import Config, HubConfig, MqttConfig, PatientConfig, StorageConfig
from agent.health import Health
from agent.localbroker import MosquittoBroker, find_mosquitto
from agent.outbox import Outbox
from agent.payloads import PayloadContext, make_encoder
from agent.publisher import Publisher
from agent.readings import Cadence, DeviceIdentity, Kind, PatientBinding, Quantity, make_reading

CAPTURE_CHUNK = 1000


def machine_info() -> str:
    binary = find_mosquitto() or "mosquitto"
    version = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False)
    mosq = version.stdout.splitlines()[0] if version.stdout else "unknown"
    return (
        f"{platform.platform()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"paho {paho.mqtt.__version__} | {mosq} | SQLite {sqlite3.sqlite_version}"
    )


async def fill(path: Path, count: int) -> float:
    clock = SystemClock()
    device = DeviceIdentity(device_id="oxi-1", driver="nonin")
    patient = PatientBinding("bench-patient", 1)
    outbox = await Outbox.open(path, capacity_readings=max(count * 2, 100))
    started = time.perf_counter()
    for start in range(0, count, CAPTURE_CHUNK):
        batch = [
            make_reading(
                device=device,
                patient=patient,
                kind=Kind.SPO2,
                cadence=Cadence.CONTINUOUS,
                values=(Quantity("spo2", 97.0, "%"), Quantity("pulse_rate", 64.0, "/min")),
                received=clock.now(),
                driver_version="bench",
            )
            for _ in range(min(CAPTURE_CHUNK, count - start))
        ]
        await outbox.capture(batch)
    elapsed = time.perf_counter() - started
    await outbox.close()
    return elapsed


@dataclass(frozen=True, slots=True)
class DrainResult:
    """One drain: wall time and CPU seconds (whole process, and the event-loop thread)."""

    elapsed_s: float
    cpu_s: float
    loop_cpu_s: float


async def drain(
    path: Path, broker: MosquittoBroker, count: int, batch_size: int, fmt: str, window: int
) -> DrainResult:
    config = Config(
        hub=HubConfig(id="bench-hub"),
        patient=PatientConfig(id="bench-patient", binding_version=1),
        mqtt=MqttConfig(
            host=broker.host,
            port=broker.port,
            insecure_plaintext=True,
            batch_size=batch_size,
            inflight_window=window,
            reconnect_min_s=0.01,
        ),
        storage=StorageConfig(path=path),
    )
    outbox = await Outbox.open(path, capacity_readings=max(count * 2, 100))
    clock = SystemClock()
    encoder = make_encoder(fmt, PayloadContext(hub_id="bench-hub", agent_version="bench"))  # type: ignore[arg-type]
    health = Health(hub_id="bench-hub", clock=clock)
    publisher = Publisher(config, outbox, encoder, health, clock, {"devices": []})
    started = time.perf_counter()
    cpu_started, loop_started = time.process_time(), time.thread_time()
    task = asyncio.create_task(publisher.run())
    await publisher.flush()
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    loop_cpu_s = time.thread_time() - loop_started
    await publisher.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stats = await outbox.stats()
    await outbox.close()
    if stats.sent != count or stats.pending or stats.rejected:
        sys.exit(f"drain incomplete: {stats}")
    return DrainResult(elapsed, cpu_s, loop_cpu_s)


def report_line(args: argparse.Namespace, batch_size: int, result: DrainResult) -> str:
    """One drain's figures: rate, then CPU per reading (process, event-loop thread)."""
    count = args.readings
    return (
        f"drain {args.format}, {batch_size:>3} readings/message, window {args.window}: "
        f"{count} in {result.elapsed_s:.2f} s = {count / result.elapsed_s:,.0f} readings/s "
        f"({count / batch_size / result.elapsed_s:,.0f} messages/s); CPU "
        f"{result.cpu_s / count * 1e6:.1f} us/reading (loop {result.loop_cpu_s / count * 1e6:.1f})"
        f"; load {os.getloadavg()[0]:.1f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--format", choices=["compact", "fhir"], default="compact")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--window", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(machine_info())
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print("caveat: shared, noisy 2-core VM with a host-cached disk; a Pi is 3-5x slower (CPU)")
    with tempfile.TemporaryDirectory(prefix="wardlink-drain-") as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(workdir=work / "mosquitto")
        broker.start()
        try:
            seed = work / "seed.db"
            fill_s = await fill(seed, args.readings)
            print(
                f"captured {args.readings} readings in {fill_s:.1f} s "
                f"({args.readings / fill_s:,.0f}/s, {CAPTURE_CHUNK} per capture call)"
            )
            for batch_size in (args.batch_size, 1):
                db = work / f"drain-{batch_size}.db"
                for suffix in ("", "-wal", "-shm"):
                    source = Path(f"{seed}{suffix}")
                    if source.exists():  # noqa: ASYNC240 - setup, not measured
                        shutil.copy(source, f"{db}{suffix}")
                result = await drain(
                    db, broker, args.readings, batch_size, args.format, args.window
                )
                print(report_line(args, batch_size, result))
        finally:
            broker.kill()


if __name__ == "__main__":
    asyncio.run(main())
