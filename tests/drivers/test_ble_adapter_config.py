"""The `bluetooth:` config section: safe defaults, and a ladder out of order is refused by line."""

from __future__ import annotations

import pytest

from agent.config import BluetoothConfig
from agent.configload import load_config_text
from agent.errors import ConfigError

BASE = """\
hub:
  id: hub-0042
patient:
  id: patient-7f3a
  binding_version: 1
mqtt:
  host: 127.0.0.1
  port: 1883
  insecure_plaintext: true
"""


def test_defaults_power_cycle_then_restart_bluetooth_and_never_reboot() -> None:
    config = load_config_text(BASE, check_files=False)
    assert config.bluetooth == BluetoothConfig()
    assert config.bluetooth.adapter == "hci0"
    assert config.bluetooth.power_cycle_after_s < config.bluetooth.restart_bluetooth_after_s
    assert config.bluetooth.reboot_after_s is None


def test_a_ladder_out_of_order_is_refused_with_the_line_of_each_key() -> None:
    text = BASE + (
        "bluetooth:\n"
        "  power_cycle_after_s: 300\n"
        "  restart_bluetooth_after_s: 200\n"
        "  reboot_after_s: 1800\n"
        "  recovered_after_s: 10\n"
        "  probe_interval_s: 60\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, filename="hub.yaml", check_files=False)
    assert caught.value.problems == [
        (
            "hub.yaml:12 bluetooth.restart_bluetooth_after_s: 200 must be at least "
            "power_cycle_after_s + probe_interval_s (360)"
        ),
        "hub.yaml:14 bluetooth.recovered_after_s: 10 is shorter than probe_interval_s (60)",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("adapter: wlan0", "bluetooth.adapter: "),
        ("reboot_after_s: 60", "bluetooth.reboot_after_s: "),
        ("max_reboots: 10", "bluetooth.max_reboots: "),
        ("advert_silence_s: 10", "bluetooth.advert_silence_s: "),
        ("power_cycle_after: 60", "bluetooth.power_cycle_after: unknown key"),
    ],
)
def test_unsafe_values_are_refused(line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(BASE + f"bluetooth:\n  {line}\n", filename="hub.yaml", check_files=False)
    assert caught.value.problems[0].startswith(f"hub.yaml:11 {expected}")


def test_a_reboot_rung_must_leave_a_probe_after_the_bluetooth_restart() -> None:
    text = BASE + "bluetooth:\n  restart_bluetooth_after_s: 1800\n  reboot_after_s: 1800\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, filename="hub.yaml", check_files=False)
    assert caught.value.problems == [
        (
            "hub.yaml:12 bluetooth.reboot_after_s: 1800 must be at least "
            "restart_bluetooth_after_s + probe_interval_s (1830)"
        )
    ]
