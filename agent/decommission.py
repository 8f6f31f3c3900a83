"""``wardlink decommission``: wipe a hub before it is reissued to another patient.

reliability.md R13/T22: the outbox is cleared only after its unsent readings were
uploaded or exported, so the command refuses while readings are pending or rejected
unless ``--export FILE`` (written first, with ``agent.queue_cli``'s export code) or
``--force`` (the count destroyed is printed) is given. It also refuses while the agent
runs (``agent.localstatus``: a state file whose pid is alive): deleting a database under
a live writer would leave it writing to an unlinked file.

Removed, each path printed: the outbox database and its ``-wal``/``-shm``, the seq guard
``<outbox>.seq``, ``state.json``, the BLE glucose cursors (``ble-<id>.cursor.json``),
quarantined ``*.corrupt-*`` databases, the adapter ladder's reboot count and pending
``*.request`` files, plus the temporary files these are written through.
Quarantined databases cannot be counted, so they also need ``--force``.

Then the BlueZ bond of every configured BLE device is removed (``agent.bluez_bonds``,
D-Bus ``Adapter1.RemoveDevice``), and, when all of that is done, the confirmation is
published (``agent.decommission_notice``: the hub's retained topics cleared, a retained
``decommissioned`` status) unless ``--offline``. The hub's client key, certificate and
broker password are deleted only with ``--delete-credentials`` and only after the
confirmation went out (they are what publishes it); a fleet CA's certificate cannot be
rotated by the hub itself, so the fleet revokes it (docs/decommission.md). Nothing
printed or published carries a patient identifier or a value.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.bluez_bonds import BluezBonds, BluezUnavailableError
from agent.errors import OutboxError
from agent.localstatus import load_local_config, pid_alive, read_state_file, state_file_path
from agent.outbox_guard import guard_path
from agent.topics import utc_iso

if TYPE_CHECKING:
    from agent.bluez_bonds import BondRemover
    from agent.config import Config

EX_OK: Final = 0
EX_REFUSED: Final = 1
EX_CONFIG: Final = 78
EXPORT_MODE: Final = 0o600
UNSENT_STATES: Final = ("pending", "rejected")


def decommission_main(
    config_path: str,
    *,
    export: str | None,
    force: bool,
    delete_credentials: bool = False,
    offline: bool = False,
    bonds: BondRemover | None = None,
) -> int:
    """Wipe the hub's local patient data, refusing while it could lose readings.

    Args:
        config_path: the agent's YAML config file.
        export: a file to write every pending and rejected reading to (JSON lines, mode
            0600) before the wipe, or None.
        force: wipe even though unsent readings (or quarantined databases) would be lost.
        delete_credentials: delete the hub's client key, certificate and password file
            once the confirmation is published (or with ``offline``).
        offline: do not publish the confirmation (the hub has no network).
        bonds: the Bluetooth seam; None for BlueZ on the system bus.

    Returns:
        0 when every step is done, 1 when refused or a step is not complete, 78 for a
        bad config.
    """
    config = load_local_config(config_path)
    if config is None:
        return EX_CONFIG
    outbox = config.storage.path
    unsent = _may_wipe(outbox, export, force=force)
    if unsent is None:
        return EX_REFUSED
    reported_devices = _reported_device_ids(outbox)  # read before state.json goes
    removed, failed = _wipe(_artefacts(outbox))
    problems = [f"{failed} file(s) could not be removed (see above)"] if failed else []
    bonds_removed, bond_problem = _remove_bonds(config, bonds or BluezBonds())
    problems += [bond_problem] if bond_problem else []
    digest = _digest(removed, bonds_removed)
    _say(f"removed {len(removed)} file(s) and {len(bonds_removed)} bond(s); sha256 {digest}")
    notice = {
        "state": "decommissioned",
        "ts": utc_iso(datetime.now(UTC)),
        "removed_files": len(removed),
        "removed_bonds": len(bonds_removed),
        "removed_sha256": digest,
        **unsent,
    }
    published = _confirm(config, notice, reported_devices, offline=offline, problems=problems)
    _credentials(
        config, delete=delete_credentials, may_delete=published or offline, problems=problems
    )
    if problems:
        _say("NOT complete: " + "; ".join(problems))
        return EX_REFUSED
    _say("local patient data wiped; replace patient.id in the config before reissuing")
    return EX_OK


def _may_wipe(outbox: Path, export: str | None, *, force: bool) -> dict[str, int] | None:
    """Refuse (None, reason printed) unless wiping ``outbox`` loses nothing unknowingly.

    Returns:
        ``unsent_exported`` and ``unsent_destroyed`` counts, for the confirmation.
    """
    state = read_state_file(state_file_path(outbox))
    if state is not None and pid_alive(state.get("pid")):
        _refuse(
            f"refused: the agent is running (pid {state.get('pid')}); "
            "run `systemctl stop wardlink` first"
        )
        return None
    try:
        counts = _unsent_counts(outbox)
    except OutboxError as exc:
        if not force:
            _refuse(
                f"refused: {exc}; its readings cannot be counted or exported (--force wipes it)"
            )
            return None
        _say(f"--force: destroying an unreadable outbox ({exc})")
        counts = {}
    quarantined = sorted(outbox.parent.glob("*.corrupt-*"))
    if quarantined and not force:
        _refuse(
            f"refused: {len(quarantined)} quarantined database file(s) may hold unsent "
            "readings that cannot be exported; recover them (sqlite3 .recover) or use --force"
        )
        return None
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
) -> dict[str, int] | None:
    """Export or account for unsent readings; None when the wipe must not go ahead."""
    unsent = sum(counts.values())
    detail = ", ".join(f"{n} {name}" for name, n in counts.items())
    if unsent and export is None and not force:
        _refuse(
            f"refused: {unsent} unsent reading(s) ({detail}); "
            "export them with --export FILE or destroy them with --force"
        )
        return None
    if unsent and export is not None:
        try:
            written = _export(outbox, Path(export), counts)
        except (OutboxError, OSError) as exc:
            _refuse(f"refused: export failed, nothing wiped: {exc}")
            return None
        _say(f"exported {written} unsent reading(s) ({detail}) to {export}")
        _say(f"{export} holds patient data: move it to an approved system")
        return {"unsent_exported": written, "unsent_destroyed": 0}
    if unsent:
        _say(f"--force: destroying {unsent} unsent reading(s) ({detail})")
    return {"unsent_exported": 0, "unsent_destroyed": unsent}


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
        # The BLE adapter ladder's reboot count: the next patient's hub starts from zero.
        directory / "ble-adapter-reboots",
    ]
    patterns = (
        f".{state.name}.*.tmp",
        "ble-*.cursor.json",
        "ble-*.cursor.tmp",
        "*.corrupt-*",
        "*.request",  # an adapter-ladder request not yet taken by its privileged unit
    )
    globbed = [p for pattern in patterns for p in sorted(directory.glob(pattern))]
    return [p for p in named + globbed if p.is_file() or p.is_symlink()]


def _wipe(paths: list[Path]) -> tuple[list[Path], int]:
    """Remove ``paths``, printing each; returns those removed and how many could not be."""
    removed: list[Path] = []
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
        removed.append(path)
    for directory in {p.parent for p in removed}:
        _sync_dir(directory)
    return removed, failed


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


def _reported_device_ids(outbox: Path) -> list[str]:
    """Devices the agent last reported (state.json): their retained topics go too."""
    state = read_state_file(state_file_path(outbox)) or {}
    health: Any = state.get("health")
    devices = health.get("devices") if isinstance(health, dict) else None
    return [str(d) for d in devices] if isinstance(devices, dict) else []


def _digest(files: list[Path], bonds: list[str]) -> str:
    """sha256 of what this run removed, printed here and published, to match the two."""
    entries = sorted([f"file:{p}" for p in files] + [f"bond:{a}" for a in bonds])
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _remove_bonds(config: Config, bonds: BondRemover) -> tuple[list[str], str | None]:
    """Remove the configured BLE devices' bonds; (addresses removed, problem or None)."""
    from drivers.ble.settings import BleSettings  # noqa: PLC0415 - pydantic models on demand

    addresses = [d.address.upper() for d in config.devices if isinstance(d, BleSettings)]
    if not addresses:
        return [], None
    try:
        report = asyncio.run(bonds.remove(addresses))
    except BluezUnavailableError as exc:
        _say(f"could NOT remove Bluetooth bonds: {exc}")
        _say("when Bluetooth works, run this command again, or as root run:")
        for address in addresses:
            _say(f"  bluetoothctl remove {address}")
        return [], "Bluetooth bonds not removed"
    for address, paths in sorted(report.removed.items()):
        _say(f"removed Bluetooth bond {address} ({', '.join(paths)})")
    for address in report.not_known:
        _say(f"no Bluetooth record of {address}: nothing to remove")
    for address, reason in sorted(report.failed.items()):
        _say(f"could NOT remove Bluetooth bond {address}: {reason}")
    for address in report.other_bonded:
        _say(
            f"also bonded, not in the config (left alone): {address}; "
            f"if it was this patient's: bluetoothctl remove {address}"
        )
    problem = f"{len(report.failed)} Bluetooth bond(s) not removed" if report.failed else None
    return sorted(report.removed), problem


