"""``wardlink status``: the local view from the state file and the outbox, no broker."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from agent.clock import SystemClock
from agent.health import Health
from agent.localstatus import read_state_file, state_file_path, status_main, write_state_file
from drivers.base import DeviceState
from tests.ops.fill import PATIENT, fill_outbox, write_config

if TYPE_CHECKING:
    from pathlib import Path


def _snapshot() -> dict[str, object]:
    clock = SystemClock()
    health = Health(hub_id="hub-a", clock=clock)
    health.device("cuff-1").set_state(DeviceState.CONNECTED)
    health.device("cuff-1").set_battery(81)
    health.note_reading("cuff-1", "blood_pressure", clock.now().utc)
    health.device("oxi-1").set_state(DeviceState.ERROR, "port missing: plug the USB cable in")
    health.publish.connection = "connected"
    return health.snapshot(clock.now(), uptime_s=5.0, outbox={}, disk_free_bytes=None)


def test_state_file_is_replaced_atomically_with_a_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state_file(path, {"first": 1})
    write_state_file(path, {"second": 2})
    state = read_state_file(path)
    assert state is not None
    assert state["health"] == {"second": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


def test_status_of_a_running_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    outbox = tmp_path / "state" / "outbox.db"
    asyncio.run(fill_outbox(outbox, pending=2, rejected=1, sent=4))
    write_state_file(state_file_path(outbox), _snapshot())
    assert status_main(str(config)) == 0
    out = capsys.readouterr().out
    assert "agent:        running (pid" in out
    assert "broker:       connected" in out
    assert "outbox:       2 pending (oldest waiting" in out
    assert "1 rejected, 4 sent" in out
    assert "cuff-1           connected" in out
    assert "battery 81%" in out
    assert "last blood_pressure" in out
    assert "oxi-1            error" in out
    assert "plug the USB cable in" in out
    assert PATIENT not in out


def test_status_when_the_agent_died(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    state = state_file_path(tmp_path / "state" / "outbox.db")
    # A real agent process that wrote its state and then was killed.
    code = (
        "import sys; from pathlib import Path; from agent.localstatus import write_state_file;"
        f"write_state_file(Path({str(state)!r}), {{}})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert status_main(str(config)) == 3
    out = capsys.readouterr().out
    assert "agent:        not running (last state written" in out
    assert "no database at" in out


def test_status_when_the_agent_is_alive_but_hung(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    state = state_file_path(tmp_path / "state" / "outbox.db")
    write_state_file(state, _snapshot(), now=datetime.now(UTC) - timedelta(minutes=10))
    assert status_main(str(config)) == 3
    assert "HUNG? pid" in capsys.readouterr().out


def test_status_without_any_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status_main(str(write_config(tmp_path))) == 3
    out = capsys.readouterr().out
    assert "no state file" in out
    assert "devices:      none reported" in out


def test_status_with_a_bad_config_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("hub: {}\n")
    assert status_main(str(path)) == 78
    assert "hub.id" in capsys.readouterr().err


def test_a_damaged_state_file_reads_as_no_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"pid": 1, "written_at":')
    assert read_state_file(path) is None
    path.write_text(json.dumps([1, 2]))
    assert read_state_file(path) is None
