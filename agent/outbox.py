"""The outbox: every captured reading, durably, until the backend has it.

Store, then acknowledge; publish, then delete (STYLE.md 4). SQLite in WAL mode with
synchronous=FULL, one connection owned by one single-thread executor; everything here is
async and never touches SQLite on the event loop.

Group commit: ``capture()`` (and ``mark_sent``/``mark_rejected``/``mark_delivered``/
``requeue_rejected``) queue their write and wait; one writer task drains the queue into ONE
transaction, so writes arriving while a COMMIT runs share the next one. Each call returns
only after the COMMIT that holds its write returned; if that COMMIT fails (disk full, I/O
error) every caller sharing it gets OutboxError and nothing of theirs was stored.

Row life: pending -> sent (PUBACK < 0x80) -> delivered (backend receipt, when receipts
are on); pending -> rejected (PUBACK >= 0x80; kept, never deleted by age; ``requeue_rejected``
moves it back). ``purge`` deletes only sent (or, with receipts, delivered) rows older than
the audit window. Capacity and eviction: see ``OutboxStore._make_room``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar

from agent.clock import SystemClock
from agent.errors import OutboxError
from agent.outbox_codec import context_of, encode_context, encode_reading
from agent.outbox_schema import (
    DELIVERED,
    PENDING,
    REJECTED,
    SENT,
    STATE_CODES,
    open_readonly,
)
from agent.outbox_store import REQUEUE_ALL_SQL, OutboxStore, StateChange, seq_changes
from agent.readings import StoredReading
from drivers.base import CaptureResult

if TYPE_CHECKING:
    import uuid
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from pathlib import Path

    from agent.clock import Clock
    from agent.outbox_codec import PendingPage, ReadingContext
    from agent.outbox_store import Write
    from agent.readings import DeviceIdentity, PatientBinding, Reading

__all__ = ["Outbox", "OutboxStats", "StoredReading", "open_readonly"]

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")
_CONTEXT_CACHE_MAX: Final = 256
_PURGE_CHUNK_ROWS: Final = 5_000  # per transaction, so captures interleave with a long purge
# What each state change by seq sets (its own "?" come first, then the seqs').
_SENT_SET: Final = "state = 1, state_at_us = ?"
_REJECTED_SET: Final = "state = 3, state_at_us = ?, reject_reason = ?"
_PENDING_SET: Final = "state = 0, reject_reason = NULL, state_at_us = NULL"


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What health reports about the outbox. Counts only; no values, no patient data."""

    pending: int
    oldest_pending_received_at: datetime | None  # hub receipt UTC of the oldest pending row
    oldest_pending_seq: int | None
    rejected: int
    sent: int  # sent, kept for audit / awaiting receipt
    delivered: int
    evicted_total: int
    evicted_by_cadence: dict[str, int]  # {"continuous": n, "spot": m}
    duplicates_total: int  # re-sent device records refused by the natural key (since open)
    last_seq: int
    capacity_readings: int
    db_bytes: int  # main db + wal size on disk
    quarantined: str | None  # path of a corrupt db moved aside at open, else None
    audit_truncated: int = 0  # sent rows deleted before their audit window to make room
    commits: int = 0  # transactions committed since open (group commit makes this small)
    data_loss: str | None = None  # why committed readings may have been lost before this open


@dataclass(slots=True)
class _Pending:
    """One write (a capture() call or a state change) waiting for its COMMIT."""

    write: Write
    done: asyncio.Future[tuple[int, int]]


