"""No patient identifier and no reading value in any log line at INFO and above.

The real agent process runs at level INFO with a distinctive patient id and a pty
oximeter, through faults that make it log (the broker stopped and restarted, the
oximeter unplugged and replugged, line noise). The values it actually captured are taken
from what the backend received; then every log line that is not DEBUG is searched for
the patient id and for those values in the forms a careless log call would print them
("spo2 97", "'spo2', 97", "spo2=97.0", "97 %", "64 /min", "Quantity(..."). Bare numbers
are not searched: "97" turns up by chance in times, ports and pids.

The demo (``python -m agent demo``) prints values to stdout by design; its stderr log
lines get the same check.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.harness import committed_rows, decode_readings
from tests.emulators.subscriber import Subscriber
from tests.faults.agent_rig import oximeter, oximeter_agent, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = [pytest.mark.broker, pytest.mark.pty, pytest.mark.timeout(120)]

PATIENT_ID = "pt-ZETA-93817"
DEMO_PATIENT_ID = "demo-patient-0001"
UNITS = {"%": r"\s?%", "/min": r"\s?(?:/min|bpm)"}
DEMO_VALUE = re.compile(r"\b([a-z_]+) (-?\d+(?:\.\d+)?) (%|/min|\S+)")


def value_patterns(readings: Iterable[dict[str, Any]]) -> list[re.Pattern[str]]:
    """Patterns for every (quantity, value) pair in ``readings``, as a log might print them."""
    pairs: set[tuple[str, float, str]] = set()
    for reading in readings:
        for name, value in reading["values"].items():
            if value is not None:
                pairs.add((name, float(value), reading["units"].get(name, "")))
    patterns = [re.compile(r"Quantity\("), re.compile(r"\bvalues?\W{1,4}\d")]
    for name, value, unit in sorted(pairs):
        number = _number(value)
        patterns.append(re.compile(rf"\b{name}\W{{1,4}}{number}\b"))
        if unit in UNITS:
            patterns.append(re.compile(rf"(?<![\d.:]){number}{UNITS[unit]}"))
    return patterns


def _number(value: float) -> str:
    """97.0 matches "97", "97.0" and "97.00"; 1.83 matches "1.83"."""
    if value == int(value):
        return rf"{int(value)}(?:\.0+)?"
    return re.escape(f"{value:g}")


def leaks(log_text: str, patient_id: str, patterns: list[re.Pattern[str]]) -> list[str]:
    """Log lines at INFO and above (anything not DEBUG) showing the patient or a value."""
    found = []
    for line in log_text.splitlines():
        if line.startswith("DEBUG "):
            continue
        if patient_id in line or any(p.search(line) for p in patterns):
            found.append(line)
    return found


def demo_readings(stdout: str) -> list[dict[str, Any]]:
    """The readings the demo's backend printed, as {values, units} dicts."""
    readings = []
    for line in stdout.splitlines():
        if " seq " not in line:
            continue
        values: dict[str, Any] = {}
        units: dict[str, str] = {}
        for name, value, unit in DEMO_VALUE.findall(line.split(" seq ", 1)[1]):
            values[name], units[name] = float(value), unit
        readings.append({"values": values, "units": units})
    return readings


def test_the_leak_check_finds_values_in_the_capture_debug_line() -> None:
    # The check itself can fail: the agent's own DEBUG capture line, had it been INFO.
    reading = {"values": {"spo2": 97.0, "pulse_rate": 64.0}, "units": {"spo2": "%"}}
    line = (
        "INFO agent.app: captured oxi Kind.SPO2 (Quantity(name='spo2', value=97.0, "
        "unit='%'), Quantity(name='pulse_rate', value=64.0, unit='/min'))"
    )
    patterns = value_patterns([reading])
    assert leaks(line, PATIENT_ID, patterns) == [line]
    assert leaks("INFO x: spo2 97 %", PATIENT_ID, patterns)
    assert leaks(f"WARNING x: bound to {PATIENT_ID}", PATIENT_ID, patterns)
    assert leaks("DEBUG x: spo2 97 %", PATIENT_ID, patterns) == []
    # Numbers by chance are not leaks: a port, a pid, a time.
    assert (
        leaks("INFO x: connected to 127.0.0.1:49764 (pid 970) at 04:17:59.97", PATIENT_ID, patterns)
        == []
    )


async def test_agent_logs_at_info_hold_no_patient_id_and_no_value_through_faults(
    tmp_path: Path, private_broker: MosquittoBroker, topic_prefix: str
) -> None:
    # The backend keeps a persistent session on a broker that saves it across the restart
    # below: a subscriber made after the restart could miss what the agent publishes
    # first when the agent reconnects sooner (it did once on a loaded machine).
    private_broker.persistence = True
    private_broker.start()
    backend = Subscriber(
        private_broker.host, private_broker.port, [f"{topic_prefix}/#"], persistent=True
    )

    def received() -> list[dict[str, Any]]:
        return decode_readings(backend.messages("/readings"))

    agents = []  # so a failed wait below still stops the agent it started
    try:
        async with oximeter(tmp_path / "nonin.tty") as nonin:
            agent = oximeter_agent(
                tmp_path,
                port=private_broker.port,
                prefix=topic_prefix,
                device=nonin,
                patient_id=PATIENT_ID,
                level="INFO",
            )
            agents.append(agent)
            await agent.start()
            await wait_for(lambda: len(received()) >= 10, 30, "first readings")
            private_broker.stop()  # the agent logs the lost connection and failed connects
            await asyncio.sleep(1.5)
            nonin.inject_garbage(64)
            nonin.corrupt_next(3)
            await asyncio.sleep(0.5)
            nonin.unplug()  # ... and the lost port
            await asyncio.sleep(1.0)
            nonin.plug()
            private_broker.start()
            db = tmp_path / "outbox.db"
            await wait_for(
                lambda: set(committed_rows(db)) <= {r["reading_id"] for r in received()},
                30,
                "readings delivered after the faults",
            )
            assert await agent.terminate() == 0
        readings = received()
        assert readings[0]["patient_id"] == PATIENT_ID  # the id really is in the data
        log_text = agent.log_text()
        assert "broker connection lost" in log_text  # the faults really made it log
        assert "waiting for the port to return" in log_text
        assert leaks(log_text, PATIENT_ID, value_patterns(readings)) == []
    finally:
        for started in agents:
            await started.kill()  # a no-op once it has exited
        backend.close()


def test_demo_log_lines_hold_no_patient_id_and_no_value() -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "6"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    readings = demo_readings(demo.stdout)
    assert readings, demo.stdout[-2000:]  # values were printed to stdout, as designed
    assert any(r["values"] for r in readings)
    assert leaks(demo.stderr, DEMO_PATIENT_ID, value_patterns(readings)) == []
