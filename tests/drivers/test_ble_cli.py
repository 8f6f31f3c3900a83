"""`simulate_ble_main`: an emulated device and the real driver in one process."""

from __future__ import annotations

import pytest

from drivers.emulators.ble_cli import PROFILE_NAMES, demo_settings, simulate_ble_main

pytestmark = pytest.mark.bumble


def test_simulated_cuff_readings_reach_the_driver(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate_ble_main("blood-pressure", None, duration_s=2.0) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2  # two stored records, each once
    assert all("blood_pressure: systolic=" in line for line in out)


def test_unknown_profile_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate_ble_main("toaster", None) == 64
    assert "choose one of" in capsys.readouterr().err


def test_every_profile_has_demo_settings() -> None:
    drivers = {getattr(demo_settings(p), "driver", None) for p in PROFILE_NAMES}
    assert drivers == {
        "ble-blood-pressure",
        "ble-thermometer",
        "ble-weight-scale",
        "ble-glucose",
        "ble-pulse-oximeter",
        "ble-heart-rate",
    }
