"""A week-long broker outage, time-compressed, on the real agent: capture, then drain.

The agent is ``agent.app.Runtime`` in this process with the generator driver from
tests/faults/agentrun.py (our own driver seam) and a compressed hub clock: each reading
advances the clock by ``--tick-s`` (1 s = a 1 Hz oximeter), so 604,800 readings are a
week. The broker (a private Mosquitto, loopback only) is down for the whole capture,
then started; a backend subscriber counts what arrives.

Prints, during the outage: RSS, outbox pending and the health document's
oldest_pending_age_s at every sample; then capture rate, drain rate, seq order and loss.

    python bench/outage_soak.py                      # a week: 604,800 readings
    python bench/outage_soak.py --readings 100000    # quicker

Figures are for THIS machine (2 shared cores, noisy); see docs/faults-network.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # agent.*, tests.* as a script

from agent.localbroker import MosquittoBroker
from drivers import DRIVERS, DriverSpec
from tests.e2e.harness import decode_readings
from tests.emulators.subscriber import Subscriber
from tests.faults.agentrun import (
    CompressedClock,
    RunningAgent,
    make_config,
    no_pending,
    rss_bytes,
    running_agent,
    wait_for,
)

MIB = 2**20


async def capture_phase(agent: RunningAgent, args: argparse.Namespace) -> float:
    """Capture ``--readings`` while the broker is down; print samples; return seconds."""
    step = max(1, args.readings // args.samples)
    started = time.monotonic()
    done = 0
    print("outage: readings  pending  oldest_age_h  rss_MiB  capture/s")
    while done < args.readings:
        count = min(step, args.readings - done)
        t0 = time.monotonic()
        await agent.gen.produce(count, per_call=args.per_call, tick_s=args.tick_s)
        rate = count / (time.monotonic() - t0)
        done += count
        document = await agent.runtime.health_now()
        outbox = document["outbox"]
        age_h = (outbox["oldest_pending_age_s"] or 0) / 3600
        print(
            f"        {done:>8}  {outbox['pending']:>7}  {age_h:>12.1f}  "
            f"{rss_bytes() / MIB:>7.1f}  {rate:>9.0f}"
        )
    return time.monotonic() - started


async def drain_phase(agent: RunningAgent, broker: MosquittoBroker, prefix: str) -> None:
    """Start the broker, wait until every reading is PUBACKed and received; print."""
    broker.start()
    sub = Subscriber(broker.host, broker.port, [f"{prefix}/#"])
    started = time.monotonic()
    try:
        outbox = agent.runtime.agent.outbox
        await wait_for(lambda: no_pending(outbox), timeout_s=3600, poll_s=1.0)
        drain_s = time.monotonic() - started
        drained_rss = rss_bytes()
        await asyncio.sleep(1.0)
        received = decode_readings(sub.messages("/readings"))
    finally:
        sub.close()
    seqs = [int(r["seq"]) for r in received]
    first_seen = list(dict.fromkeys(seqs))
    stats = await outbox.stats()
    print(
        f"drain: {len(first_seen)} readings in {drain_s:.1f} s -> {len(first_seen) / drain_s:.0f}/s"
    )
    print(
        f"       seq order kept: {first_seen == sorted(first_seen)}; duplicates on the wire "
        f"{len(seqs) - len(first_seen)}; sent {stats.sent}, pending {stats.pending}, "
        f"rejected {stats.rejected}"
    )
    print(
        f"       RSS when drained {drained_rss / MIB:.1f} MiB (includes the in-process "
        "backend subscriber, which keeps every message it received)"
    )


async def soak(args: argparse.Namespace) -> None:
    """One outage: capture with the broker down, then drain."""
    DRIVERS["fault-gen"] = DriverSpec(
        "tests.faults.agentrun:GenSettings", "tests.faults.agentrun:build"
    )
    with tempfile.TemporaryDirectory(prefix="outage-soak-") as workdir:
        work = Path(workdir)
        broker = MosquittoBroker(workdir=work / "mosquitto")
        prefix = "soak"
        config = make_config(work, broker.port, prefix, batch_size=args.batch_size)
        clock = CompressedClock(datetime(2026, 11, 1, tzinfo=UTC))
        print(
            f"start: RSS {rss_bytes() / MIB:.1f} MiB; {args.readings} readings at {args.tick_s} s"
        )
        try:
            async with running_agent(config, clock=clock) as agent:
                capture_s = await capture_phase(agent, args)
                print(
                    f"capture: {args.readings} in {capture_s:.1f} s -> "
                    f"{args.readings / capture_s:.0f} readings/s with the broker down"
                )
                await drain_phase(agent, broker, prefix)
        finally:
            broker.kill()


def main() -> None:
    """Parse arguments and run."""
    # The agent warns at every failed connect during the outage; show errors only.
    logging.basicConfig(stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=604_800, help="a week at 1 Hz")
    parser.add_argument("--tick-s", type=float, default=1.0, help="hub time per reading")
    parser.add_argument("--per-call", type=int, default=100, help="readings per capture call")
    parser.add_argument("--batch-size", type=int, default=50, help="readings per message")
    parser.add_argument("--samples", type=int, default=14)
    asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