class Outbox:
    """The durable queue between drivers and the publisher. Implements ``ReadingSink``."""

    def __init__(
        self,
        store: OutboxStore,
        executor: ThreadPoolExecutor,
        *,
        audit_window_s: float,
        group_commit_s: float,
        clock: Clock,
    ) -> None:
        """Use ``Outbox.open``; this only wires parts together."""
        self._store = store
        self._executor = executor
        self._audit_window_s = audit_window_s
        self._group_commit_s = group_commit_s
        self._clock = clock
        self._queue: list[_Pending] = []
        self._first_queued_at = 0.0  # loop time the oldest queued write arrived
        self._wakeup = asyncio.Event()
        self._closing = False
        self._context_json: dict[ReadingContext, str] = {}
        self._context_by_id: dict[
            tuple[int, int, str], tuple[DeviceIdentity, PatientBinding, dict[str, str]]
        ] = {}
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        capacity_readings: int = 2_000_000,
        audit_window_s: float = 7 * 86400,
        receipts: bool = False,
        group_commit_s: float = 0.005,
        clock: Clock | None = None,
    ) -> Outbox:
        """Open or create the outbox at ``path``; a corrupt file is moved aside first.

        Args:
            path: the database file (its directory must exist).
            capacity_readings: most pending + rejected + sent rows kept before eviction.
            audit_window_s: how long sent (or delivered) rows are kept before ``purge``.
            receipts: rows are purgeable only once delivered (end-to-end receipts).
            group_commit_s: how long the writer lingers for more captures before a COMMIT.
            clock: stamps state changes (defaults to the system clock).

        Raises:
            OutboxError: the file cannot be opened, or its schema is newer than this code.
        """
        if capacity_readings < 1:
            raise OutboxError(f"capacity_readings must be at least 1, got {capacity_readings}")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(
                executor,
                lambda: OutboxStore.open(
                    path, capacity_readings=capacity_readings, receipts=receipts
                ),
            )
        except BaseException:
            executor.shutdown(wait=True)
            raise
        return cls(
            store,
            executor,
            audit_window_s=audit_window_s,
            group_commit_s=group_commit_s,
            clock=clock if clock is not None else SystemClock(),
        )

    @property
    def data_loss(self) -> str | None:
        """Why committed readings may have been lost before this open (agent/outbox_guard.py)."""
        return self._store.data_loss

    @property
    def quarantined(self) -> Path | None:
        """Where a corrupt database found at open was moved, else None."""
        return self._store.quarantined

    async def _run(self, func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closing:
            raise OutboxError("the outbox is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: func(*args, **kwargs))

    # -- capture (group commit) -----------------------------------------------------

    async def capture(self, readings: Sequence[Reading]) -> CaptureResult:
        """Store ``readings`` durably; returns after the COMMIT that holds them.

        Raises:
            OutboxError: nothing of this call was stored (disk full, I/O error, closed).
        """
        if self._closing:
            raise OutboxError("the outbox is closed")
        if self._writer.done():
            raise OutboxError("the outbox writer has stopped; restart the agent")
        if not readings:
            return CaptureResult(stored=0, duplicates=0)
        rows = [encode_reading(r, self._context_text(r)) for r in readings]
        stored, duplicates = await self._submit(rows)
        return CaptureResult(stored=stored, duplicates=duplicates)

    async def _submit(self, write: Write) -> tuple[int, int]:
        """Queue a write for the next group COMMIT and wait for that COMMIT."""
        return await self._enqueue(write)

    def _enqueue(self, write: Write) -> asyncio.Future[tuple[int, int]]:
        """Queue a write; the future resolves after its COMMIT.

        Writes queued in one loop turn (no await between them) share one transaction.
        """
        if self._closing:
            raise OutboxError("the outbox is closed")
        if self._writer.done():
            raise OutboxError("the outbox writer has stopped; restart the agent")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()
        if not self._queue:
            self._first_queued_at = loop.time()
        self._queue.append(_Pending(write, done))
        self._wakeup.set()
        return done

    async def _change_by_seq(self, changes: list[StateChange]) -> int:
        """Run ``changes`` in one COMMIT; returns the rows changed."""
        results = await asyncio.gather(*[self._enqueue(change) for change in changes])
        return sum(changed for changed, _ in results)

    def _context_text(self, reading: Reading) -> str:
        # Drivers reuse one DeviceIdentity/PatientBinding object per session: look up by
        # identity first (hashing two dataclasses per reading is measurable at 50k/s).
        # The cache holds the objects, so their ids cannot be reused while cached.
        key = (id(reading.device), id(reading.patient), reading.driver_version)
        hit = self._context_by_id.get(key)
        boot_id = reading.received.boot_id
        if hit is not None and hit[0] is reading.device and hit[1] is reading.patient:
            text = hit[2].get(boot_id)
            if text is not None:
                return text
        context = context_of(reading)
        text = self._context_json.get(context)
        if text is None:
            text = self._context_json[context] = encode_context(context)
        if hit is None or hit[0] is not reading.device or hit[1] is not reading.patient:
            if len(self._context_by_id) >= _CONTEXT_CACHE_MAX:
                # A driver making new identity objects per reading: stay bounded.
                self._context_by_id.clear()
                self._context_json.clear()
            hit = self._context_by_id[key] = (reading.device, reading.patient, {})
        hit[2][boot_id] = text
        return text

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            linger_s = self._first_queued_at + self._group_commit_s - loop.time()
            if linger_s > 0 and not self._closing:
                # Linger so captures arriving meanwhile share this COMMIT (fewer flushes),
                # counted from the oldest queued write: none waits longer than the window,
                # and a queue that filled while the last COMMIT ran goes at once.
                await asyncio.sleep(linger_s)
            batch, self._queue = self._queue, []
            await self._commit(loop, batch)

    async def _commit(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """One transaction for every capture in ``batch``; resolve each after COMMIT."""
        try:
            results = await loop.run_in_executor(
                self._executor, self._store.apply, [p.write for p in batch]
            )
        except OutboxError as exc:
            for pending in batch:
                _fail(pending.done, exc)
            return
        except BaseException as exc:
            # A bug: fail the waiting callers (never leave them hanging), then let it
            # propagate; capture() reports the stopped writer from now on.
            for pending in batch:
                _fail(pending.done, exc)
            raise
        for pending, result in zip(batch, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)

    # -- publisher side -------------------------------------------------------------

    async def pending_batch(self, *, after_seq: int = 0, limit: int = 100) -> list[StoredReading]:
        """Pending rows with seq > ``after_seq``, oldest first (for the in-flight window)."""
        return await self._run(self._store.select, PENDING, after_seq, limit)

    async def pending_rows(self, *, after_seq: int = 0, limit: int = 100) -> PendingPage:
        """``pending_batch`` undecoded: the publisher's read (encoders read the bodies)."""
        return await self._run(self._store.pending_page, after_seq, limit)

    async def mark_sent(self, seqs: Sequence[int]) -> None:
        """Pending rows the broker accepted (PUBACK < 0x80). Other states are left alone."""
        if not seqs:
            return
        now_us = self._now_us()
        await self._change_by_seq(seq_changes(_SENT_SET, (now_us,), seqs, PENDING, SENT))

    async def mark_rejected(self, seqs: Sequence[int], reason: str) -> None:
        """Pending rows the broker refused (PUBACK >= 0x80); kept until requeued."""
        if not seqs:
            return
        now_us = self._now_us()
        changes = seq_changes(_REJECTED_SET, (now_us, reason), seqs, PENDING, REJECTED)
        await self._change_by_seq(changes)

    async def mark_delivered(self, reading_ids: Sequence[uuid.UUID]) -> int:
        """Sent rows the backend confirmed; returns how many rows changed.

        Only rows already marked sent change: call ``mark_sent`` first (a receipt for a
        reading still pending is ignored and counted as 0).
        """
        if not reading_ids:
            return 0
        now_us = self._now_us()
        changed, _ = await self._submit(
            StateChange(
                "UPDATE readings SET state = 2, state_at_us = ? WHERE reading_id = ? AND state = 1",
                [(now_us, rid.bytes) for rid in reading_ids],
                SENT,
                DELIVERED,
            )
        )
        return changed

    async def requeue_rejected(self, seqs: Sequence[int] | None = None) -> int:
        """Rejected rows (all when ``seqs`` is None) back to pending; returns how many."""
        if seqs is not None and not seqs:
            return 0
        if seqs is None:
            changed, _ = await self._submit(StateChange(REQUEUE_ALL_SQL, [()], REJECTED, PENDING))
            return changed
        return await self._change_by_seq(seq_changes(_PENDING_SET, (), seqs, REJECTED, PENDING))

    async def list_readings(
        self, *, state: str, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredReading]:
        """Rows in ``state`` ("pending", "sent", "delivered", "rejected"), in seq order.

        Raises:
            ValueError: ``state`` is not one of those names.
        """
        code = STATE_CODES.get(state)
        if code is None:
            raise ValueError(f"state must be one of {sorted(STATE_CODES)}, got {state!r}")
        return await self._run(self._store.select, code, after_seq, limit)

    async def purge(self, now: datetime) -> int:
        """Delete sent (with receipts: delivered) rows older than the audit window.

        Pending and rejected rows are never deleted by age. Returns rows deleted.

        Raises:
            ValueError: ``now`` is naive (its zone would be guessed).
        """
        if now.tzinfo is None:
            raise ValueError("purge(now) needs a timezone-aware UTC time, got a naive datetime")
        cutoff_us = int((now.timestamp() - self._audit_window_s) * 1_000_000)
        total = 0
        while True:
            deleted = await self._run(self._store.purge_chunk, cutoff_us, _PURGE_CHUNK_ROWS)
            total += deleted
            if deleted < _PURGE_CHUNK_ROWS:
                return total

    async def stats(self) -> OutboxStats:
        """Counts for health; cheap (kept in memory, two indexed look-ups)."""
        return await self._run(self._collect_stats)

    def _collect_stats(self) -> OutboxStats:
        store = self._store
        oldest = store.oldest_pending()
        continuous = store.counters["evicted_continuous"]
        spot = store.counters["evicted_spot"]
        return OutboxStats(
            pending=store.counts[PENDING],
            oldest_pending_received_at=oldest[1] if oldest else None,
            oldest_pending_seq=oldest[0] if oldest else None,
            rejected=store.counts[REJECTED],
            sent=store.counts[SENT],
            delivered=store.counts[DELIVERED],
            evicted_total=continuous + spot,
            evicted_by_cadence={"continuous": continuous, "spot": spot},
            duplicates_total=store.duplicates_total,
            last_seq=store.last_seq(),
            capacity_readings=store.capacity_readings,
            db_bytes=store.db_bytes(),
            quarantined=str(store.quarantined) if store.quarantined else None,
            audit_truncated=store.counters["audit_truncated"],
            commits=store.commits,
            data_loss=store.data_loss,
        )

    def _now_us(self) -> int:
        return int(self._clock.now().utc.timestamp() * 1_000_000)

    async def close(self) -> None:
        """Finish queued captures, checkpoint the WAL and close. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        try:
            await self._writer
        finally:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._store.close)
            self._executor.shutdown(wait=True)


def _fail(done: asyncio.Future[tuple[int, int]], exc: BaseException) -> None:
    if done.done():
        return  # the caller was cancelled; its readings were not acknowledged to anyone
    error = OutboxError(f"nothing of this write was committed: {exc}")
    error.__cause__ = exc
    done.set_exception(error)
