"""Memory soak (reliability.md T20): is the real agent's RSS flat under load and faults?

Four pty oximeters (Nonin DF8, Nonin DF7, Contec V7, Masimo ASCII) stream at accelerated
rates into ``python -m agent run -c FILE`` (the process systemd runs), which publishes to
a private Mosquitto through bench/fault_soak.py's gate, with a recording backend
subscriber. Every ``--fault-every-s`` a fault exercises a reconnect path, for real:
broker stopped for a while, broker restarted at once, or a device's pty unplugged and
replugged. The agent itself is never killed (its RSS is the point). Every ``--sample-s``
the agent's VmRSS, the outbox's highest seq and the outbox file's size are sampled.

The outbox connection has a 4 MiB SQLite page cache (``PRAGMA cache_size=-4096``,
agent/outbox_schema.py): RSS rises with the outbox file until the file outgrows it, then
stays flat. So the least-squares slope of RSS is printed twice: while the cache fills
(expected: about the file's own growth per reading) and once the file is larger than the
cache, which is the leak figure (T20: "RSS slope ~ 0"). At ~60 readings/s the cache is
full after ~12,000 readings (~3-4 minutes): a default 5-minute run shows little of the
second part, so run 15 minutes or more for the leak figure.

    python bench/memory_soak.py                     # ~5 minutes
    python bench/memory_soak.py --minutes 20        # past the full page cache
    python bench/memory_soak.py --speed 2           # twice the units and readings per second
    python bench/memory_soak.py --diagnose          # where the growth is (slower agent)

``--diagnose`` starts the agent with a start-up hook (a ``sitecustomize`` on its
PYTHONPATH, written by this script; nothing in agent/ changes) that runs tracemalloc and,
on SIGUSR1, writes a snapshot plus SQLite's own allocator figure
(``sqlite3_memory_used``, which tracemalloc cannot see). Snapshots are taken at the end
of the warm-up and at the end; the script prints both totals and the lines whose Python
allocations grew most.

Figures are for THIS machine (2 shared cores, noisy); see docs/faults-process.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pickle
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # agent.*, tests.* as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))  # fault_soak, as mypy names it

from fault_soak import PREFIX, Soak  # its backend subscribes to PREFIX/#

from tests.e2e.harness import AgentProcess, serial_device
from tests.faults.agent_rig import fault_config, oximeter, wait_for

if TYPE_CHECKING:
    import tracemalloc

    Dump = tuple[tracemalloc.Snapshot, dict[str, int]]

FAULTS = ("broker_stop", "broker_restart", "unplug")
DRAIN_TIMEOUT_S = 180.0
# (id, protocol, emulator speed at --speed 1, interval_s): about 60 readings/s in all.
# A serial driver stores one reading per interval, so --speed divides the intervals too.
DEVICES = (
    ("df8", "nonin-df8", 20.0, 0.05),
    ("df7", "nonin-df7", 10.0, 0.05),
    ("contec", "contec-v7", 1.0, 0.1),
    ("masimo", "masimo-ascii", 10.0, 0.1),
)
ROOT = Path(__file__).resolve().parents[1]
PAGE_CACHE_KIB = 4096  # the outbox's PRAGMA cache_size=-4096 (agent/outbox_schema.py)
CLK_TCK = os.sysconf("SC_CLK_TCK")
DUMP_ENV = "MEMORY_SOAK_DUMP_DIR"
PROBE = f"""\
# Written by bench/memory_soak.py --diagnose; imported at start-up via PYTHONPATH.
# First SIGUSR1: start tracing (no cost before it). Each SIGUSR1 writes a dump: the
# Python allocations made since tracing began and still alive, SQLite's own allocator
# (sqlite3_memory_used) and glibc malloc's bytes in use and free (mallinfo2).
import ctypes, os, pickle, signal, tracemalloc


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2
_sqlite = ctypes.CDLL("libsqlite3.so.0")
_sqlite.sqlite3_memory_used.restype = ctypes.c_int64
_dumps = [0]


def _dump(_signum, _frame):
    if not tracemalloc.is_tracing():
        tracemalloc.start(1)
    _dumps[0] += 1
    info = _libc.mallinfo2()
    figures = {{
        "sqlite": _sqlite.sqlite3_memory_used(),
        "malloc_in_use": info.uordblks + info.hblkhd,
        "malloc_free": info.fordblks,
    }}
    base = os.path.join(os.environ["{DUMP_ENV}"], "dump-%d" % _dumps[0])
    with open(base + ".tmp", "wb") as out:
        pickle.dump((tracemalloc.take_snapshot(), figures), out)
    os.replace(base + ".tmp", base)


