"""Time trust: effective-time rules, DST, re-stamping after sync, and the real clock."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from agent.clock import (
    HubTime,
    SystemClock,
    TimeSource,
    _Timex,
    derive_effective_time,
    is_clock_synced,
    is_kernel_clock_synced,
    read_boot_id,
    restamp,
    to_utc,
)

if TYPE_CHECKING:
    from pathlib import Path

BOOT = "boot-a"
HUB_NOW = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


def hub(
    utc: datetime = HUB_NOW, *, mono_s: float = 100.0, synced: bool = True, boot: str = BOOT
) -> HubTime:
    return HubTime(utc=utc, monotonic_ns=int(mono_s * 1e9), boot_id=boot, clock_synced=synced)


def derive(
    received: HubTime,
    device_time: datetime | None,
    *,
    offset_s: float | None = None,
    unset: bool = False,
    zone: str = "UTC",
) -> tuple[datetime, TimeSource, tuple[str, ...]]:
    return derive_effective_time(
        received=received,
        device_time=device_time,
        device_clock_offset_s=offset_s,
        device_clock_unset=unset,
        timezone_name=zone,
    )


def wall(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_no_device_time_uses_hub_receipt() -> None:
    assert derive(hub(), None) == (HUB_NOW, TimeSource.HUB_RECEIPT, ())


def test_device_clock_two_hours_fast_is_corrected_by_measured_offset() -> None:
    # Cuff clock reads 11:00 when the hub reads 09:00: offset +7200 s, measured at connect.
    effective, source, flags = derive(hub(), wall("2026-11-27T10:55:00"), offset_s=7200.0)
    assert (effective, source, flags) == (
        datetime(2026, 11, 27, 8, 55, tzinfo=UTC),
        TimeSource.DEVICE_CORRECTED,
        (),
    )


def test_device_clock_two_hours_fast_without_offset_is_flagged_future() -> None:
    effective, source, flags = derive(hub(), wall("2026-11-27T11:00:00"))
    assert (effective, source, flags) == (HUB_NOW, TimeSource.HUB_RECEIPT, ("device_time_future",))


def test_corrected_time_still_in_the_future_is_not_trusted() -> None:
    # Offset measured at connect (+60 s) but the device clock jumped since: 3 h ahead.
    effective, source, flags = derive(hub(), wall("2026-11-27T12:01:00"), offset_s=60.0)
    assert (effective, source, flags) == (HUB_NOW, TimeSource.HUB_RECEIPT, ("device_time_future",))


@pytest.mark.parametrize("unset_bit", [False, True])
def test_device_clock_unset_year_2000_falls_back_to_receipt(unset_bit: bool) -> None:
    device_time = wall("2000-01-01T00:05:00") if not unset_bit else wall("2026-11-27T08:59:00")
    effective, source, flags = derive(hub(), device_time, unset=unset_bit, offset_s=3.0)
    assert (effective, source) == (HUB_NOW, TimeSource.HUB_RECEIPT)
    assert flags == ("device_clock_unset",)


def test_dst_fall_back_ambiguous_local_time_is_flagged() -> None:
    # Europe/London 2026-10-25 01:30 happens twice (BST then GMT); we take the first.
    utc, flags = to_utc(wall("2026-10-25T01:30:00"), "Europe/London")
    assert utc == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert flags == ("dst_ambiguous",)
    received = hub(datetime(2026, 10, 25, 2, 0, tzinfo=UTC))
    effective, source, derived_flags = derive(
        received, wall("2026-10-25T01:30:00"), zone="Europe/London"
    )
    assert (effective, source, derived_flags) == (utc, TimeSource.DEVICE, ("dst_ambiguous",))


def test_dst_spring_forward_nonexistent_local_time_is_flagged() -> None:
    _, flags = to_utc(wall("2026-03-29T01:30:00"), "Europe/London")
    assert flags == ("dst_nonexistent",)


def test_unambiguous_local_time_and_aware_times_are_not_flagged() -> None:
    assert to_utc(wall("2026-07-01T12:00:00"), "Europe/London") == (
        datetime(2026, 7, 1, 11, 0, tzinfo=UTC),
        (),
    )
    aware = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert to_utc(aware, "Europe/London") == (aware, ())


def test_unsynced_boot_then_sync_restamps_receipt_time() -> None:
    # Captured at monotonic 20 s while the hub believed it was 1970; synced later.
    captured = hub(datetime(1970, 1, 1, 0, 0, 20, tzinfo=UTC), mono_s=20.0, synced=False)
    effective, source, flags = derive(captured, None)
    assert flags == ("hub_clock_unsynced",)
    now = hub(HUB_NOW, mono_s=320.0)
    published = restamp(
        received=captured,
        effective_time=effective,
        time_source=source,
        time_flags=flags,
        now=now,
    )
    assert published.effective == HUB_NOW - timedelta(seconds=300)
    assert published.receipt == published.effective
    assert published.time_source is TimeSource.HUB_RECEIPT
    assert published.flags == ("hub_clock_unsynced", "restamped")


def test_restamp_shifts_device_corrected_but_never_device_time() -> None:
    captured = hub(datetime(1970, 1, 1, 0, 1, tzinfo=UTC), mono_s=60.0, synced=False)
    now = hub(HUB_NOW, mono_s=160.0)
    true_receipt = HUB_NOW - timedelta(seconds=100)
    # Offset measured against the 1970 hub clock: device - hub(1970).
    device = wall("2026-11-27T08:58:00")
    offset = (device.replace(tzinfo=UTC) - captured.utc).total_seconds()
    effective, source, flags = derive(captured, device, offset_s=offset)
    assert effective == captured.utc  # on the wrong (1970) timeline until re-stamped
    corrected = restamp(
        received=captured, effective_time=effective, time_source=source, time_flags=flags, now=now
    )
    assert corrected.effective == true_receipt
    effective, source, flags = derive(captured, device)
    kept = restamp(
        received=captured, effective_time=effective, time_source=source, time_flags=flags, now=now
    )
    assert (kept.effective, kept.time_source) == (device.replace(tzinfo=UTC), TimeSource.DEVICE)
    assert kept.receipt == true_receipt
    assert kept.flags == ("hub_clock_unsynced", "restamped")


def test_restamp_judges_a_future_device_time_once_the_clock_is_known() -> None:
    captured = hub(datetime(1970, 1, 1, tzinfo=UTC), mono_s=10.0, synced=False)
    device = wall("2026-11-27T12:00:00")  # 3 h ahead of the true time
    effective, source, flags = derive(captured, device)
    assert source is TimeSource.DEVICE  # could not be judged while unsynced
    now = hub(HUB_NOW, mono_s=10.0)
    published = restamp(
        received=captured, effective_time=effective, time_source=source, time_flags=flags, now=now
    )
    assert (published.effective, published.time_source) == (HUB_NOW, TimeSource.HUB_RECEIPT)
    assert published.flags[-1] == "device_time_future"


def test_other_boot_cannot_be_restamped_and_says_so() -> None:
    captured = hub(datetime(1970, 1, 1, tzinfo=UTC), mono_s=20.0, synced=False, boot="boot-a")
    now = hub(HUB_NOW, mono_s=5.0, boot="boot-b")
    published = restamp(
        received=captured,
        effective_time=captured.utc,
        time_source=TimeSource.HUB_RECEIPT,
        time_flags=("hub_clock_unsynced",),
        now=now,
    )
    assert published.effective == captured.utc
    assert published.flags == ("hub_clock_unsynced", "hub_clock_unsynced_other_boot")


@pytest.mark.parametrize(
    ("received", "now"),
    [
        (hub(synced=True), hub(HUB_NOW + timedelta(hours=1), mono_s=3700.0)),
        (hub(synced=False), hub(HUB_NOW, mono_s=200.0, synced=False)),
    ],
)
def test_restamp_leaves_synced_or_still_unsynced_times_alone(
    received: HubTime, now: HubTime
) -> None:
    published = restamp(
        received=received,
        effective_time=received.utc,
        time_source=TimeSource.HUB_RECEIPT,
        time_flags=(),
        now=now,
    )
    assert (published.effective, published.receipt, published.flags) == (
        received.utc,
        received.utc,
        (),
    )


def test_systemd_sync_flag_file_counts_as_synced(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    assert is_clock_synced(flag) is is_kernel_clock_synced()
    flag.touch()
    assert is_clock_synced(flag) is True
    assert SystemClock(sync_flag_path=flag).now().clock_synced is True


def test_system_clock_notices_sync_that_happens_while_running(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    clock = SystemClock(sync_check_s=0.0, sync_flag_path=flag)
    assert clock.now().clock_synced is is_kernel_clock_synced()  # capture never waits
    flag.touch()  # what systemd-timesyncd does on its first sync
    assert clock.now().clock_synced is True


def test_system_clock_reports_this_boot_and_advancing_monotonic_time() -> None:
    clock = SystemClock()
    first, second = clock.now(), clock.now()
    assert first.boot_id == read_boot_id() != "unknown"
    assert second.monotonic_ns >= first.monotonic_ns
    assert first.utc.tzinfo is UTC


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_timex_layout_matches_the_c_header(tmp_path: Path) -> None:
    source = tmp_path / "timex.c"
    source.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <sys/timex.h>\n"
        'int main(void){printf("%zu %zu\\n", offsetof(struct timex, status),'
        " sizeof(struct timex));return 0;}\n",
        encoding="ascii",
    )
    binary = tmp_path / "timex"
    subprocess.run(["cc", str(source), "-o", str(binary)], check=True, timeout=60)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True, timeout=10)
    status_offset, size = (int(part) for part in output.stdout.split())
    assert _Timex.status.offset == status_offset
    assert ctypes.sizeof(_Timex) >= size
