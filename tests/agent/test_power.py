"""Under-voltage and throttling flags (reliability.md T25): every documented bit reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.power import PowerFlags, decode_throttled, read_power_flags


@pytest.mark.parametrize(
    ("value", "now", "occurred"),
    [
        (0x0, (), ()),
        (0x1, ("under_voltage",), ()),
        (0x50000, (), ("under_voltage", "throttled")),
        (0x50005, ("under_voltage", "throttled"), ("under_voltage", "throttled")),
        (
            0xF000F,
            ("under_voltage", "arm_frequency_capped", "throttled", "soft_temperature_limit"),
            ("under_voltage", "arm_frequency_capped", "throttled", "soft_temperature_limit"),
        ),
        (0xFFF0, (), ()),  # undocumented bits are not turned into names
    ],
)
def test_every_documented_bit_is_reported(
    value: int, now: tuple[str, ...], occurred: tuple[str, ...]
) -> None:
    assert decode_throttled(value) == PowerFlags(now, occurred, value)


def test_reads_the_firmware_file_in_either_format(tmp_path: Path) -> None:
    sysfs = tmp_path / "get_throttled"
    sysfs.write_text("50005\n")
    assert read_power_flags(sysfs) == decode_throttled(0x50005)
    sysfs.write_text("throttled=0x10000\n")
    assert read_power_flags(sysfs) == decode_throttled(0x10000)


def test_no_firmware_file_or_garbage_means_unknown(tmp_path: Path) -> None:
    assert read_power_flags(tmp_path / "absent") is None
    garbage = tmp_path / "get_throttled"
    garbage.write_text("not hex")
    assert read_power_flags(garbage) is None


async def test_health_reports_the_flags_and_raises_an_alarm_once_they_occurred(
    tmp_path: Path,
) -> None:
    from agent.outbox import Outbox
    from tests.agent.pubharness import build, make_config

    config = make_config("127.0.0.1", 1, "power", tmp_path)
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    firmware = tmp_path / "get_throttled"
    publisher.status.power_path = firmware
    try:
        firmware.write_text("0\n")
        document = await publisher.status.health_document()
        assert document["power"] == {"now": [], "since_boot": [], "raw": "0x0"}
        assert "power_supply" not in health.alarms
        firmware.write_text("50000\n")  # under-voltage and throttling happened since boot
        document = await publisher.status.health_document()
        assert document["power"]["since_boot"] == ["under_voltage", "throttled"]
        assert "power_supply" in health.alarms
    finally:
        await outbox.close()
