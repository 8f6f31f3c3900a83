"""``wardlink decommission``: wipe a hub before it is reissued to another patient.

reliability.md R13/T22: the outbox is cleared only after its unsent readings were
uploaded or exported, so the command refuses while readings are pending or rejected
unless ``--export FILE`` (written first, with ``agent.queue_cli``'s export code) or
``--force`` (the count destroyed is printed) is given. It also refuses while the agent
runs (``agent.localstatus``: a state file whose pid is alive): deleting a database under
a live writer would leave it writing to an unlinked file.

Removed, each path printed: the outbox database and its ``-wal``/``-shm``, the seq guard
``<outbox>.seq``, ``state.json``, the BLE glucose cursors (``ble-<id>.cursor.json``) and
quarantined ``*.corrupt-*`` databases, plus the temporary files these are written through.
Quarantined databases cannot be counted, so they also need ``--force``. BlueZ bonds
cannot be removed from here: the ``bluetoothctl remove`` command for each configured BLE
address is printed instead. Nothing printed carries a patient identifier or a value.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agent.errors import OutboxError
from agent.localstatus import load_local_config, pid_alive, read_state_file, state_file_path
from agent.outbox_guard import guard_path

if TYPE_CHECKING:
    from agent.config import Config

EX_OK: Final = 0
EX_REFUSED: Final = 1
EX_CONFIG: Final = 78
EXPORT_MODE: Final = 0o600
UNSENT_STATES: Final = ("pending", "rejected")


def decommission_main(config_path: str, *, export: str | None, force: bool) -> int:
    """Wipe the hub's local patient data, refusing while it could lose readings.

    Args:
        config_path: the agent's YAML config file.
        export: a file to write every pending and rejected reading to (JSON lines, mode
            0600) before the wipe, or None.
        force: wipe even though unsent readings (or quarantined databases) would be lost.

    Returns:
        0 when wiped, 1 when refused or a file could not be removed, 78 for a bad config.
    """
    config = load_local_config(config_path)
    if config is None:
        return EX_CONFIG
    outbox = config.storage.path
    if not _may_wipe(outbox, export, force=force):
        return EX_REFUSED
    failed = _wipe(_artefacts(outbox))
    _print_bond_commands(config)
    if failed:
        _say(f"NOT complete: {failed} file(s) could not be removed (see above)")
        return EX_REFUSED
    _say("local patient data wiped; replace patient.id in the config before reissuing")
    return EX_OK


def _may_wipe(outbox: Path, export: str | None, *, force: bool) -> bool:
    """Refuse (False, reason printed) unless wiping ``outbox`` loses nothing unknowingly."""
    state = read_state_file(state_file_path(outbox))
    if state is not None and pid_alive(state.get("pid")):
        _refuse(
            f"refused: the agent is running (pid {state.get('pid')}); "
            "run `systemctl stop wardlink` first"
        )
        return False
    try:
        counts = _unsent_counts(outbox)
    except OutboxError as exc:
        if not force:
            _refuse(
                f"refused: {exc}; its readings cannot be counted or exported (--force wipes it)"
            )
            return False
        _say(f"--force: destroying an unreadable outbox ({exc})")
        counts = {}
    quarantined = sorted(outbox.parent.glob("*.corrupt-*"))
    if quarantined and not force:
        _refuse(
            f"refused: {len(quarantined)} quarantined database file(s) may hold unsent "
            "readings that cannot be exported; recover them (sqlite3 .recover) or use --force"
        )
        return False
    return _settle_unsent(outbox, counts, export, force=force)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _refuse(line: str) -> None:
    sys.stderr.write(line + "\n")


def _unsent_counts(outbox: Path) -> dict[str, int]:
    """Pending and rejected rows (empty when there is no outbox).

    Raises:
        OutboxError: the outbox exists but cannot be read.
    """
    from agent.outboxview import summarize  # noqa: PLC0415 - sqlite on demand

    if not outbox.exists():
        return {}
    summary = summarize(outbox)
    return {name: summary.counts.get(name, 0) for name in UNSENT_STATES}


def _settle_unsent(
    outbox: Path, counts: dict[str, int], export: str | None, *, force: bool
) -> bool:
    """Export or account for unsent readings; False when the wipe must not go ahead."""
    unsent = sum(counts.values())
    detail = ", ".join(f"{n} {name}" for name, n in counts.items())
    if unsent and export is None and not force:
        _refuse(
            f"refused: {unsent} unsent reading(s) ({detail}); "
            "export them with --export FILE or destroy them with --force"
        )
        return False
    if unsent and export is not None:
        try:
            written = _export(outbox, Path(export), counts)
        except (OutboxError, OSError) as exc:
            _refuse(f"refused: export failed, nothing wiped: {exc}")
            return False
        _say(f"exported {written} unsent reading(s) ({detail}) to {export}")
        _say(f"{export} holds patient data: move it to an approved system")
    elif unsent:
        _say(f"--force: destroying {unsent} unsent reading(s) ({detail})")
    return True


def _export(outbox: Path, target: Path, counts: dict[str, int]) -> int:
    """Pending then rejected readings to ``target``, atomically (``.partial`` then rename).

    Raises:
        OutboxError: the outbox cannot be read, or fewer rows came out than were counted.
        OSError: the file cannot be written.
    """
    from agent.queue_cli import _write_lines  # noqa: PLC0415 - one export format

    partial = target.with_name(target.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, EXPORT_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            written = sum(_write_lines(outbox, s, handle, n) for s, n in counts.items())
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if written != sum(counts.values()):  # never call a short export complete
        partial.unlink(missing_ok=True)
        raise OutboxError(f"exported {written} of {sum(counts.values())} counted readings")
    partial.replace(target)
    return written


def _artefacts(outbox: Path) -> list[Path]:
    """Every file the agent keeps patient data or per-patient state in, that exists now."""
    directory = outbox.parent
    state = state_file_path(outbox)
    guard = guard_path(outbox)
    named = [
        outbox,
        outbox.with_name(outbox.name + "-wal"),
        outbox.with_name(outbox.name + "-shm"),
        guard,
        guard.with_name(guard.name + ".tmp"),
        state,
    ]
    patterns = (f".{state.name}.*.tmp", "ble-*.cursor.json", "ble-*.cursor.tmp", "*.corrupt-*")
    globbed = [p for pattern in patterns for p in sorted(directory.glob(pattern))]
    return [p for p in named + globbed if p.is_file() or p.is_symlink()]


def _wipe(paths: list[Path]) -> int:
    """Remove ``paths``, printing each; returns how many could not be removed."""
    failed = 0
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            _say(f"could not remove {path}: {exc.strerror}")
            failed += 1
            continue
        _say(f"removed {path}")
    if paths:
        _sync_dir(paths[0].parent)
    return failed


def _sync_dir(directory: Path) -> None:
    # The unlinks must survive a power cut straight after the technician unplugs the hub.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # the directory itself is gone or unreadable: nothing left to persist
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _print_bond_commands(config: Config) -> None:
    from drivers.ble.settings import BleSettings  # noqa: PLC0415 - pydantic models on demand

    addresses = [d.address for d in config.devices if isinstance(d, BleSettings)]
    if not addresses:
        return
    _say("BlueZ bonds are not removed by this command; as root, run:")
    for address in addresses:
        _say(f"  bluetoothctl remove {address}")
