"""``wardlink status``: the hub's own view, without the broker and without a network port.

Two sources, both files in the outbox's directory:
- ``state.json``, which the running agent rewrites atomically every health interval
  (``write_state_file``): per-device state, publish counters, alarms, the agent's pid;
- the outbox database itself, read-only: pending, oldest unsent age, rejected.

A state file older than ``STALE_INTERVALS`` health intervals, or whose pid is gone, means
the agent is not running (or is hung): the command says so instead of showing old
numbers as if they were current. Nothing shown carries a patient identifier or a value.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.errors import ConfigError, OutboxError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.config import Config

STATE_FILE_NAME: Final = "state.json"
STATE_FILE_MODE: Final = 0o640
STATE_VERSION: Final = 1
STALE_INTERVALS: Final = 3.0
EX_OK: Final = 0
EX_NOT_RUNNING: Final = 3  # as `systemctl status` uses 3 for "not running"
EX_CONFIG: Final = 78


def state_file_path(outbox_path: Path) -> Path:
    """Where the agent writes its state: beside the outbox (the unit's StateDirectory)."""
    return outbox_path.with_name(STATE_FILE_NAME)


def write_state_file(path: Path, snapshot: Mapping[str, Any], now: datetime | None = None) -> None:
    """Atomically replace ``path`` with ``snapshot`` plus the pid and the time written.

    Written to a temporary file in the same directory, flushed, then renamed over the old
    one, so a reader (or a power cut) sees the old file or the new one, never half of one.
    ``snapshot`` is the health snapshot (``Health.snapshot``): no patient identifiers.

    Raises:
        OSError: the directory is not writable or the disk is full (the caller logs it;
            the state file is a convenience, never a reason to stop the agent).
    """
    document = {
        "state_version": STATE_VERSION,
        "pid": os.getpid(),
        "written_at": _iso(now or datetime.now(UTC)),
        "health": dict(snapshot),
    }
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp = Path(tmp_name)
        tmp.chmod(STATE_FILE_MODE)
        tmp.replace(path)
    except BaseException:
        with suppress(FileNotFoundError):
            Path(tmp_name).unlink()
        raise


def read_state_file(path: Path) -> dict[str, Any] | None:
    """The last state the agent wrote, or None when there is none (or it is unreadable)."""
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # half-written files cannot happen (atomic rename); this is damage
    return document if isinstance(document, dict) else None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def pid_alive(pid: object) -> bool:
    """Whether a process with this pid exists (signal 0 probes without signalling)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user (the wardlink service user)
    return True


def agent_state(state: dict[str, Any] | None, interval_s: float, now: datetime) -> str:
    """One line: is the agent running, judged from its state file alone."""
    if state is None:
        return "not running (no state file: the agent has not run, or not since boot)"
    written = _parse_time(state.get("written_at"))
    age_s = None if written is None else (now - written).total_seconds()
    age = "unknown" if age_s is None else _ago(age_s)
    if not pid_alive(state.get("pid")):
        return f"not running (last state written {age})"
    if age_s is None or age_s > STALE_INTERVALS * interval_s:
        return f"HUNG? pid {state.get('pid')} alive but its state was last written {age}"
    return f"running (pid {state.get('pid')}), state written {age}"


def _ago(seconds: float) -> str:
    if seconds < 120:  # noqa: PLR2004 - unit boundaries
        return f"{seconds:.0f} s ago"
    if seconds < 7200:  # noqa: PLR2004
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _when(text: object, now: datetime) -> str:
    moment = _parse_time(text)
    if moment is None:
        return "never"
    return f"{text} ({_ago((now - moment).total_seconds())})"


def render_status(
    hub_id: str, state: dict[str, Any] | None, outbox_line: str, interval_s: float, now: datetime
) -> str:
    """The screen ``wardlink status`` prints."""
    health = (state or {}).get("health") or {}
    publish = health.get("publish") or {}
    lines = [
        f"hub:          {hub_id}",
        f"agent:        {agent_state(state, interval_s, now)}",
        f"broker:       {publish.get('connection', 'unknown')}"
        + (
            f" (last error: {publish['last_connect_error']})"
            if publish.get("last_connect_error")
            else ""
        ),
        (
            f"last publish: {_when(publish.get('last_publish_at'), now)}"
            f"; readings acknowledged since start: {publish.get('readings_acked', 0)}"
        ),
        f"outbox:       {outbox_line}",
    ]
    lines += [f"alarm:        {a.get('name')}: {a.get('detail')}" for a in health.get("alarms", [])]
    devices: dict[str, dict[str, Any]] = health.get("devices") or {}
    lines.append("devices:" if devices else "devices:      none reported")
    for device_id, device in sorted(devices.items()):
        lines.append(_device_line(device_id, device, now))
    return "\n".join(lines) + "\n"


def _device_line(device_id: str, device: dict[str, Any], now: datetime) -> str:
    parts = [f"  {device_id:<16} {device.get('state', '?'):<12}"]
    parts.append(f"last seen {_when(device.get('last_seen'), now)}")
    if device.get("last_reading_at"):
        kind = device.get("last_reading_kind") or "reading"
        parts.append(f"last {kind} {_when(device['last_reading_at'], now)}")
    if device.get("battery_percent") is not None:
        parts.append(f"battery {device['battery_percent']}%")
    if device.get("reason"):
        parts.append(f"-> {device['reason']}")
    return "  ".join(parts[:1]) + ", ".join(parts[1:])


def outbox_line(outbox_path: Path, now: datetime) -> str:
    """Pending, oldest unsent age and rejected, read from the database file."""
    from agent.outboxview import summarize  # noqa: PLC0415 - sqlite only when needed

    if not outbox_path.exists():
        return f"no database at {outbox_path} yet"
    try:
        summary = summarize(outbox_path)
    except OutboxError as exc:
        return f"cannot read: {exc}"
    age_s = summary.oldest_pending_age_s(now)
    oldest = "" if age_s is None else f" (oldest waiting {_ago(age_s).removesuffix(' ago')})"
    sent = summary.counts["sent"]
    return f"{summary.pending} pending{oldest}, {summary.rejected} rejected, {sent} sent (audit)"


def load_local_config(config_path: str) -> Config | None:
    """The config for a tool that reads only local files (status, queue).

    Files the config names (TLS, passwords) are not checked: irrelevant to a local view.

    Returns:
        The config, or None after its problems were written to stderr.
    """
    from agent.configload import load_config  # noqa: PLC0415 - pydantic on demand

    try:
        return load_config(Path(config_path), check_files=False)
    except ConfigError as exc:
        sys.stderr.write("\n".join(exc.problems) + "\n")
        return None


def status_main(config_path: str) -> int:
    """Print the local status. 0: agent running; 3: not running or hung; 78: bad config."""
    config = load_local_config(config_path)
    if config is None:
        return EX_CONFIG
    now = datetime.now(UTC)
    path = config.storage.path
    state = read_state_file(state_file_path(path))
    interval_s = config.health.interval_s
    sys.stdout.write(render_status(config.hub.id, state, outbox_line(path, now), interval_s, now))
    running = agent_state(state, interval_s, now).startswith("running")
    return EX_OK if running else EX_NOT_RUNNING
