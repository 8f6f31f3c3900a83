"""Crash soak: kill -9 the real agent hundreds of times, at named crash points and at random.

Each trial starts ``python -m agent run -c FILE`` (a pty Nonin DF8 oximeter, a private
Mosquitto, a recording backend subscriber). A named trial sets ``WARDLINK_CRASH_AT`` (and a
random ``WARDLINK_CRASH_AFTER`` pass) so the agent SIGKILLs itself there; a random trial is
killed from outside after a random delay. After every trial the outbox must pass
``PRAGMA integrity_check`` and its highest seq must not go down. After the last trial one
clean run drains the outbox; every committed reading must then be on the wire.

Prints: trials (per point, and how many really reached their point), readings committed,
delivered, lost (must be 0), duplicates on the wire, id/seq conflicts, integrity failures,
seq regressions, wall time. Exit status 1 if anything was lost or broken.

Usage: python bench/crash_soak.py [--trials 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from agent.crashpoints import CRASH_POINTS
from agent.localbroker import MosquittoBroker
from tests.e2e.harness import (
    AgentProcess,
    committed_rows,
    decode_readings,
    integrity,
    serial_device,
)
from tests.emulators.subscriber import Subscriber
from tests.faults.agent_rig import (
    TrialOutcome,
    crash_trial,
    fault_config,
    oximeter,
    pending_ids,
    wait_for,
    wire_tally,
)

PREFIX = "crash-soak"
DRAIN_TIMEOUT_S = 180.0
PROBLEM_PREFIXES = ("ERROR", "CRITICAL", "Traceback")


def plan_trials(trials: int, rng: random.Random) -> list[str | None]:
    """A shuffled plan: a quarter random kills, the rest spread over the named points."""
    kinds: list[str | None] = [*CRASH_POINTS, None]
    plan = [kinds[i % len(kinds)] for i in range(trials)]
    rng.shuffle(plan)
    return plan


async def soak(workdir: Path, trials: int, seed: int) -> int:
    """Run the trials and the final drain; print the figures; 0 when nothing was lost."""
    rng = random.Random(seed)
    broker = MosquittoBroker(workdir=workdir / "mosquitto")
    broker.start()
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/#"])
    started = time.monotonic()
    outcomes: list[TrialOutcome] = []
    try:
        async with oximeter(workdir / "nonin.tty", speed=40.0) as nonin:
            config = fault_config(
                workdir,
                port=broker.port,
                prefix=PREFIX,
                devices_yaml=serial_device("oxi", "nonin-df8", nonin.port, interval_s=0.05),
            )
            agent = AgentProcess(config=config, log_path=workdir / "agent.log")
            for number, point in enumerate(plan_trials(trials, rng), 1):
                outcome = await crash_trial(
                    agent, point, after=rng.randint(1, 8), delay_s=rng.uniform(0.8, 3.0)
                )
                outcomes.append(outcome)
                if number % 25 == 0:
                    print(f"  {number} trials, {time.monotonic() - started:.0f} s", flush=True)
            await agent.start()
            committed = committed_rows(workdir / "outbox.db")
            try:
                await wait_for(
                    lambda: (
                        wire_tally(decode_readings(sub.messages("/readings")), committed).lost == 0
                    ),
                    DRAIN_TIMEOUT_S,
                    "every committed reading delivered",
                )
            except TimeoutError as exc:
                print(f"drain: {exc}")
            await agent.terminate()
        return report(workdir, sub, outcomes, time.monotonic() - started)
    finally:
        sub.close()
        broker.kill()


def report(workdir: Path, sub: Subscriber, outcomes: list[TrialOutcome], wall_s: float) -> int:
    """Print the figures; return the exit status."""
    db = workdir / "outbox.db"
    tally = wire_tally(
        decode_readings(sub.messages("/readings")), committed_rows(db), pending_ids(db)
    )
    per_point = collections.Counter(o.point for o in outcomes)
    reached = collections.Counter(o.point for o in outcomes if o.reached)
    bad_integrity = sum(o.integrity != "ok" for o in outcomes) + (integrity(db) != "ok")
    regressions = sum(b.max_seq < a.max_seq for a, b in itertools.pairwise(outcomes))
    print(f"trials                {len(outcomes)}")
    for point in [*CRASH_POINTS, "random"]:
        print(f"  {point:<28} {per_point[point]:>4}  (fired: {reached[point]})")
    print(f"readings committed    {tally.committed}")
    print(f"delivered             {tally.delivered}")
    print(f"lost                  {tally.lost}")
    print(f"owed (still pending)  {tally.owed}")
    print(f"duplicates on wire    {tally.duplicates}  (of {tally.copies} copies)")
    print(f"id/seq conflicts      {tally.id_seq_conflicts}")
    print(f"uncommitted on wire   {tally.uncommitted_on_wire}")
    print(f"integrity failures    {bad_integrity}")
    print(f"seq regressions       {regressions}")
    print(f"wall time             {wall_s:.0f} s")
    exits = collections.Counter(o.returncode for o in outcomes)
    print(f"exit codes            {dict(exits)}  (-9: SIGKILL)")
    log_text = (workdir / "agent.log").read_text(errors="replace")
    problems = [line for line in log_text.splitlines() if line.startswith(PROBLEM_PREFIXES)]
    print(f"ERROR/CRITICAL/Traceback lines in the agent log: {len(problems)}")
    for line in sorted(set(problems))[:10]:
        print(f"  {line[:200]}")
    return 0 if tally.sound and not bad_integrity and not regressions else 1


def main() -> int:
    """Parse arguments and run the soak in a throw-away directory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crash-soak-") as tmp:
        return asyncio.run(soak(Path(tmp), args.trials, args.seed))


if __name__ == "__main__":
    sys.exit(main())
