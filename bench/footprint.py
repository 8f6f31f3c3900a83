"""Footprint of the real agent: time from exec to READY=1, RSS after start, CPU while idle.

Runs `python -m agent run -c FILE` with two emulated serial oximeters streaming at their
real rate (Nonin DF8 1/s, Contec V7 60/s) and a private Mosquitto, with a fake
NOTIFY_SOCKET to time READY=1. Prints medians over --runs starts.

    python -m bench.footprint [--runs 5] [--idle-s 30]

Targets (issue 2): RSS <= 45 MB, exec -> READY <= 0.5 s, idle CPU <= 0.5 % of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.localbroker import MosquittoBroker
from drivers.emulators.serial import PtySerialDevice
from tests.e2e.harness import serial_device, write_config

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def one_run(
    workdir: Path, broker: MosquittoBroker, idle_s: float
) -> tuple[float, float, float]:
    devices = [
        PtySerialDevice("nonin-df8", link=workdir / "nonin.tty"),
        PtySerialDevice("contec-v7", link=workdir / "contec.tty"),
    ]
    for device in devices:
        device.plug()
    tasks = [asyncio.create_task(d.run()) for d in devices]
    yaml = serial_device("nonin", "nonin-df8", devices[0].port, 1.0) + serial_device(
        "contec", "contec-v7", devices[1].port, 1.0
    )
    config = write_config(workdir, port=broker.port, prefix="bench", devices_yaml=yaml)
    notify_path = workdir / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)  # noqa: FBT003 - socket API
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "-c", str(config),
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    while True:
        data = await loop.sock_recv(notify, 4096)
        if data.startswith(b"READY=1"):
            ready_s = time.monotonic() - started
            break
    await asyncio.sleep(3)  # connected, devices streaming
    rss = rss_mib(process.pid)
    cpu_before = cpu_s(process.pid)
    await asyncio.sleep(idle_s)
    cpu_pct = 100 * (cpu_s(process.pid) - cpu_before) / idle_s
    rss = max(rss, rss_mib(process.pid))
    process.terminate()
    await process.wait()
    notify.close()
    for task in tasks:
        task.cancel()
    for device in devices:
        device.close()
    (workdir / "outbox.db").unlink(missing_ok=True)
    return ready_s, rss, cpu_pct


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mosquitto")
        broker.start()
        try:
            results = [await one_run(Path(tmp), broker, args.idle_s) for _ in range(args.runs)]
        finally:
            broker.stop()
    ready, rss, cpu = (statistics.median(x) for x in zip(*results, strict=True))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"runs: {args.runs}, idle window {args.idle_s:.0f} s, 2 serial oximeters streaming")
    print(f"exec -> READY=1   median {ready:.3f} s   (target <= 0.5 s)")
    print(f"RSS after start   median {rss:.1f} MiB  (target <= 45 MB)")
    print(f"CPU while idle    median {cpu:.2f} % of one core (target <= 0.5 %)")


if __name__ == "__main__":
    asyncio.run(main())
