"""Power loss, simulated for real: a FUSE layer that forgets unsynced writes when it dies.

The outbox runs on a lazyfs mount (tests/faults/lazyfs.py). A "power cut" SIGKILLs the
capturing process and the FUSE process together; whatever was written but not fsync'd
is gone, as from a disk cache. Then the outbox is reopened over the surviving files.

This is what synchronous=FULL buys: a reading whose capture() returned survives; with
NORMAL (shown on plain sqlite3 below) WAL commits are not flushed and vanish.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.outbox import Outbox
from tests.agent.test_outbox_factory import stream_sample
from tests.agent.test_outbox_faults import CHILD

REPO_ROOT = Path(__file__).parents[2]


def _fuse_available() -> str | None:
    try:
        import fuse  # type: ignore[import-untyped]  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"fusepy unusable: {exc}"
    if not Path("/dev/fuse").exists() or shutil.which("fusermount") is None:
        return "needs /dev/fuse and fusermount (Debian package fuse)"
    return None


class LazyMount:
    """One lazyfs process over a backing directory; ``power_cut`` kills it and remounts."""

    def __init__(self, backing: Path, mount: Path, eio_flag: Path) -> None:
        self.backing = backing
        self.mount = mount
        self.eio_flag = eio_flag  # while it exists, writes and fsyncs fail with EIO
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.lazyfs",
                str(self.backing),
                str(self.mount),
                str(self.eio_flag),
            ],
            cwd=REPO_ROOT,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mount):
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail("lazyfs did not mount")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        subprocess.run(["fusermount", "-u", "-z", str(self.mount)], check=False)

    def power_cut(self) -> None:
        """The disk cache is lost: unsynced writes disappear. Then power comes back."""
        self.kill()
        self.start()


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[LazyMount]:
    reason = _fuse_available()
    if reason is not None:
        pytest.skip(reason)
    backing, mount = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mount.mkdir()
    lazy_mount = LazyMount(backing, mount, tmp_path / "eio")
    lazy_mount.start()
    yield lazy_mount
    lazy_mount.kill()


async def _capture_until_power_cut(lazy: LazyMount, db: Path, trial: int, n: int) -> set[str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db), str(trial),
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    acknowledged: set[str] = set()
    async with asyncio.timeout(60):
        while len(acknowledged) < n:
            line = await child.stdout.readline()
            assert line, "the capturing child exited on its own"
            acknowledged.add(line.decode().strip())
    # Power fails: the writer and the disk cache die in the same instant.
    child.kill()
    await asyncio.to_thread(lazy.power_cut)
    rest = await child.stdout.read()
    await child.wait()
    acknowledged.update(line.decode() for line in rest.split(b"\n")[:-1])
    return acknowledged


@pytest.mark.timeout(180)
async def test_acknowledged_readings_survive_power_loss(lazy: LazyMount) -> None:
    db = lazy.mount / "outbox.db"
    acknowledged: set[str] = set()
    for trial, n in enumerate((5, 40, 120, 17, 80)):
        acknowledged |= await _capture_until_power_cut(lazy, db, trial, n)
        outbox = await Outbox.open(db)
        try:
            assert outbox.quarantined is None  # the file is intact, not merely recreated
            stored = await outbox.list_readings(state="pending", limit=1_000_000)
        finally:
            await outbox.close()
        assert acknowledged <= {row.reading.reading_id.hex for row in stored}
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _commit_rows(db: Path, synchronous: str, rows: int) -> None:
    """Commit ``rows`` transactions in WAL mode, then die without closing (no checkpoint)."""
    script = (
        "import os, signal, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('PRAGMA journal_mode=WAL')\n"
        "c.execute('PRAGMA synchronous=' + sys.argv[2])\n"
        "c.execute('CREATE TABLE IF NOT EXISTS t(x)')\n"
        "for i in range(int(sys.argv[3])):\n"
        "    with c: c.execute('INSERT INTO t VALUES (?)', (i,))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(db), synchronous, str(rows)], check=False)


def _surviving_rows(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # not even the table survived


def test_full_keeps_committed_rows_where_normal_loses_them(lazy: LazyMount) -> None:
    _commit_rows(lazy.mount / "full.db", "FULL", 50)
    _commit_rows(lazy.mount / "normal.db", "NORMAL", 50)
    lazy.power_cut()
    assert _surviving_rows(lazy.mount / "full.db") == 50
    assert _surviving_rows(lazy.mount / "normal.db") < 50  # NORMAL: WAL not flushed per commit


async def test_io_errors_fail_captures_cleanly_and_the_outbox_recovers(lazy: LazyMount) -> None:
    """A failing card (EIO on write and fsync): nothing acknowledged that is not stored."""
    db = lazy.mount / "outbox.db"
    outbox = await Outbox.open(db, group_commit_s=0)
    acknowledged = []
    try:
        for i in range(20):
            batch = [stream_sample(i)]
            await outbox.capture(batch)
            acknowledged += batch
        lazy.eio_flag.touch()
        failures = 0
        for i in range(20, 30):
            try:
                await outbox.capture([stream_sample(i)])
            except OutboxError:
                failures += 1
        assert failures == 10  # every capture during the fault says so; none pretends
        lazy.eio_flag.unlink()
        for i in range(30, 40):
            batch = [stream_sample(i)]
            await outbox.capture(batch)
            acknowledged += batch
        stored = await outbox.list_readings(state="pending", limit=1000)
    finally:
        lazy.eio_flag.unlink(missing_ok=True)
        await outbox.close()
    assert {r.reading_id for r in acknowledged} <= {row.reading.reading_id for row in stored}
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
