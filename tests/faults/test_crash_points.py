"""kill -9 of the real agent at its named crash points and at random moments (T1).

The agent (``python -m agent run -c FILE``) reads an emulated Nonin DF8 on a pty and
publishes to a real Mosquitto. Each trial starts it with ``WARDLINK_CRASH_AT`` set (see
agent/crashpoints.py) so it SIGKILLs itself at that point, or kills it from outside after
a random delay. After every trial the outbox file must pass ``integrity_check`` and its
highest ``seq`` must never go down; after all trials one clean run must deliver every
committed reading, duplicates only as exact repeats (same ``reading_id``, same ``seq``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from agent.crashpoints import CRASH_POINTS
from tests.e2e.harness import (
    AgentProcess,
    committed_rows,
    decode_readings,
    integrity,
    serial_device,
)
from tests.emulators.subscriber import Subscriber
from tests.faults.agent_rig import (
    crash_trial,
    fault_config,
    oximeter,
    pending_ids,
    wait_for,
    wire_tally,
)

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker
    from tests.faults.agent_rig import TrialOutcome

pytestmark = [pytest.mark.broker, pytest.mark.pty, pytest.mark.timeout(240)]

TRIALS_PER_POINT = 4
RANDOM_TRIALS = 8


async def test_kill_9_at_every_crash_point_loses_no_committed_reading(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    rng = random.Random(61127)
    db = tmp_path / "outbox.db"
    plan: list[str | None] = [p for p in CRASH_POINTS for _ in range(TRIALS_PER_POINT)]
    plan += [None] * RANDOM_TRIALS
    rng.shuffle(plan)
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    try:
        async with oximeter(tmp_path / "nonin.tty", speed=40.0) as nonin:
            config = fault_config(
                tmp_path,
                port=broker.port,
                prefix=topic_prefix,
                devices_yaml=serial_device("oxi", "nonin-df8", nonin.port, interval_s=0.05),
            )
            agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
            outcomes: list[TrialOutcome] = []
            for point in plan:
                # A later pass (up to the 6th) varies where in the stream the crash lands.
                outcome = await crash_trial(
                    agent, point, after=rng.randint(1, 6), delay_s=rng.uniform(0.8, 2.5)
                )
                assert outcome.integrity == "ok", outcome
                assert outcome.reached, f"{outcome} (log: {agent.log_text()[-1500:]})"
                assert outcome.max_seq >= max((o.max_seq for o in outcomes), default=0)
                outcomes.append(outcome)
            copies_before_drain = len(decode_readings(sub.messages("/readings")))
            # One clean run: whatever the crashes left pending (some of it already at the
            # broker) must now arrive, again if need be, never lost.
            await agent.start()
            committed = committed_rows(db)
            await wait_for(
                lambda: wire_tally(decode_readings(sub.messages("/readings")), committed).lost == 0,
                timeout_s=60,
                what="every committed reading delivered after the crashes",
            )
            assert await agent.terminate() == 0
        tally = wire_tally(
            decode_readings(sub.messages("/readings")), committed_rows(db), pending_ids(db)
        )
        assert tally.sound, tally
        assert tally.owed <= 1, tally  # at most the interval stored at the final stop
        # The trials really captured and crashed mid-stream.
        assert tally.committed >= 40, (tally, outcomes)
        assert tally.duplicates > 0, "no crash ever left a published but unmarked reading"
        assert copies_before_drain > 0
        assert integrity(db) == "ok"
        assert agent.starts == len(plan) + 1
        assert "Traceback" not in agent.log_text()
    finally:
        sub.close()
