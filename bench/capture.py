"""Outbox capture throughput and disk bytes written per reading over its whole life.

Runs the real path: many concurrent ``Outbox.capture()`` calls (group commit, WAL,
synchronous=FULL), then ``mark_sent`` in publisher-sized batches, then ``purge``.
Bytes are the process's ``write_bytes`` from /proc/self/io (what reached the block
layer, checkpoints included) divided by the readings captured.

    python bench/capture.py [--readings N] [--tasks T] [--per-call K] [--dir PATH]

Figures depend on this machine (2 shared cores, host-cached disk); on a Pi's SD card
flush-bound numbers are 10-100x lower (reference/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from typing import TYPE_CHECKING

from agent.outbox import Outbox
from tests.agent.test_outbox_factory import T0, StepClock, stream_sample

if TYPE_CHECKING:
    from agent.readings import Reading


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by thread id."""
    tick_hz = os.sysconf("SC_CLK_TCK")
    result: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        # Fields after the ")" closing the command name: utime and stime are 12th and 13th.
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        result[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick_hz
    return result


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return (
        f"{os.cpu_count()} cpu ({cpu}), python {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}, load {os.getloadavg()[0]:.2f}"
    )


async def run_once(
    db: Path, readings: list[Reading], tasks: int, per_call: int
) -> dict[str, float]:
    clock = StepClock()
    outbox = await Outbox.open(db, clock=clock)
    chunks = [readings[i : i + per_call] for i in range(0, len(readings), per_call)]
    queue = iter(chunks)

    async def producer() -> None:
        for chunk in queue:
            await outbox.capture(chunk)

    io_start = write_bytes()
    threads_start = thread_cpu_s()
    cpu_start = time.process_time()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(tasks):
            group.create_task(producer())
    capture_s = time.perf_counter() - start
    capture_cpu_s = time.process_time() - cpu_start
    threads_end = thread_cpu_s()
    loop_tid = threading.get_native_id()
    loop_cpu_s = threads_end[loop_tid] - threads_start.get(loop_tid, 0.0)
    commits = (await outbox.stats()).commits
    io_captured = write_bytes()
    # Publisher-like: pages of the in-flight window, one mark_sent per PUBACKed message
    # (50 readings each), the window's PUBACKs arriving together.
    after = 0
    while batch := await outbox.pending_batch(after_seq=after, limit=1000):
        seqs = [row.seq for row in batch]
        await asyncio.gather(*(outbox.mark_sent(seqs[i : i + 50]) for i in range(0, len(seqs), 50)))
        after = seqs[-1]
    io_sent = write_bytes()
    clock.advance(8 * 86400)
    purged = await outbox.purge(T0 + timedelta(days=8))
    await outbox.close()
    io_total = write_bytes() - io_start
    if purged != len(readings):
        raise SystemExit(f"purged {purged} of {len(readings)} readings: outbox bug")
    return {
        "rate": len(readings) / capture_s,
        "cpu_us": capture_cpu_s / len(readings) * 1e6,
        # The event loop encodes; the outbox's executor thread runs SQLite (the rest).
        "loop_cpu_us": loop_cpu_s / len(readings) * 1e6,
        "bytes": io_total / len(readings),
        "per_commit": len(readings) / max(1, commits),
        "capture_bytes": (io_captured - io_start) / len(readings),
        "sent_bytes": (io_sent - io_captured) / len(readings),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--per-call", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="on the disk to measure")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"workload: {args.readings} continuous SpO2 readings, {args.tasks} concurrent "
        f"capture() callers, {args.per_call} readings per call; pending_batch(1000) pages, "
        "mark_sent per 50 readings, 20 at once; purge"
    )
    results = []
    for run in range(args.runs):
        readings = [stream_sample(i) for i in range(args.readings)]
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            result = await run_once(Path(tmp) / "outbox.db", readings, args.tasks, args.per_call)
        results.append(result)
        print(
            f"run {run + 1}: {result['rate']:,.0f} readings/s captured "
            f"({result['cpu_us']:.1f} us CPU per reading, both threads: event loop "
            f"{result['loop_cpu_us']:.1f}, SQLite thread "
            f"{result['cpu_us'] - result['loop_cpu_us']:.1f}), "
            f"{result['bytes']:,.0f} B written per reading (capture+mark_sent+purge), "
            f"{result['per_commit']:,.0f} readings per capture COMMIT; bytes by phase: "
            f"capture {result['capture_bytes']:,.0f}, mark_sent {result['sent_bytes']:,.0f}, "
            f"purge+close {result['bytes'] - result['capture_bytes'] - result['sent_bytes']:,.0f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on this machine)")
    best_cpu_us = min(r["cpu_us"] for r in results)
    print(
        f"CPU per reading: median {statistics.median(r['cpu_us'] for r in results):.1f} us, "
        f"best {best_cpu_us:.1f} us (one idle core at the best figure: "
        f"{1e6 / best_cpu_us:,.0f} readings/s)"
    )
    print(
        f"median: {statistics.median(r['rate'] for r in results):,.0f} readings/s "
        f"(target >= 50,000); {statistics.median(r['bytes'] for r in results):,.0f} B per "
        "reading (target <= 1,536)"
    )


if __name__ == "__main__":
    asyncio.run(main())
