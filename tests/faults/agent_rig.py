"""The real agent process under faults: config, crash trials and wire accounting.

Shared by tests/faults/test_crash_points.py, test_logs.py, test_storage_faults.py and the
soak scripts bench/crash_soak.py and bench/fault_soak.py. Builds on tests/e2e/harness.py
(``python -m agent run -c FILE`` as systemd runs it, killable for real).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agent.crashpoints import CRASH_AFTER_ENV, CRASH_AT_ENV
from drivers.emulators.serial import PtySerialDevice
from tests.e2e.harness import (
    AgentProcess,
    committed_rows,
    integrity,
    serial_device,
    write_config,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping


def fault_config(
    workdir: Path,
    *,
    port: int,
    prefix: str,
    devices_yaml: str,
    patient_id: str | None = None,
    storage_path: Path | None = None,
    level: str = "INFO",
) -> Path:
    """The e2e harness config, with the patient id, outbox path and log level replaced."""
    path = write_config(workdir, port=port, prefix=prefix, devices_yaml=devices_yaml)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if patient_id is not None:
        document["patient"]["id"] = patient_id
    if storage_path is not None:
        document["storage"]["path"] = str(storage_path)
    document["logging"]["level"] = level
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def oximeter(
    link: Path, protocol: str = "nonin-df8", speed: float = 20.0, seed: int = 1
) -> AsyncIterator[PtySerialDevice]:
    """A pty oximeter streaming behind a stable symlink until the block ends."""
    device = PtySerialDevice(protocol, link=link, speed=speed, seed=seed)
    device.plug()
    task = asyncio.create_task(device.run(), name=f"emulator:{link.name}")
    try:
        yield device
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        device.close()


@dataclass
class WireTally:
    """What the backend received, set against what the outbox committed."""

    committed: int = 0
    delivered: int = 0  # committed readings seen on the wire at least once
    lost: int = 0  # committed readings neither seen on the wire nor still pending
    owed: int = 0  # not seen on the wire yet, still pending in the outbox (sent at next start)
    copies: int = 0  # reading messages seen in all, duplicates included
    duplicates: int = 0  # copies beyond the first
    id_seq_conflicts: int = 0  # one reading_id with two seqs, or one seq with two ids
    uncommitted_on_wire: int = 0  # seen on the wire but not in the outbox

    @property
    def sound(self) -> bool:
        """Nothing lost, nothing invented, duplicates only as exact repeats."""
        return not (self.lost or self.id_seq_conflicts or self.uncommitted_on_wire)


def wire_tally(
    received: Iterable[Mapping[str, Any]],
    committed: Mapping[uuid.UUID, int],
    pending: set[uuid.UUID] | None = None,
) -> WireTally:
    """Compare decoded readings from the wire with ``committed`` (reading_id -> seq).

    ``pending`` (see ``pending_ids``) are readings the outbox still owes: an agent stopped
    right after capturing them (the serial driver stores its open interval at stop) sends
    them at its next start; they are owed, not lost.
    """
    tally = WireTally(committed=len(committed))
    seq_of: dict[uuid.UUID, int] = {}
    id_of: dict[int, uuid.UUID] = {}
    for reading in received:
        rid = reading["reading_id"]
        seq = int(reading["seq"])
        tally.copies += 1
        if rid in seq_of:
            tally.duplicates += 1
        if seq_of.setdefault(rid, seq) != seq or id_of.setdefault(seq, rid) != rid:
            tally.id_seq_conflicts += 1
    for rid, seq in committed.items():
        if rid in seq_of:
            tally.delivered += 1
            tally.id_seq_conflicts += seq_of[rid] != seq
        elif pending is not None and rid in pending:
            tally.owed += 1
        else:
            tally.lost += 1
    tally.uncommitted_on_wire = len(set(seq_of) - set(committed))
    return tally


@dataclass(frozen=True)
class TrialOutcome:
    """One crash trial: how the process ended and the outbox right after."""

    point: str  # a crash point name, or "random"
    returncode: int | None  # -9 when SIGKILLed (by itself or by us)
    reached: bool  # a named point fired before the time limit (always True for "random")
    integrity: str
    max_seq: int


async def crash_trial(
    agent: AgentProcess,
    point: str | None,
    *,
    after: int = 1,
    delay_s: float = 1.0,
    limit_s: float = 30.0,
) -> TrialOutcome:
    """Run the agent once until it dies: at crash point ``point`` (its ``after``-th pass),
    or, with ``point`` None, by our SIGKILL after ``delay_s``.

    A named point that does not fire within ``limit_s`` is killed by us and reported
    with ``reached`` False.
    """
    agent.env = {CRASH_AT_ENV: point, CRASH_AFTER_ENV: str(after)} if point else {}
    await agent.start()
    assert agent.process is not None
    reached = True
    if point is None:
        await asyncio.sleep(delay_s)
        await agent.kill()
    else:
        try:
            await asyncio.wait_for(agent.process.wait(), limit_s)
        except TimeoutError:
            reached = False
            await agent.kill()
    agent.env = {}
    db = _db_of(agent)
    rows = committed_rows(db)
    return TrialOutcome(
        point=point or "random",
        returncode=agent.process.returncode,
        reached=reached and agent.process.returncode == -signal.SIGKILL,
        integrity=integrity(db),
        max_seq=max(rows.values(), default=0),
    )


def pending_ids(db: Path) -> set[uuid.UUID]:
    """reading_ids the outbox still holds as pending (not yet PUBACKed)."""
    if not db.exists():
        return set()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT reading_id FROM readings WHERE state = 0").fetchall()
    return {uuid.UUID(bytes=bytes(r[0])) for r in rows}


def _db_of(agent: AgentProcess) -> Path:
    document = yaml.safe_load(agent.config.read_text(encoding="utf-8"))
    return Path(document["storage"]["path"])


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; TimeoutError naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


def oximeter_agent(
    workdir: Path, *, port: int, prefix: str, device: PtySerialDevice, **config: Any
) -> AgentProcess:
    """The agent reading one pty oximeter (``oxi``), its log in ``workdir/agent.log``.

    ``config`` goes to ``fault_config`` (patient_id, storage_path, level).
    """
    devices = serial_device("oxi", device.protocol, device.port)
    path = fault_config(workdir, port=port, prefix=prefix, devices_yaml=devices, **config)
    return AgentProcess(config=path, log_path=workdir / "agent.log")
