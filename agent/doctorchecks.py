"""The hub-local checks of ``wardlink doctor``: clock, disk, outbox, Bluetooth, serial ports.

Each check returns ``Check`` results and never raises for a foreseeable problem: the
technician gets one line saying what is wrong and what to do. Nothing here writes: the
outbox is opened read-only, and a serial port is opened without taking it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from agent.errors import OutboxError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.config import Config

Status = Literal["pass", "fail", "skip"]

MIN_FREE_BYTES: Final = 200 * 1024 * 1024  # a day of heavy streaming plus the WAL, with room
MIN_FREE_FRACTION: Final = 0.05
OLDEST_PENDING_WARN_S: Final = 3600.0  # an hour unsent: the link or broker needs a look
EARLIEST_PLAUSIBLE_YEAR: Final = 2025  # a Pi without RTC boots at its last shutdown or 1970
SYS_BLUETOOTH: Final = Path("/sys/class/bluetooth")
SYS_RFKILL: Final = Path("/sys/class/rfkill")


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    advice: str | None = None


def check_clock(is_synced: Callable[[], bool], now: datetime | None = None) -> Check:
    """Is the hub clock synchronised (and plausible)? Readings are flagged until it is."""
    moment = now or datetime.now(UTC)
    if moment.year < EARLIEST_PLAUSIBLE_YEAR:
        return Check(
            "clock",
            "fail",
            f"hub clock reads {moment:%Y-%m-%d}, which cannot be right",
            "connect the hub to the network so NTP can set the time; "
            "readings meanwhile are flagged clock_unsynced",
        )
    if not is_synced():
        return Check(
            "clock",
            "fail",
            "hub clock is not NTP-synchronised",
            "check the network and `timedatectl status`; readings are flagged "
            "clock_unsynced until the time is synchronised",
        )
    return Check("clock", "pass", f"synchronised ({moment:%Y-%m-%d %H:%M:%S} UTC)")


def check_disk(outbox_path: Path) -> Check:
    """Free space where the outbox lives."""
    directory = outbox_path.parent
    if not directory.is_dir():
        return Check(
            "disk",
            "fail",
            f"the outbox directory {directory} does not exist",
            "create it (systemd's StateDirectory= does) or correct storage.path",
        )
    usage = shutil.disk_usage(directory)
    free_mib = usage.free // (1024 * 1024)
    detail = f"{free_mib} MiB free of {usage.total // (1024 * 1024)} MiB at {directory}"
    if usage.free < MIN_FREE_BYTES or usage.free < usage.total * MIN_FREE_FRACTION:
        return Check(
            "disk",
            "fail",
            detail,
            "free space (old logs: `journalctl --vacuum-size=50M`); when the disk is full "
            "the outbox must evict readings",
        )
    return Check("disk", "pass", detail)


def check_outbox(outbox_path: Path, now: datetime | None = None) -> Check:
    """Outbox integrity and backlog, read-only (safe while the agent runs)."""
    from agent.outboxview import check_integrity, summarize  # noqa: PLC0415 - sqlite on demand

    if not outbox_path.exists():
        return Check("outbox", "pass", f"{outbox_path} not created yet (the agent has not run)")
    try:
        problem = check_integrity(outbox_path)
        summary = None if problem else summarize(outbox_path)
    except OutboxError as exc:
        return Check("outbox", "fail", str(exc), "check the file's owner and mode")
    if problem is not None or summary is None:
        return Check(
            "outbox",
            "fail",
            f"the database is damaged: {problem}",
            "restart the agent: it moves a damaged outbox aside (never deletes it) and "
            "starts a new one; keep the moved file for recovery",
        )
    age_s = summary.oldest_pending_age_s(now or datetime.now(UTC))
    detail = f"{summary.pending} pending, {summary.rejected} rejected"
    if age_s is not None:
        detail += f", oldest unsent {_duration(age_s)} old"
    if summary.rejected:
        advice = (
            "the broker refused some readings (often its ACL): fix the cause, then "
            "`wardlink queue list --state rejected` and `wardlink queue requeue`"
        )
        return Check("outbox", "fail", detail, advice)
    if age_s is not None and age_s > OLDEST_PENDING_WARN_S:
        return Check("outbox", "fail", detail, "readings are not leaving: see the broker steps")
    return Check("outbox", "pass", detail)


def _duration(seconds: float) -> str:
    if seconds < 120:  # noqa: PLR2004 - plain unit boundaries
        return f"{seconds:.0f} s"
    if seconds < 7200:  # noqa: PLR2004
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def check_bluetooth(
    *, needed: bool, sys_bluetooth: Path = SYS_BLUETOOTH, sys_rfkill: Path = SYS_RFKILL
) -> Check:
    """A Bluetooth adapter is present and not blocked (only required with BLE devices)."""
    adapters = sorted(p.name for p in sys_bluetooth.glob("hci*")) if sys_bluetooth.is_dir() else []
    if not adapters:
        if not needed:
            return Check("bluetooth", "skip", "no adapter (no Bluetooth devices configured)")
        return Check(
            "bluetooth",
            "fail",
            "no adapter: this hub has no Bluetooth controller the kernel can see",
            "plug in / enable the Bluetooth adapter (on a Pi: check dtoverlay=disable-bt "
            "is not set), then `hciconfig -a` or `bluetoothctl list`",
        )
    blocked = _rfkill_blocked(sys_rfkill)
    if blocked:
        return Check(
            "bluetooth",
            "fail" if needed else "skip",
            f"adapter {', '.join(adapters)} is blocked by rfkill ({blocked})",
            "`rfkill unblock bluetooth` (a hard block is a physical switch)",
        )
    return Check("bluetooth", "pass", f"adapter {', '.join(adapters)} present")


def _rfkill_blocked(sys_rfkill: Path) -> str | None:
    if not sys_rfkill.is_dir():
        return None
    for entry in sorted(sys_rfkill.iterdir()):
        try:
            if (entry / "type").read_text().strip() != "bluetooth":
                continue
            if (entry / "hard").read_text().strip() == "1":
                return "hard block"
            if (entry / "soft").read_text().strip() == "1":
                return "soft block"
        except OSError:
            continue  # an entry vanishing while we look is not a finding
    return None


def check_serial_port(device_id: str, port: Path, agent_pid: int | None = None) -> Check:
    """The port exists, is a tty, is readable/writable, and nobody else holds it.

    A port held by the running agent itself (``agent_pid``) passes: that is normal.
    """
    name = f"serial {device_id}"
    if not port.exists():
        parent = port.parent
        hint = "" if not parent.is_dir() else f"; present there: {_listing(parent)}"
        return Check(
            name,
            "fail",
            f"{port} does not exist{hint}",
            "plug the device's USB cable in (and check `dmesg | tail`), or correct the port",
        )
    if not stat.S_ISCHR(port.stat().st_mode):
        return Check(name, "fail", f"{port} is not a serial device", "correct the port path")
    if not os.access(port, os.R_OK | os.W_OK):
        return Check(
            name,
            "fail",
            f"{port} is not readable and writable by this user",
            "add the wardlink user to the `dialout` group (the unit does: SupplementaryGroups)",
        )
    if agent_pid is not None and _held_by(agent_pid, port):
        return Check(name, "pass", f"{port} present, in use by the running agent (pid {agent_pid})")
    return _probe_tty(name, port)


def _held_by(pid: int, port: Path) -> bool:
    """Whether process ``pid`` has ``port`` open (its /proc fd links; root or same user)."""
    target = os.path.realpath(port)
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        links = list(fd_dir.iterdir())
    except OSError:
        return False  # gone, or another user's process we may not inspect
    for link in links:
        with suppress(OSError):  # an fd closing while we look is not a finding
            if os.path.realpath(link) == target:
                return True
    return False


def _probe_tty(name: str, port: Path) -> Check:
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return Check(name, "fail", f"{port} is busy (held exclusively)", _HELD_ADVICE)
        return Check(name, "fail", f"{port} cannot be opened: {exc.strerror}", _HELD_ADVICE)
    try:
        if not os.isatty(fd):
            return Check(name, "fail", f"{port} is not a terminal device", "correct the port path")
        try:
            # pyserial's exclusive=True takes this lock; so does the running agent.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Check(name, "fail", f"{port} is locked by another process", _HELD_ADVICE)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return Check(name, "pass", f"{port} present, a tty, free")


_HELD_ADVICE: Final = (
    "if the wardlink agent runs, it holds the port (normal; stop it to test alone); "
    "otherwise find the holder with `fuser -v <port>` (ModemManager, a console, screen)"
)


def _listing(directory: Path) -> str:
    names = sorted(p.name for p in directory.iterdir())[:8]
    return ", ".join(names) if names else "nothing"


def device_checks(
    config: Config, sys_bluetooth: Path = SYS_BLUETOOTH, agent_pid: int | None = None
) -> list[Check]:
    """Bluetooth (if any device is BLE) and every configured serial port."""
    serial: Sequence[tuple[str, Path]] = [
        (d.id, Path(port)) for d in config.devices if (port := getattr(d, "port", None))
    ]
    serial_ids = {device_id for device_id, _ in serial}
    needs_ble = any(d.id not in serial_ids for d in config.devices)
    checks = [check_bluetooth(needed=needs_ble, sys_bluetooth=sys_bluetooth)]
    checks += [check_serial_port(device_id, port, agent_pid) for device_id, port in serial]
    return checks
