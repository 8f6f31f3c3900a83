"""``wardlink queue list|export|requeue``: the outbox for a technician or an operator.

- ``list`` prints one line per reading (seq, state, device, kind, receipt time, reject
  reason); never a value or a patient identifier, so it can be pasted into a ticket.
- ``export`` writes JSON lines, one full reading per line (``agent.readings.reading_to_dict``
  plus seq and state), for a backend that needs a manual upload after a long outage. The
  file holds patient data: it is created with mode 0600, written to ``<out>.partial`` and
  renamed only when complete, so a cut-short export never looks finished. Progress goes to
  stderr for big outboxes.
- ``requeue`` moves rejected readings back to pending in one short write transaction
  (safe beside a running agent: WAL mode plus a busy timeout; see ``agent/outboxview.py``).
  Nothing here deletes a reading.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Literal

from agent.errors import OutboxError
from agent.localstatus import load_local_config, pid_alive, read_state_file, state_file_path

if TYPE_CHECKING:
    from agent.readings import StoredReading

EX_OK: Final = 0
EX_FAILED: Final = 1
EX_USAGE: Final = 64  # sysexits.h
EX_CONFIG: Final = 78
PROGRESS_MIN_ROWS: Final = 10_000  # smaller exports finish before anyone would look
PROGRESS_STEP_PCT: Final = 5
EXPORT_MODE: Final = 0o600

Action = Literal["list", "export", "requeue"]
STATES: Final = ("pending", "rejected", "sent", "delivered")


def queue_main(action: Action, config_path: str, *, state: str, out: str | None) -> int:
    """Run one queue action on the outbox named by the config.

    Args:
        action: ``list``, ``export`` or ``requeue``.
        config_path: the agent's YAML config file.
        state: which readings to list/export (pending, rejected, sent, delivered);
            ``requeue`` always works on rejected ones.
        out: the export file (``None`` or ``-``: stdout).

    Returns:
        0 on success, 1 when the outbox cannot be read or written, 64 for a bad
        ``state``, 78 for a config that does not load.
    """
    config = load_local_config(config_path)
    if config is None:
        return EX_CONFIG
    path = config.storage.path
    try:
        if action == "requeue":
            return _requeue(path)
        if action == "list":
            return _list(path, state)
        return _export(path, state, out)
    except ValueError as exc:  # an unknown state name
        sys.stderr.write(f"{exc}\n")
        return EX_USAGE
    except (OutboxError, OSError) as exc:
        sys.stderr.write(f"queue {action}: {exc}\n")
        return EX_FAILED


def _line(row: StoredReading) -> str:
    reading = row.reading
    reason = f"  {row.reject_reason}" if row.reject_reason else ""
    received = reading.received.utc.isoformat().replace("+00:00", "Z")
    return (
        f"{row.seq:>10}  {row.state:<9} {reading.device.device_id:<16} "
        f"{reading.kind.value:<16} {received}{reason}"
    )


def _list(path: Path, state: str) -> int:
    from agent.outboxview import iter_readings  # noqa: PLC0415 - sqlite on demand

    count = 0
    for row in iter_readings(path, state):
        sys.stdout.write(_line(row) + "\n")
        count += 1
    sys.stderr.write(f"{count} {state} reading(s)\n")
    return EX_OK


def _export(path: Path, state: str, out: str | None) -> int:
    from agent.outboxview import summarize  # noqa: PLC0415

    total = summarize(path).counts.get(state)
    if total is None:
        raise ValueError(f"state must be one of {', '.join(STATES)}; got {state!r}")
    if out is None or out == "-":
        written = _write_lines(path, state, sys.stdout, total)
    else:
        written = _export_to_file(path, state, Path(out), total)
    sys.stderr.write(f"exported {written} {state} reading(s)\n")
    return EX_OK


def _export_to_file(path: Path, state: str, target: Path, total: int) -> int:
    partial = target.with_name(target.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, EXPORT_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            written = _write_lines(path, state, handle, total)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    sys.stderr.write(f"{target} holds patient data: keep it on the hub or an approved system\n")
    return written


def _write_lines(path: Path, state: str, handle: IO[str], total: int) -> int:
    from agent.outboxview import iter_readings  # noqa: PLC0415
    from agent.readings import reading_to_dict  # noqa: PLC0415

    progress = _Progress(total)
    written = 0
    for row in iter_readings(path, state):
        document = {
            "seq": row.seq,
            "state": row.state,
            "reject_reason": row.reject_reason,
            "reading": reading_to_dict(row.reading),
        }
        handle.write(json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n")
        written += 1
        progress.update(written)
    return written


class _Progress:
    """``exported 5000/100000 (5%)`` lines on stderr, every 5 %, for big exports only."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._next_pct = PROGRESS_STEP_PCT
        self._enabled = total >= PROGRESS_MIN_ROWS

    def update(self, done: int) -> None:
        # Integer percent: float steps would drift past 100 % and never print the end.
        if not self._enabled or done * 100 < self._total * self._next_pct:
            return
        pct = done * 100 // self._total
        self._next_pct = pct - pct % PROGRESS_STEP_PCT + PROGRESS_STEP_PCT
        sys.stderr.write(f"exported {done}/{self._total} ({pct}%)\n")


def _requeue(path: Path) -> int:
    from agent.outboxview import requeue_rejected  # noqa: PLC0415

    moved = requeue_rejected(path, None)
    sys.stdout.write(f"requeued {moved} rejected reading(s); they are pending again\n")
    state = read_state_file(state_file_path(path))
    if moved and state is not None and pid_alive(state.get("pid")):
        sys.stdout.write(
            "the agent is running: it sends them after its next reconnect; to send them now "
            "use the requeue-rejected remote request, or `systemctl restart wardlink`\n"
        )
    return EX_OK
