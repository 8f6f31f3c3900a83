"""Bounded storage: which rows make room when the outbox is full (DESIGN.md guarantee 6).

Runs inside the outbox's write transaction (``OutboxStore.apply``), so an eviction and the
capture that needed it commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from agent.outbox_schema import PENDING, REJECTED, SENT

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

_CONTINUOUS: Final = 1
_SPOT: Final = 0


@dataclass(slots=True)
class Eviction:
    """What making room for new readings removed, by kind and by state."""

    audit_truncated: int = 0
    continuous: int = 0
    spot: int = 0
    by_state: dict[int, int] = field(default_factory=dict)


def make_room(conn: sqlite3.Connection, counts: dict[int, int], capacity: int) -> Eviction | None:
    """Delete rows so at most ``capacity`` are pending, rejected or sent; adjust ``counts``.

    Order: sent rows (oldest first; they are only kept for audit), then continuous
    rows (pending or rejected) thinned evenly across the oldest ones, and only when
    no continuous row is left the oldest spot rows. Rejected rows are treated like
    pending ones so a stream of new spot readings never loses to old rejected samples.
    Delivered rows do not count against the capacity (they are purgeable) and are left
    to ``purge``.
    """
    excess = counts[PENDING] + counts[SENT] + counts[REJECTED] - capacity
    if excess <= 0:
        return None
    # A little slack so a full outbox evicts (and warns) once per ~0.1 % of capacity
    # rather than on every commit.
    remaining = excess + capacity // 1000
    eviction = Eviction()
    sent = conn.execute(
        "SELECT seq, state FROM readings INDEXED BY readings_by_age "
        "WHERE state IN (1, 2) AND state = 1 ORDER BY state_at_us LIMIT ?",
        (remaining,),
    ).fetchall()
    eviction.audit_truncated = delete_rows(conn, sent, eviction)
    remaining -= eviction.audit_truncated
    while remaining > 0:
        # Spread the victims over a window four times wider than needed (never two
        # neighbours), so repeated pressure thins the oldest stretch progressively
        # instead of cutting it off from the front.
        oldest = _oldest_unsent(conn, _CONTINUOUS, 4 * remaining)
        if not oldest:
            break
        step = max(2, len(oldest) // remaining)
        victims = oldest[step // 2 :: step][:remaining] or oldest[:1]
        eviction.continuous += delete_rows(conn, victims, eviction)
        remaining -= len(victims)
    if remaining > 0:
        eviction.spot = delete_rows(conn, _oldest_unsent(conn, _SPOT, remaining), eviction)
    conn.executemany(
        "UPDATE counters SET value = value + ? WHERE name = ?",
        [
            (eviction.audit_truncated, "audit_truncated"),
            (eviction.continuous, "evicted_continuous"),
            (eviction.spot, "evicted_spot"),
        ],
    )
    for state, n in eviction.by_state.items():
        counts[state] -= n
    return eviction


def _oldest_unsent(conn: sqlite3.Connection, cadence: int, limit: int) -> list[tuple[int, int]]:
    # "+state" keeps SQLite on the seq order of the table instead of the state index.
    return conn.execute(
        "SELECT seq, state FROM readings WHERE cadence = ? AND +state IN (0, 3) "
        "ORDER BY seq LIMIT ?",
        (cadence, limit),
    ).fetchall()


def delete_rows(
    conn: sqlite3.Connection, rows: Sequence[tuple[int, int]], eviction: Eviction
) -> int:
    """Delete ``(seq, state)`` rows and their bodies; tally them by state in ``eviction``."""
    seqs = [(seq,) for seq, _ in rows]
    conn.executemany("DELETE FROM readings WHERE seq = ?", seqs)
    conn.executemany("DELETE FROM bodies WHERE seq = ?", seqs)
    for _, state in rows:
        eviction.by_state[state] = eviction.by_state.get(state, 0) + 1
    return len(rows)
