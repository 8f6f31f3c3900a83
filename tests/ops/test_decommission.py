"""``wardlink decommission`` on real outbox files, real configs and a real (dead) agent pid.

These run with ``offline=True``: they are about the local files. The Bluetooth bonds are
tested in test_decommission_bonds.py, the published confirmation and the credentials in
test_decommission_notice.py.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from agent.decommission import decommission_main
from agent.localstatus import state_file_path, write_state_file
from agent.outbox_guard import guard_path
from agent.readings import reading_from_dict
from tests.ops.fill import PATIENT, fill_outbox, write_config

if TYPE_CHECKING:
    from pathlib import Path


def _outbox(tmp: Path) -> Path:
    return tmp / "state" / "outbox.db"


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _artefacts(tmp: Path) -> list[Path]:
    """Every per-patient file a hub that ran for a while holds, created for real."""
    outbox = _outbox(tmp)
    state_dir = outbox.parent
    asyncio.run(fill_outbox(outbox, pending=0, sent=3))
    state = state_file_path(outbox)
    state.write_text(json.dumps({"state_version": 1, "pid": _dead_pid(), "health": {}}))
    cursor = state_dir / "ble-gluco.cursor.json"
    cursor.write_text('{"last_sequence": 12}')
    corrupt = state_dir / "outbox.db.corrupt-20261127T010203000000Z"
    corrupt.write_bytes(b"not a database")
    corrupt_wal = state_dir / "outbox.db.corrupt-20261127T010203000000Z-wal"
    corrupt_wal.write_bytes(b"junk")
    ladder = [state_dir / "ble-adapter-reboots", state_dir / "bluetooth-restart.request"]
    for path in ladder:  # the BLE adapter ladder's files (drivers/ble/adapter.py)
        path.write_text("1")
    sidecars = [outbox.with_name(outbox.name + s) for s in ("-wal", "-shm")]
    for side in sidecars:  # what a power cut leaves beside the database
        if not side.exists():
            side.write_bytes(b"")
    return [outbox, guard_path(outbox), state, cursor, corrupt, corrupt_wal, *ladder, *sidecars]


def test_refused_while_readings_are_unsent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    asyncio.run(fill_outbox(_outbox(tmp_path), pending=2, rejected=1))
    assert decommission_main(config, export=None, force=False, offline=True) == 1
    err = capsys.readouterr().err
    assert "refused: 3 unsent reading(s) (2 pending, 1 rejected)" in err
    assert "--export FILE" in err
    assert _outbox(tmp_path).exists()
    assert guard_path(_outbox(tmp_path)).exists()


def test_export_writes_every_unsent_reading_then_wipes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    rejected = asyncio.run(fill_outbox(_outbox(tmp_path), pending=3, rejected=2, sent=1))
    target = tmp_path / "handover.jsonl"
    assert decommission_main(config, export=str(target), force=False, offline=True) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["state"] for r in rows] == ["pending"] * 3 + ["rejected"] * 2
    assert [r["seq"] for r in rows][3:] == rejected
    readings = [reading_from_dict(r["reading"]) for r in rows]
    assert sorted(float(r.values[0].value or 0) for r in readings) == [70.1, 70.2, 70.3, 70.4, 70.5]
    assert all(r.patient.patient_id == PATIENT for r in readings)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not _outbox(tmp_path).exists()
    out = capsys.readouterr().out
    assert "exported 5 unsent reading(s) (3 pending, 2 rejected)" in out
    assert PATIENT not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "handover.jsonl",
        "state",
        "wardlink.yaml",
    ]


def test_force_wipes_and_says_how_many_are_destroyed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    asyncio.run(fill_outbox(_outbox(tmp_path), pending=4, rejected=1))
    assert decommission_main(config, export=None, force=True, offline=True) == 0
    out = capsys.readouterr().out
    assert "--force: destroying 5 unsent reading(s) (4 pending, 1 rejected)" in out
    assert f"removed {_outbox(tmp_path)}" in out
    assert list((tmp_path / "state").iterdir()) == []


def test_refused_while_the_agent_runs_even_when_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    asyncio.run(fill_outbox(_outbox(tmp_path), pending=0, sent=2))
    state = state_file_path(_outbox(tmp_path))
    write_state_file(state, {})  # records os.getpid(): this test is the "running agent"
    before = sorted((tmp_path / "state").iterdir())
    assert decommission_main(config, export=None, force=True, offline=True) == 1
    err = capsys.readouterr().err
    assert "agent is running" in err
    assert "systemctl stop wardlink" in err
    assert sorted((tmp_path / "state").iterdir()) == before


def test_every_artefact_is_removed_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    artefacts = _artefacts(tmp_path)
    keep = tmp_path / "state" / "notes.txt"  # not ours: must survive
    keep.write_text("technician notes")
    # A quarantined database may hold readings nobody can count: it needs --force.
    assert decommission_main(config, export=None, force=False, offline=True) == 1
    assert "2 quarantined database file(s)" in capsys.readouterr().err
    assert all(p.exists() for p in artefacts)
    assert decommission_main(config, export=None, force=True, offline=True) == 0
    out = capsys.readouterr().out
    for path in artefacts:
        assert not path.exists(), path
        assert f"removed {path}\n" in out
    assert sorted((tmp_path / "state").iterdir()) == [keep]
    assert (tmp_path / "wardlink.yaml").exists()


def test_nothing_to_wipe_is_fine_and_bad_config_is_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    assert decommission_main(config, export=None, force=False, offline=True) == 0
    out = capsys.readouterr().out
    assert "removed /" not in out
    assert "removed 0 file(s) and 0 bond(s)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub: {id: hub-a}\n")
    assert decommission_main(str(bad), export=None, force=False, offline=True) == 78
    assert capsys.readouterr().err.strip()


def test_unreadable_outbox_is_refused_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    _outbox(tmp_path).write_bytes(b"this is not sqlite" * 100)
    assert (
        decommission_main(config, export=str(tmp_path / "x.jsonl"), force=False, offline=True) == 1
    )
    assert "cannot be counted or exported" in capsys.readouterr().err
    assert _outbox(tmp_path).exists()
    assert not (tmp_path / "x.jsonl").exists()
    assert decommission_main(config, export=None, force=True, offline=True) == 0
    assert not _outbox(tmp_path).exists()


def test_failed_export_wipes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    asyncio.run(fill_outbox(_outbox(tmp_path), pending=2))
    target = tmp_path / "no-such-dir" / "handover.jsonl"  # a real ENOENT from open(2)
    assert decommission_main(config, export=str(target), force=True, offline=True) == 1
    assert "export failed, nothing wiped" in capsys.readouterr().err
    assert _outbox(tmp_path).exists()
    assert guard_path(_outbox(tmp_path)).exists()
