"""Coverage-guided fuzzing (atheris) of every BLE decoder and every serial framer.

Each target gets arbitrary bytes; the only acceptable outcomes are a value or
DecodeError (BLE) and samples (serial framers never raise). Anything else is a crash
and atheris stops with the input that caused it. One target per process:

    pip install atheris
    python -m bench.fuzz --list
    python -m bench.fuzz ble:0x2A35 -atheris_runs=1000000
    python -m bench.fuzz serial:contec-v7 -max_total_time=60
    python -m bench.fuzz --all --seconds 20      # every target in turn, prints a table

The hypothesis property tests in tests/codecs/ run in CI; this is the deeper search
reliability.md T11 asks for (10^6 executions per parser).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from agent.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Callable


def targets() -> dict[str, Callable[[bytes], None]]:
    """Name -> one-input function that raises only on a real bug."""
    from drivers._codecs.registry import DECODERS
    from drivers.serial.protocols import PROTOCOLS

    found: dict[str, Callable[[bytes], None]] = {}
    for uuid16, decode in DECODERS.items():

        def ble(data: bytes, decode: Callable[[bytes], object] = decode) -> None:
            # DecodeError is the one acceptable failure: malformed input, counted and skipped.
            with contextlib.suppress(DecodeError):
                decode(data)

        found[f"ble:0x{uuid16:04X}"] = ble
    for protocol, spec in PROTOCOLS.items():

        def serial(data: bytes, make: Callable[[], object] = spec.make_decoder) -> None:
            decoder = make()
            # Feed in two chunks split by the first byte: framers must not care.
            cut = data[0] % (len(data) + 1) if data else 0
            decoder.feed(data[:cut])  # type: ignore[attr-defined]
            decoder.feed(data[cut:])  # type: ignore[attr-defined]

        found[f"serial:{protocol}"] = serial
    return found


def run_one(name: str, libfuzzer_args: list[str]) -> None:
    """Fuzz one target in this process (atheris owns it until it stops)."""
    import atheris

    with atheris.instrument_imports():  # coverage feedback from our codecs, not just bytes
        target = targets()[name]
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


def run_all(seconds: int) -> int:
    """Every target in its own process for ``seconds``; print executions and verdicts."""
    failures = 0
    print(f"{'target':<22} {'runs':>10} {'result':>8}")
    for name in targets():
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "bench.fuzz", name, f"-max_total_time={seconds}"],
            capture_output=True,
            text=True,
            check=False,
        )
        runs = next(
            (line.split()[1] for line in result.stderr.splitlines() if line.startswith("Done ")),
            "?",
        )
        verdict = "ok" if result.returncode == 0 else "CRASH"
        failures += result.returncode != 0
        print(f"{name:<22} {runs:>10} {verdict:>8}  ({time.monotonic() - started:.0f} s)")
        if result.returncode != 0:
            print(result.stderr[-2000:])
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("target", nargs="?")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--seconds", type=int, default=20)
    args, rest = parser.parse_known_args()
    if args.list:
        print("\n".join(targets()))
        return 0
    if args.all:
        return run_all(args.seconds)
    if args.target is None:
        parser.error("name a target (see --list) or use --all")
    run_one(args.target, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
