"""How long rejecting a bad config takes (reliability.md T12: bomb rejected < 1 s).

Runs every case of tests/agent/config_cases plus generated worst cases (10 MB file, a
file of aliases, a flat mapping and nesting, each at the size cap) through
load_config, as check-config does, and prints the time of each and the worst. Figures
depend on the machine; on a shared 2-core box expect noise of tens of per cent.

    python bench/config_reject.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import configload  # noqa: E402
from agent.errors import ConfigError  # noqa: E402
from tests.agent.config_cases.fake_drivers import FAKE_DRIVERS  # noqa: E402
from tests.agent.config_cases.runner import case_paths, prepare  # noqa: E402

REPEATS = 5
CAP = configload.MAX_CONFIG_BYTES


def _generated(workdir: Path) -> dict[str, Path]:
    files = {
        "10 MB file": b"# padding\n" * (1024 * 1024),
        "alias flood (cap)": b"a: &a [x]\nb: [" + b"*a, " * ((CAP - 40) // 4) + b"*a]\n",
        "flat mapping (cap)": b"".join(b"k%06d: 1\n" % i for i in range((CAP - 100) // 11)),
        "deep nesting (cap)": b"x: " + b"[" * ((CAP - 10) // 2) + b"]" * ((CAP - 10) // 2),
    }
    paths = {}
    for name, data in files.items():
        path = workdir / (name.split(" ")[0] + ".yaml")
        path.write_bytes(data)
        paths[name] = path
    return paths


def _time_reject(path: Path) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        try:
            configload.load_config(path)
        except ConfigError:
            pass  # rejection is the expected outcome being timed
        else:
            raise SystemExit(f"{path} was accepted; the corpus must be rejected")
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Time every rejection and print the figures."""
    configload.DRIVERS = FAKE_DRIVERS  # type: ignore[attr-defined]  # the corpus names test drivers
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        for case in case_paths():
            timings[case.stem] = _time_reject(prepare(case, workdir))
        for name, path in _generated(workdir).items():
            timings[name] = _time_reject(path)
    for name, seconds in sorted(timings.items(), key=lambda item: -item[1])[:10]:
        print(f"{seconds * 1000:9.2f} ms  {name}")
    values = list(timings.values())
    print(f"cases: {len(values)}  (best of {REPEATS} runs each; parser: {configload.YAML_PARSER})")
    print(f"median: {statistics.median(values) * 1000:.2f} ms")
    print(f"worst:  {max(values) * 1000:.2f} ms  (target: < 1000 ms)")


if __name__ == "__main__":
    main()
