"""Fleet reconnect storm, CI size: 500 hubs, one process, a real Mosquitto that restarts.

Runs bench/fleet_storm.py (which prints the full histogram without ``--json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

pytestmark = pytest.mark.broker

HUBS: Final = 500
BUCKET_S: Final = 0.1
SCRIPT: Final = Path(__file__).resolve().parents[2] / "bench" / "fleet_storm.py"


def test_500_hubs_reconnect_spread_by_full_jitter_and_lose_nothing() -> None:
    argv = ["--hubs", str(HUBS), "--seconds", "8", "--down-s", "1", "--json"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["connected_at_start"] == HUBS
    assert result["reconnected"] == HUBS, "every hub came back after the restart"
    assert result["sent"] > HUBS
    assert result["lost"] == 0, f"{result['lost']} of {result['sent']} messages never arrived"
    # Full jitter: the hubs do not come back in one burst. No 100 ms slot holds more
    # than a quarter of the fleet, and the returns spread over more than half a second.
    times = result["reconnect_s"]
    buckets: dict[int, int] = {}
    for t in times:
        buckets[int(t / BUCKET_S)] = buckets.get(int(t / BUCKET_S), 0) + 1
    assert max(buckets.values()) <= HUBS // 4, sorted(buckets.items())
    assert times[int(0.9 * HUBS)] - times[int(0.1 * HUBS)] > 0.5
