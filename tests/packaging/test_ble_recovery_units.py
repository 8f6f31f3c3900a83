"""The privileged units of the Bluetooth adapter ladder (rungs 3 and 4, docs/ble.md).

The agent keeps no capabilities; it writes a request file and a .path unit starts a root
oneshot. What can be checked here without a systemd PID 1: the units verify, each path
unit watches exactly the file the agent writes, each service removes it before acting
(else PathExists= would fire again, and a reboot request would survive the reboot) and
does one fixed thing, and the sandboxes score like the agent's own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drivers.ble.adapter import RequestFiles

SYSTEMD = Path(__file__).parents[2] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
# The agent's StateDirectory=wardlink, where its ladder writes requests in production.
AGENT_REQUESTS = RequestFiles(Path("/var/lib/wardlink"))
UNITS = {
    "bluetooth-restart": ("wardlink-bluetooth-restart", "/bin/systemctl restart bluetooth.service"),
    "reboot": ("wardlink-reboot", "/bin/systemctl reboot"),
}


def _directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("action", sorted(UNITS))
def test_path_unit_watches_the_agents_request_and_the_service_clears_it_then_acts(
    action: str,
) -> None:
    name, command = UNITS[action]
    request = str(AGENT_REQUESTS.path(action))  # type: ignore[arg-type]
    path_unit = _directives(SYSTEMD / f"{name}.path")
    assert path_unit["PathExists"] == [request]
    assert path_unit["Unit"] == [f"{name}.service"]
    service = _directives(SYSTEMD / f"{name}.service")
    assert service["Type"] == ["oneshot"]
    assert service["ExecStartPre"] == [f"/bin/rm -f {request}"]
    assert service["ExecStart"] == [command]
    assert service["CapabilityBoundingSet"] == ["CAP_DAC_OVERRIDE"]


def test_the_agent_unit_gains_nothing_for_the_ladder() -> None:
    agent = _directives(SYSTEMD / "wardlink.service")
    assert agent["CapabilityBoundingSet"] == [""]
    assert agent["StateDirectory"] == ["wardlink"]  # where the requests are written
    assert "bluetooth" in agent["SupplementaryGroups"][0]  # Adapter1.Powered via D-Bus policy


@needs_analyze
def test_units_verify() -> None:
    assert ANALYZE is not None
    files = [
        str(SYSTEMD / f"{name}.{kind}")
        for name, _ in UNITS.values()
        for kind in ("path", "service")
    ]
    result = subprocess.run(
        [ANALYZE, "verify", *files], capture_output=True, text=True, check=False
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "wardlink-" in line
    ]
    assert problems == []
    assert result.returncode == 0, result.stderr


@needs_analyze
@pytest.mark.parametrize("name", sorted(name for name, _ in UNITS.values()))
def test_oneshot_sandbox_exposure_is_at_most_2(name: str) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(SYSTEMD / f"{name}.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0