signal.signal(signal.SIGUSR1, _dump)
"""


@dataclass
class Samples:
    """Seconds since the first reading, VmRSS, highest seq, outbox file size (KiB)."""

    t_s: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    db_kib: list[int] = field(default_factory=list)

    def add(self, t_s: float, rss_kib: int, seq: int, db_kib: int) -> None:
        """One sample."""
        self.t_s.append(t_s)
        self.rss_kib.append(rss_kib)
        self.seq.append(seq)
        self.db_kib.append(db_kib)

    def where(self, keep: list[int]) -> Samples:
        """The samples at the indexes ``keep``."""
        return Samples(
            [self.t_s[i] for i in keep],
            [self.rss_kib[i] for i in keep],
            [self.seq[i] for i in keep],
            [self.db_kib[i] for i in keep],
        )

    def filling(self, warmup_s: float) -> Samples:
        """After the warm-up, while the outbox file is smaller than the page cache."""
        return self.where(
            [i for i, t in enumerate(self.t_s) if t >= warmup_s and self.db_kib[i] < PAGE_CACHE_KIB]
        )

    def cache_full(self) -> Samples:
        """Once the outbox file is larger than the page cache can hold."""
        return self.where([i for i, d in enumerate(self.db_kib) if d >= PAGE_CACHE_KIB])


def rss_kib(pid: int) -> int:
    """VmRSS of a live process in KiB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def outbox_counts(db: Path) -> tuple[int, int, int]:
    """(highest seq, rows, rows PUBACKed) of the outbox; zeros before it exists."""
    if not db.exists():
        return 0, 0, 0
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            top, rows, sent = conn.execute(
                "SELECT coalesce(max(seq), 0), count(*), coalesce(sum(state >= 1), 0) FROM readings"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return 0, 0, 0  # the file exists, the agent has not created its schema yet
    return int(top), int(rows), int(sent)


def file_kib(path: Path) -> int:
    """A file's size in KiB; 0 before it exists."""
    return path.stat().st_size // 1024 if path.exists() else 0


def slope(x: list[float], y: list[int]) -> float | None:
    """Least-squares slope of y over x (None with fewer than 3 points or flat x)."""
    if len(x) < 3 or len(set(x)) < 2:  # a line through 2 points says nothing
        return None
    return statistics.linear_regression(x, [float(v) for v in y]).slope


async def sample_loop(
    agent: AgentProcess, db: Path, samples: Samples, every_s: float, t0: float
) -> None:
    """Sample the agent's RSS and the outbox's highest seq until cancelled."""
    while True:
        process = agent.process
        if process is not None and process.returncode is None:
            top = (await asyncio.to_thread(outbox_counts, db))[0]
            size = await asyncio.to_thread(file_kib, db)
            samples.add(time.monotonic() - t0, rss_kib(process.pid), top, size)
        await asyncio.sleep(every_s)


async def faults_loop(soak: Soak, devices: list[object], every_s: float) -> None:
    """One fault every ``every_s`` (kinds in turn, durations drawn by the soak's rng)."""
    turn = 0
    while True:
        await asyncio.sleep(every_s)
        await soak.inject(FAULTS[turn % len(FAULTS)], devices)  # type: ignore[arg-type]
        turn += 1


async def run(workdir: Path, args: argparse.Namespace) -> int:
    """Run the soak, print the figures; 1 if a reading was lost or the agent died."""
    soak = Soak(workdir, args.seed)
    db = workdir / "outbox.db"
    await soak.gate.start()
    await soak.broker_up()
    samples = Samples()
    try:
        async with AsyncExitStack() as stack:
            pty = [
                await stack.enter_async_context(
                    oximeter(workdir / f"{name}.tty", protocol, speed=speed * args.speed)
                )
                for name, protocol, speed, _ in DEVICES
            ]
            devices_yaml = "".join(
                serial_device(name, protocol, device.port, interval_s=interval / args.speed)
                for (name, protocol, _, interval), device in zip(DEVICES, pty, strict=True)
            )
            config = fault_config(
                workdir, port=soak.gate.port, prefix=PREFIX, devices_yaml=devices_yaml
            )
            agent = soak.agent = AgentProcess(config=config, log_path=workdir / "agent.log")
            probe = Probe(workdir / "probe") if args.diagnose else None
            if probe is not None:
                probe.install(agent)
            await agent.start()
            await wait_for(lambda: outbox_counts(db)[0] > 0, 60, "the first reading captured")
            t0 = time.monotonic()
            sampler = asyncio.create_task(sample_loop(agent, db, samples, args.sample_s, t0))
            faults = asyncio.create_task(faults_loop(soak, list(pty), args.fault_every_s))
            await asyncio.sleep(min(args.warmup_s, args.minutes * 60))
            dumps = [await probe.dump(agent)] if probe is not None else []
            await asyncio.sleep(max(0.0, args.minutes * 60 - args.warmup_s))
            dumps += [await probe.dump(agent)] if probe is not None else []
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults
            if not soak.gate.is_open:  # cancelled inside a broker fault: bring it back
                await soak.broker_up()
            for device in pty:
                if not device.is_plugged:
                    device.plug()
            await stack.aclose()  # devices stop: nothing new to capture, let it drain
            drained = await _drain(db)
            sampler.cancel()
            process = agent.process
            alive = process is not None and process.returncode is None
            cpu = cpu_s(process.pid) if process is not None and alive else float("nan")
            before_stop = outbox_counts(db)
            await agent.terminate()
        if len(dumps) == 2:  # after the warm-up and at the end
            print_diagnosis(dumps[0], dumps[1])
        return report(soak, samples, args, before_stop, drained=drained, alive=alive, cpu=cpu)
    finally:
        if soak.agent is not None:
            await soak.agent.kill()
        for sub in soak.subs:
            sub.close()
        soak.broker.kill()
        await soak.gate.close()


@dataclass
class Probe:
    """The --diagnose side: where dumps land and how many were asked for."""

    directory: Path
    asked: int = 0

    def install(self, agent: AgentProcess) -> None:
        """Write the start-up hook and put it on the agent's PYTHONPATH."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "sitecustomize.py").write_text(PROBE, encoding="utf-8")
        agent.env = {"PYTHONPATH": str(self.directory), DUMP_ENV: str(self.directory)}

    async def dump(self, agent: AgentProcess) -> Dump:
        """SIGUSR1 the agent; its snapshot and allocator figures."""
        if agent.process is None:
            raise RuntimeError("the agent is not running")
        self.asked += 1
        path = self.directory / f"dump-{self.asked}"
        os.kill(agent.process.pid, signal.SIGUSR1)
        await wait_for(path.exists, 120, f"{path.name} written by the agent")
        with path.open("rb") as handle:
            snapshot, figures = pickle.load(handle)  # noqa: S301 - our own file
        return snapshot, figures


def print_diagnosis(first: Dump, last: Dump) -> None:
    """Allocator figures at both dumps; the lines whose live allocations grew most."""
    for name, (snapshot, figures) in (("after warm-up", first), ("at the end", last)):
        traced = sum(stat.size for stat in snapshot.statistics("filename"))
        kib = {key: value / 1024 for key, value in figures.items()}
        print(
            f"{name:<14}  Python allocations since warm-up, alive: {traced / 1024:7.0f} KiB   "
            f"SQLite {kib['sqlite']:6.0f} KiB   malloc in use {kib['malloc_in_use']:6.0f} KiB, "
            f"free {kib['malloc_free']:6.0f} KiB"
        )
    print("Python allocations made after the warm-up and still alive at the end, largest:")
    for stat in last[0].statistics("lineno")[:12]:
        frame = stat.traceback[0]
        where = frame.filename.rsplit("/site-packages/", 1)[-1].replace(str(ROOT) + "/", "")
        print(f"  {stat.size / 1024:9.1f} KiB {stat.count:7d} blocks  {where}:{frame.lineno}")


async def _drain(db: Path) -> bool:
    def drained() -> bool:
        _, rows, sent = outbox_counts(db)
        return rows == sent

    try:
        await wait_for(drained, DRAIN_TIMEOUT_S, "every captured reading PUBACKed")
    except TimeoutError as exc:
        print(f"drain: {exc}")
        return False
    return True


def print_timeline(samples: Samples) -> None:
    """The first sample of every minute."""
    minutes = int(samples.t_s[-1] // 60) + 1 if samples.t_s else 0
    for minute in range(minutes):
        i = next(i for i, t in enumerate(samples.t_s) if t >= minute * 60)
        rss = samples.rss_kib[i] / 1024
        print(f"  t={samples.t_s[i]:5.0f} s  seq {samples.seq[i]:7d}  RSS {rss:.1f} MiB")


def print_slope(what: str, part: Samples) -> bool:
    """RSS per hour and per 100,000 readings over ``part``; False when too few samples."""
    per_s = slope(part.t_s, part.rss_kib)
    seqs = [float(s) for s in part.seq]
    per_reading = slope(seqs, part.rss_kib)
    file_per_reading = slope(seqs, part.db_kib)
    if per_s is None or per_reading is None or file_per_reading is None:
        return False
    print(
        f"{what} {per_s * 3600:+7.0f} KiB/h  {per_reading * 100_000:+7.0f} KiB per 100,000 "
        f"readings (outbox file {file_per_reading * 100_000:+.0f}), "
        f"{len(part.t_s)} samples t={part.t_s[0]:.0f}-{part.t_s[-1]:.0f} s"
    )
    return True


def report(
    soak: Soak,
    samples: Samples,
    args: argparse.Namespace,
    before_stop: tuple[int, int, int],
    *,
    drained: bool,
    alive: bool,
    cpu: float,
) -> int:
    """Print the figures; 0 when the agent stayed up and nothing was lost."""
    _, captured, sent = outbox_counts(soak.workdir / "outbox.db")
    # At SIGTERM each serial driver stores its open interval: owed to the next start.
    stored_at_stop = captured - before_stop[1]
    received = len({r["reading_id"] for r in soak.received()})
    steady = samples.where([i for i, t in enumerate(samples.t_s) if t >= args.warmup_s])
    log = (soak.workdir / "agent.log").read_text(errors="replace")
    problems = sum(("ERROR" in line or "Traceback" in line) for line in log.splitlines())
    print(
        f"run                   {args.minutes:g} min after the first reading, "
        f"{len(samples.t_s)} samples every {args.sample_s:g} s, warm-up {args.warmup_s:g} s"
    )
    print(f"faults injected       {sum(soak.faults.values())}  {dict(sorted(soak.faults.items()))}")
    print(f"readings captured     {captured}  ({captured / (args.minutes * 60):.1f}/s)")
    print(
        f"delivered (PUBACKed)  {sent}   seen by the backend: {received}   "
        f"stored at SIGTERM, owed to the next start: {stored_at_stop}"
    )
    print_timeline(samples)
    if steady.rss_kib:
        print(f"RSS after warm-up     {steady.rss_kib[0] / 1024:.1f} MiB")
        print(f"RSS max               {max(samples.rss_kib) / 1024:.1f} MiB")
        print(f"RSS end               {steady.rss_kib[-1] / 1024:.1f} MiB")
    print_slope("RSS slope, page cache filling", samples.filling(args.warmup_s))
    full = samples.cache_full()
    if not print_slope("RSS slope, page cache full   ", full):
        last = samples.db_kib[-1] if samples.db_kib else 0
        print(
            f"RSS slope, page cache full    not reached: outbox file {last / 1024:.1f} MiB "
            f"of the {PAGE_CACHE_KIB // 1024} MiB cache; run longer"
        )
    print(
        f"agent CPU             {cpu:.1f} s  ({cpu / max(captured, 1) * 1e6:.0f} us per reading, "
        f"load average {os.getloadavg()[0]:.1f})"
    )
    print(f"ERROR/Traceback lines in the agent log: {problems}")
    # Through the gate the backend is subscribed whenever the agent can publish.
    sound = drained and received == before_stop[2] and stored_at_stop <= len(DEVICES)
    return 0 if alive and sound else 1


def main() -> int:
    """Parse arguments and run in a throw-away directory (or ``--keep DIR``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--speed", type=float, default=1.0, help="multiplies every device's rate")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="left out of the slope")
    parser.add_argument("--fault-every-s", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    parser.add_argument("--diagnose", action="store_true", help="tracemalloc + SQLite memory")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args.keep, args))
    with tempfile.TemporaryDirectory(prefix="memory-soak-") as tmp:
        return asyncio.run(run(Path(tmp), args))


if __name__ == "__main__":
    sys.exit(main())
