"""The README's first command: `wardlink demo` shows readings of every device kind, then stops."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.pty, pytest.mark.bumble]


@pytest.mark.timeout(120)
def test_demo_prints_readings_of_every_kind_and_exits_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "15"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    out = result.stdout
    for kind in ("spo2", "blood_pressure", "body_temperature", "body_weight", "glucose"):
        assert f" {kind} " in out, f"no {kind} reading in the demo output"
    assert "-- status: online" in out
    assert "-- status: offline" in out  # a clean stop publishes offline
    assert "readings received" in out
