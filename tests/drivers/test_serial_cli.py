"""The serial simulator CLI in a real subprocess: prints a port, streams, stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from drivers.serial.protocols import PROTOCOLS, Sample

pytestmark = pytest.mark.pty
ROOT = Path(__file__).resolve().parents[2]


def _start(protocol: str, link: Path | None) -> subprocess.Popen[str]:
    code = (
        "import sys; from drivers.emulators.serial_cli import simulate_serial_main; "
        f"sys.exit(simulate_serial_main({protocol!r}, {str(link) if link else None!r}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )


def test_simulator_streams_on_the_printed_link_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    link = tmp_path / "usb-Nonin_9560"
    proc = _start("nonin-ascii", link)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("nonin-ascii oximeter on /dev/pts/")
        assert proc.stdout.readline() == f"stable link {link} -> {first.split()[-1]}\n"
        decoder = PROTOCOLS["nonin-ascii"].make_decoder()
        samples: list[Sample] = []
        with serial.Serial(str(link), 9600, timeout=0.2) as port:
            deadline = time.monotonic() + 5
            while len(samples) < 2 and time.monotonic() < deadline:
                samples += decoder.feed(port.read(64))
        assert len(samples) >= 2
        assert all(94 <= (s.spo2 or 0) <= 99 for s in samples)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert not link.exists()


def test_unknown_protocol_is_a_clear_usage_error() -> None:
    proc = _start("nonin-df9", None)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 64
    assert "unknown serial protocol 'nonin-df9'; choose one of: contec-v5" in err
    assert "Traceback" not in err
