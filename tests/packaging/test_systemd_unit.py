"""The systemd unit: sandbox exposure <= 2.0, verifies, and keeps the lifecycle directives."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "systemd" / "wardlink.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_lifecycle_directives_a_clinical_agent_needs() -> None:
    d = _directives()
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["always"]
    assert d["StartLimitIntervalSec"] == ["0"]  # never a start-limit dead end
    assert d["RestartPreventExitStatus"] == ["78"]  # config errors must not restart-loop
    assert int(d["WatchdogSec"][0]) <= 60
    assert d["StateDirectory"] == ["wardlink"]
    assert d["ConfigurationDirectory"] == ["wardlink"]
    assert "dialout" in d["SupplementaryGroups"][0]
    assert "PrivateDevices" not in d  # would hide the serial adapters


@needs_analyze
def test_sandbox_exposure_is_at_most_2() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    # The unit names the installed path; point it at a real executable so verify checks the rest.
    assert ANALYZE is not None
    true_bin = shutil.which("true")
    assert true_bin is not None
    unit = tmp_path / "wardlink.service"
    unit.write_text(UNIT.read_text().replace("/opt/wardlink/bin/wardlink", true_bin))
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # Unrelated host units that verify also loads are not ours to judge.
        if "wardlink.service" in line
    ]
    assert problems == []
    assert result.returncode == 0, result.stderr
