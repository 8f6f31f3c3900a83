"""Footprint of the real agent: time from exec to READY=1, RSS after start, CPU while idle.

Runs `python -m agent run -c FILE` against a private Mosquitto, with a fake NOTIFY_SOCKET
to time READY=1, in one of three device scenarios:

- ``streaming``: two emulated serial oximeters at their real rate (Nonin DF8 1 reading/s,
  Contec V7 60 packets/s);
- ``silent``: the same two ports plugged in and open, but no data (finger not in, or a
  Contec waiting for a start command that never takes);
- ``none``: no device configured.

``--timers production`` (the default) uses the config defaults a hub runs with (health
every 60 s, MQTT keep-alive 60 s, group commit 5 ms, batches of 50); ``--timers test``
uses the e2e harness's fast timers (health every 2 s, keep-alive 5 s) to compare with the
figures measured before the timers were made part of the conditions.

CPU is the agent's own (utime + stime from /proc, every thread; the emulators and the
broker run in other processes). Wake-ups are the agent's voluntary context switches per
second, all threads: a thread that sleeps in epoll/futex and is woken counts one.
Payloads are FHIR, the config's default (``--format compact`` for the other).

``agent/`` and ``drivers/`` are byte-compiled first, as an install leaves them (pip
compiles at install, and the sandboxed service could not write ``__pycache__`` anyway).
Without that, a shell with ``PYTHONDONTWRITEBYTECODE=1`` (this development machine's)
makes every start compile ~470 KB of source: measured here, +0.9 MiB RSS and tens of ms
to READY=1 that no hub pays.

    python -m bench.footprint [--runs 5] [--idle-s 30] [--scenario streaming|silent|none|all]
                              [--format fhir|compact]
                              [--timers production|test]

Targets (issue 2): RSS <= 45 MB, exec -> READY <= 0.5 s, idle CPU <= 0.5 % of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.localbroker import MosquittoBroker
from drivers.emulators.serial import PtySerialDevice

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("streaming", "silent", "none")
# Config keys that differ between the two timer profiles (the rest are the defaults).
TIMERS = {
    "production": {"health": "", "mqtt": "", "storage": ""},
    "test": {
        "health": "health:\n  interval_s: 2\n",
        "mqtt": "  keepalive_s: 5\n  batch_size: 10\n",
        "storage": "  group_commit_ms: 2\n",
    },
}


@dataclass(frozen=True)
class Run:
    """One start of the agent."""

    ready_s: float
    ready_cpu_s: float
    rss_mib: float
    cpu_pct: float
    wakeups_per_s: float


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of every thread (threads that ended are not counted)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def write_config(
    workdir: Path, broker_port: int, devices_yaml: str, timers: str, payload_format: str = "fhir"
) -> Path:
    """A config as a technician would write it, plaintext to the loopback broker."""
    profile = TIMERS[timers]
    devices = devices_yaml or "  []\n"
    path = workdir / "wardlink.yaml"
    path.write_text(
        "hub:\n  id: bench-hub\n"
        "patient:\n  id: patient-bench-0001\n  binding_version: 1\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {broker_port}\n  insecure_plaintext: true\n"
        f"  topic_prefix: bench\n{profile['mqtt']}"
        f"storage:\n  path: {workdir / 'outbox.db'}\n{profile['storage']}"
        f"payload:\n  format: {payload_format}\n{profile['health']}"
        f"devices:\n{devices}",
        encoding="utf-8",
    )
    return path


def serial_entry(device_id: str, protocol: str, port: Path) -> str:
    return (
        f"  - id: {device_id}\n    driver: serial-oximeter\n    protocol: {protocol}\n"
        f"    port: {port}\n    interval_s: 1.0\n"
    )


async def wait_ready(notify: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.sock_recv(notify, 4096)
        if data.startswith(b"READY=1"):
            return


async def one_run(
    workdir: Path,
    broker: MosquittoBroker,
    scenario: str,
    timers: str,
    payload_format: str,
    idle_s: float,
) -> Run:
    devices = []
    if scenario != "none":
        devices = [
            PtySerialDevice("nonin-df8", link=workdir / "nonin.tty"),
            PtySerialDevice("contec-v7", link=workdir / "contec.tty"),
        ]
    for device in devices:
        device.plug()  # plugged in: the port exists and opens
    streams = [asyncio.create_task(d.run()) for d in devices if scenario == "streaming"]
    yaml = "".join(
        serial_entry(name, d.protocol, d.port)
        for name, d in zip(("nonin", "contec"), devices, strict=False)
    )
    config = write_config(workdir, broker.port, yaml, timers, payload_format)
    notify_path = workdir / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)  # noqa: FBT003 - socket API
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "-c", str(config),
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_ready(notify)
        ready_s = time.monotonic() - started
        ready_cpu_s = cpu_s(process.pid)  # steadier than wall time on a busy machine
        await asyncio.sleep(3)  # connected to the broker, ports open, streams flowing
        rss = rss_mib(process.pid)
        cpu_before, switches_before = cpu_s(process.pid), voluntary_switches(process.pid)
        await asyncio.sleep(idle_s)
        cpu_pct = 100 * (cpu_s(process.pid) - cpu_before) / idle_s
        wakeups = (voluntary_switches(process.pid) - switches_before) / idle_s
        rss = max(rss, rss_mib(process.pid))
    finally:  # never leave an agent behind, even on Ctrl-C
        if process.returncode is None:
            process.terminate()
        await process.wait()
        notify.close()
        for task in streams:
            task.cancel()
        for device in devices:
            device.close()
    for suffix in ("", "-wal", "-shm", ".seq"):
        (workdir / f"outbox.db{suffix}").unlink(missing_ok=True)
    return Run(ready_s, ready_cpu_s, rss, cpu_pct, wakeups)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="streaming")
    parser.add_argument("--timers", choices=sorted(TIMERS), default="production")
    parser.add_argument(
        "--format", choices=("fhir", "compact"), default="fhir", help="payload (fhir: the default)"
    )
    args = parser.parse_args()
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"runs: {args.runs} per scenario, idle window {args.idle_s:.0f} s, {args.timers} timers, "
        f"{args.format} payloads"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    compiled = all(compileall.compile_dir(ROOT / p, quiet=1) for p in ("agent", "drivers"))
    print(f"agent/ and drivers/ byte-compiled as installed: {'yes' if compiled else 'FAILED'}")
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(workdir=Path(tmp) / "mosquitto")
        broker.start()
        try:
            for scenario in scenarios:
                runs = [
                    await one_run(
                        Path(tmp), broker, scenario, args.timers, args.format, args.idle_s
                    )
                    for _ in range(args.runs)
                ]
                report(scenario, runs)
        finally:
            broker.stop()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def report(scenario: str, runs: list[Run]) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    ready = [r.ready_s for r in runs]
    print(f"[{scenario}]")
    print(
        f"  exec -> READY=1   median {median(ready):.3f} s "
        f"(min {min(ready):.3f}, max {max(ready):.3f})   (target <= 0.5 s)"
    )
    print(f"  CPU to READY=1    median {median([r.ready_cpu_s for r in runs]):.2f} s")
    rss = median([r.rss_mib for r in runs])
    print(f"  RSS after start   median {rss:.1f} MiB = {rss * 1.048576:.1f} MB  (target <= 45 MB)")
    print(
        f"  CPU while idle    median {median([r.cpu_pct for r in runs]):.2f} % of one core "
        f"(runs: {', '.join(f'{r.cpu_pct:.2f}' for r in runs)})  (target <= 0.5 %)"
    )
    print(f"  wake-ups          median {median([r.wakeups_per_s for r in runs]):.0f} /s")


if __name__ == "__main__":
    asyncio.run(main())
