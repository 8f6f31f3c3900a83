"""CPU cost of the adverts a BLE driver ignores (a busy street: phones, headphones, cars).

Every advertisement the hub's scanner hears goes to every BLE driver; each driver counts
the ones that are not its bound device (``ignored_adverts``) and drops them. This feeds
the real ``BleDriver._on_advert`` with a real ``Health`` device reporter, from a pool of
other addresses, and prints CPU-µs per advert (process time, so other load on this
shared machine matters less than for wall time), best of ``--repeat`` runs.

    .venv/bin/python -m bench.ble_adverts [--adverts 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from agent.clock import SystemClock
from agent.health import Health
from agent.readings import PatientBinding
from drivers._ble import Advertisement, uuid128
from drivers.base import CaptureResult, DriverContext
from drivers.ble.driver import BleDriver
from drivers.ble.settings import BleBloodPressureSettings


class _NoSink:
    async def capture(self, readings: object) -> CaptureResult:
        del readings
        raise AssertionError("no reading expected from ignored adverts")


def _unused() -> object:
    raise AssertionError("no link or scanner is made by _on_advert")


def main() -> None:
    """Print CPU-µs per ignored advert."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adverts", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    health = Health(hub_id="bench", clock=SystemClock())
    ctx = DriverContext(
        sink=_NoSink(),
        clock=SystemClock(),
        reporter=health.device("bp-cuff"),
        patient=PatientBinding("bench", 1),
        timezone_name="UTC",
    )
    settings = BleBloodPressureSettings(id="bp-cuff", address="A4:C1:38:00:00:01")
    driver = BleDriver(
        settings,
        ctx,
        link_factory=_unused,  # type: ignore[arg-type]
        scanner_factory=_unused,  # type: ignore[arg-type]
        state_dir=Path("/nonexistent"),
    )
    street = [
        Advertisement(f"11:22:33:44:{i // 256:02X}:{i % 256:02X}", None, -80, (uuid128(0xFE9F),))
        for i in range(500)
    ]
    best = float("inf")
    for _ in range(args.repeat):
        start = time.process_time()
        for i in range(args.adverts):
            driver._on_advert(street[i % len(street)])  # noqa: SLF001 - the callback under test
        best = min(best, time.process_time() - start)
    counted = health.devices["bp-cuff"].counters["ignored_adverts"]
    if counted != args.adverts * args.repeat:
        raise SystemExit(f"counted {counted} ignored adverts, fed {args.adverts * args.repeat}")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {python}")
    print(f"ignored adverts: {args.adverts} per run, best of {args.repeat}")
    print(f"CPU per ignored advert: {best / args.adverts * 1e6:.3f} µs")


if __name__ == "__main__":
    main()
