"""``wardlink queue``: list, export and requeue on a real outbox, also beside a live one."""

from __future__ import annotations

import asyncio
import json
import stat
from typing import TYPE_CHECKING

import pytest

from agent import queue_cli
from agent.outbox import Outbox
from agent.queue_cli import queue_main
from agent.readings import reading_from_dict
from tests.ops.fill import PATIENT, fill_outbox, spot_readings, write_config

if TYPE_CHECKING:
    from pathlib import Path


def _config(tmp: Path) -> str:
    return str(write_config(tmp))


def test_list_rejected_shows_reasons_and_no_patient_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    rejected = asyncio.run(fill_outbox(tmp_path / "state" / "outbox.db", pending=2, rejected=3))
    assert queue_main("list", config, state="rejected", out=None) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [int(line.split()[0]) for line in lines] == rejected
    assert all("0x87 Not authorized" in line and "body_weight" in line for line in lines)
    assert PATIENT not in captured.out
    assert "70." not in captured.out  # no reading values either
    assert captured.err == "3 rejected reading(s)\n"


def test_export_writes_complete_json_lines_privately(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    outbox_path = tmp_path / "state" / "outbox.db"
    asyncio.run(fill_outbox(outbox_path, pending=5, rejected=1, sent=2))
    target = tmp_path / "export.jsonl"
    assert queue_main("export", config, state="pending", out=str(target)) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 5
    assert {r["state"] for r in rows} == {"pending"}
    readings = [reading_from_dict(r["reading"]) for r in rows]
    assert [r.values[0].value for r in readings] == [70.3, 70.4, 70.5, 70.6, 70.7]
    assert readings[0].patient.patient_id == PATIENT  # a manual upload needs the binding
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl", "state", "wardlink.yaml"]
    assert "exported 5 pending reading(s)" in capsys.readouterr().err


def test_export_to_stdout_with_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_cli, "PROGRESS_MIN_ROWS", 10)
    config = _config(tmp_path)
    asyncio.run(fill_outbox(tmp_path / "state" / "outbox.db", pending=40))
    assert queue_main("export", config, state="pending", out="-") == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 40
    progress = [
        line for line in captured.err.splitlines() if line.startswith("exported ") and "/" in line
    ]
    assert progress[0] == "exported 2/40 (5%)"
    assert progress[-1] == "exported 40/40 (100%)"


def test_unknown_state_and_missing_outbox_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert queue_main("list", config, state="pending", out=None) == 1
    assert "no outbox database here" in capsys.readouterr().err
    asyncio.run(fill_outbox(tmp_path / "state" / "outbox.db", pending=1))
    assert queue_main("export", config, state="stuck", out=None) == 64
    assert "state must be one of" in capsys.readouterr().err


async def test_requeue_beside_a_running_agent_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    path = tmp_path / "state" / "outbox.db"
    rejected = await fill_outbox(path, pending=3, rejected=4)
    agent_outbox = await Outbox.open(path)  # the running agent's own connection
    try:
        # The agent keeps capturing while the technician requeues.
        capturing = asyncio.create_task(_capture_steadily(agent_outbox, rounds=20))
        code = await asyncio.to_thread(queue_main, "requeue", config, state="rejected", out=None)
        await capturing
        assert code == 0
        assert "requeued 4 rejected reading(s)" in capsys.readouterr().out
        pending = await agent_outbox.list_readings(state="pending", limit=10_000)
        assert set(rejected) <= {r.seq for r in pending}
        assert len(pending) == 3 + 4 + 20 * 5
        assert await agent_outbox.list_readings(state="rejected") == []
    finally:
        await agent_outbox.close()


async def _capture_steadily(outbox: Outbox, rounds: int) -> None:
    for index in range(rounds):
        readings = spot_readings(5, device_id=f"scale-{index}")
        result = await outbox.capture(readings)
        assert result.stored == 5
        await asyncio.sleep(0.005)


def test_queue_with_a_bad_config_exits_78_and_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("hub: {}\n")
    assert queue_main("list", str(path), state="pending", out=None) == 78
    captured = capsys.readouterr()
    assert "hub.id" in captured.err
    assert captured.out == ""
