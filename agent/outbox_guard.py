"""A seq high-water mark kept outside SQLite, so a lost WAL can never reuse a seq.

The backend dedupes on ``reading_id`` and finds gaps by ``seq``: a seq handed out twice
would file two different readings under one number. SQLite's AUTOINCREMENT mark lives
in the database, so if the ``-wal`` file is lost after a crash (or a corrupt file is
quarantined and a fresh outbox starts), the mark goes back with it. This file,
``<outbox>.seq``, reserves seqs in blocks ahead of use (one fsync per ``RESERVE_BLOCK``
readings) and records whether the outbox was closed cleanly:

- unclean stop and no ``-wal`` file at the next open: the WAL was lost;
- the database's mark below what was committed when the last reservation was written
  (or at the last clean close): rows were lost;
- a quarantined database: the fresh one starts empty.
In each case the outbox continues above the reservation (a gap, never a reuse) and
reports the loss for an alarm.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

RESERVE_BLOCK: Final = 10_000
GUARD_VERSION: Final = 2  # 2 added committed_seq


@dataclass(frozen=True, slots=True)
class GuardState:
    """What the guard file said at open."""

    reserved_seq: int
    clean: bool
    # The last seq known committed when this guard was written: the database must hold
    # at least that much at the next open. (A version-1 file did not record it; its
    # reservation was one block above the committed seq, so that is what is assumed.)
    committed_seq: int


def guard_path(db_path: Path) -> Path:
    """``outbox.db`` -> ``outbox.db.seq``."""
    return db_path.with_name(db_path.name + ".seq")


def read_guard(db_path: Path) -> GuardState | None:
    """The guard of a previous run, or None (first run, or an unreadable file, logged)."""
    path = guard_path(db_path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        reserved = int(document["reserved_seq"])
        committed = int(document.get("committed_seq", reserved - RESERVE_BLOCK))
        return GuardState(reserved, bool(document["clean"]), committed)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("outbox seq guard %s unreadable (%s); starting a new one", path, exc)
        return None


def write_guard(db_path: Path, state: GuardState) -> None:
    """Replace the guard atomically and durably (temp file, fsync, rename, fsync dir).

    Raises:
        OSError: the directory is not writable or the disk is full.
    """
    path = guard_path(db_path)
    temp = path.with_name(path.name + ".tmp")
    body = json.dumps(
        {
            "v": GUARD_VERSION,
            "reserved_seq": state.reserved_seq,
            "clean": state.clean,
            "committed_seq": state.committed_seq,
        }
    ).encode()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    temp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def judge_loss(
    prior: GuardState | None, *, last_seq: int, wal_existed: bool, quarantined: bool
) -> str | None:
    """Why the outbox may have lost committed readings since the last run, or None."""
    if prior is None:
        return None
    if quarantined:
        return "the outbox was corrupt and has been replaced by an empty one"
    if not prior.clean and not wal_existed:
        return "the outbox's write-ahead log (-wal) was missing after an unclean stop"
    if last_seq < prior.committed_seq:
        return "the outbox holds fewer readings than it had already numbered"
    return None