def _confirm(
    config: Config,
    notice: dict[str, Any],
    device_ids: list[str],
    *,
    offline: bool,
    problems: list[str],
) -> bool:
    """Publish the confirmation when everything before it is done; True when published."""
    from agent.decommission_notice import NoticeError, publish_notice  # noqa: PLC0415

    if offline:
        _say("confirmation NOT published (--offline): tell the fleet this hub is decommissioned")
        return False
    if problems:
        _say("confirmation not published: the wipe is not complete")
        return False
    try:
        cleared = asyncio.run(publish_notice(config, notice, device_ids))
    except NoticeError as exc:
        _say(f"confirmation NOT published: {exc}")
        _say("run this command again when the broker is reachable, or use --offline")
        problems.append("confirmation not published")
        return False
    _say(
        f"confirmation published: {cleared} retained topic(s) cleared, "
        "status 'decommissioned' (retained)"
    )
    return True


def _credentials(config: Config, *, delete: bool, may_delete: bool, problems: list[str]) -> None:
    """Delete the hub's client credentials if asked and safe, else say what stays valid."""
    tls = config.mqtt.tls
    named = [config.mqtt.password_file]
    named += [tls.key_file, tls.cert_file] if tls is not None else []
    files = [p for p in named if p is not None]
    if not files:
        return
    if delete and may_delete:
        failed = _wipe(files)[1]
        if failed:
            problems.append(f"{failed} credential file(s) could not be removed")
        _say("the config now names missing credential files: install new ones before reuse")
    elif delete:
        _say("credentials KEPT: the confirmation still has to be published with them")
    else:
        _say("credentials kept (--delete-credentials deletes them): " + ", ".join(map(str, files)))
    _say("the fleet must revoke this hub's certificate / broker account and issue new ones")
