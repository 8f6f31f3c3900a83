"""Faults injected for real: a full disk (tmpfs), and kill -9 of a capturing process."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent import outbox_guard, outbox_store
from agent.errors import OutboxError
from agent.outbox import Outbox
from agent.outbox_guard import read_guard
from tests.agent.test_outbox_factory import bp_record, stream_sample

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk we can really fill."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def test_disk_full_fails_every_waiting_capture_and_recovers(small_disk: Path) -> None:
    db = small_disk / "outbox.db"
    outbox = await Outbox.open(db)
    await outbox.capture([stream_sample(i) for i in range(20)])
    filler = _fill(small_disk)

    # Several callers share the failing COMMIT: none of them may think it was stored.
    failures = await asyncio.gather(
        outbox.capture([stream_sample(100 + i) for i in range(400)]),
        outbox.capture([bp_record(1)]),
        outbox.capture([stream_sample(600 + i) for i in range(400)]),
        return_exceptions=True,
    )
    assert all(isinstance(f, OutboxError) for f in failures), failures
    assert "disk is full" in str(failures[0])
    assert (await outbox.stats()).pending == 20

    filler.unlink()
    result = await outbox.capture([bp_record(1), stream_sample(2000)])
    stats = await outbox.stats()
    await outbox.close()

    assert (result.stored, result.duplicates) == (2, 0)  # the failed bp_record was not kept
    assert stats.pending == 22
    assert _integrity(db) == "ok"
    reopened = await Outbox.open(db)
    rows = await reopened.pending_batch(limit=100)
    await reopened.close()
    assert [r.seq for r in rows] == list(range(1, 23))


CHILD = """
import asyncio, sys
from pathlib import Path
from agent.outbox import Outbox
from tests.agent.test_outbox_factory import stream_sample, bp_record

async def writer(outbox, base):
    i = 0
    while True:
        batch = [stream_sample(base + i), bp_record(base + i)]
        await outbox.capture(batch)
        for reading in batch:
            print(reading.reading_id.hex, flush=True)
        i += 1

async def main():
    outbox = await Outbox.open(Path(sys.argv[1]), group_commit_s=0.001)
    base = int(sys.argv[2]) * 1_000_000
    await asyncio.gather(*(writer(outbox, base + k * 10_000) for k in range(4)))

asyncio.run(main())
"""


async def _capture_then_kill(db: Path, trial: int, lines_before_kill: int) -> set[str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(db),
        str(trial),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    acknowledged: set[str] = set()
    async with asyncio.timeout(20):
        while len(acknowledged) < lines_before_kill:
            line = await child.stdout.readline()
            assert line, "the capturing child exited on its own"
            acknowledged.add(line.decode().strip())
    child.kill()  # SIGKILL: no cleanup, no checkpoint, mid-capture
    rest = await child.stdout.read()
    await child.wait()
    # A partial last line means print() was cut short; the reading is still committed.
    acknowledged.update(line.decode() for line in rest.split(b"\n")[:-1])
    return acknowledged


# ~0.4 s per trial idle (a Python start-up each); the margin is for a loaded CI machine.
@pytest.mark.timeout(120)
async def test_every_acknowledged_reading_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    rng = random.Random(20261127)
    acknowledged: set[str] = set()
    for trial in range(20):
        acknowledged |= await _capture_then_kill(db, trial, rng.randint(2, 150))
        assert _integrity(db) == "ok"

    outbox = await Outbox.open(db)
    stored = await outbox.list_readings(state="pending", limit=1_000_000)
    stats = await outbox.stats()
    await outbox.close()
    assert outbox.quarantined is None
    stored_ids = {row.reading.reading_id.hex for row in stored}
    assert acknowledged <= stored_ids
    seqs = [row.seq for row in stored]
    assert seqs == sorted(set(seqs))
    assert stats.last_seq >= len(stored)


@pytest.mark.parametrize("readings", [8, 25])
async def test_a_commit_that_fails_after_its_seq_reservation_is_no_false_data_loss(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch, readings: int
) -> None:
    # Room for the tiny seq guard file but not for the rows: the reservation is written,
    # then the COMMIT fails. The next start must not report "readings may be lost",
    # whether the COMMIT held less than one reservation block (8) or more than two (25).
    for module in (outbox_store, outbox_guard):  # blocks of 10 seqs, for both sides
        monkeypatch.setattr(module, "RESERVE_BLOCK", 10)
    db = small_disk / "outbox.db"
    outbox = await Outbox.open(db)
    await outbox.capture([stream_sample(i) for i in range(5)])
    filler = _fill(small_disk)
    os.truncate(filler, filler.stat().st_size - 8192)  # two pages free
    reserved_before = read_guard(db)
    with pytest.raises(OutboxError):
        # Both cross the reservation at seq 10 (reserved at open: 0 + 10).
        await outbox.capture([stream_sample(100 + i) for i in range(readings)])
    reserved_after = read_guard(db)
    assert reserved_before is not None
    assert reserved_after is not None
    assert reserved_after.reserved_seq > reserved_before.reserved_seq  # it was written
    filler.unlink()
    await outbox.close()

    reopened = await Outbox.open(db)
    stats = await reopened.stats()
    await reopened.close()
    assert stats.data_loss is None
    assert stats.last_seq >= 5
