"""Broker faults on the real agent: kill -9 mid-stream, and a week-long outage (compressed).

The agent is ``agent.app.Runtime`` in-process with a generator driver (our own seam);
the broker is a real Mosquitto with persistence off, killed with SIGKILL for real.
A graceful broker restart is covered by tests/e2e/test_pipeline.py and
tests/agent/test_publisher.py and is not repeated here.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.harness import committed_rows, decode_readings, integrity
from tests.emulators.subscriber import Subscriber
from tests.faults.agentrun import (
    HUB_ID,
    CompressedClock,
    make_config,
    no_pending,
    register_gen_driver,
    rss_bytes,
    running_agent,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker
    from tests.emulators.subscriber import Received

pytestmark = pytest.mark.broker

HEALTH_INTERVAL_S = 2.0
RETAINED_MARGIN_S = 3.0  # connect backoff (<= 1 s) + a loaded 2-core machine


def _last(messages: list[Received], suffix: str, *, retained_only: bool) -> dict[str, Any] | None:
    found = [m for m in messages if m.topic.endswith(suffix) and (m.retain or not retained_only)]
    return json.loads(found[-1].payload) if found else None


def _hub_view(messages: list[Received], *, retained_only: bool) -> bool:
    """Whether a dashboard sees the hub online, its health and the device connected."""
    status = _last(messages, f"{HUB_ID}/status", retained_only=retained_only)
    health = _last(messages, f"{HUB_ID}/health", retained_only=retained_only)
    device = _last(messages, "/devices/gen/status", retained_only=retained_only)
    return (
        status is not None
        and status["state"] == "online"
        and health is not None
        and device is not None
        and device["state"] == "connected"
    )


def _ids(subs: list[Subscriber]) -> list[uuid.UUID]:
    return [r["reading_id"] for s in subs for r in decode_readings(s.messages("/readings"))]


async def test_broker_kill_9_mid_stream_loses_nothing_and_retained_topics_return(
    tmp_path: Path,
    private_broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_gen_driver(monkeypatch)
    private_broker.start()
    config = make_config(
        tmp_path, private_broker.port, topic_prefix, health_interval_s=HEALTH_INTERVAL_S
    )
    subs = [Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])]
    try:
        async with running_agent(config) as agent:
            await wait_for(lambda: agent.is_connected)
            await agent.gen.produce(300, per_call=10)
            await wait_for(lambda: len(_ids(subs)) >= 300)
            # Crash the broker while readings keep coming: no DISCONNECT, no persistence.
            streaming = agent.gen.produce(400, per_call=5)
            private_broker.kill()
            await streaming
            await wait_for(lambda: not agent.is_connected)
            await agent.gen.produce(200, per_call=20)  # captured while the broker is down
            assert agent.health.publish.connection != "online"
            private_broker.start()
            # A dashboard opened as the broker comes back sees online, health and the
            # device status within one health interval (plus a margin for this machine).
            fresh = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
            subs.append(fresh)
            await wait_for(
                lambda: _hub_view(fresh.messages(), retained_only=False),
                timeout_s=HEALTH_INTERVAL_S + RETAINED_MARGIN_S,
            )
            committed = set(committed_rows(tmp_path / "outbox.db"))
            assert len(committed) == 900
            await wait_for(lambda: committed <= set(_ids(subs)), timeout_s=30)
            # Once republished, they are retained: a later subscriber gets them at once.
            late = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
            subs.append(late)
            await wait_for(lambda: _hub_view(late.messages(), retained_only=True), timeout_s=5)
            outbox = agent.runtime.agent.outbox
            await wait_for(lambda: no_pending(outbox))
            assert (await outbox.stats()).rejected == 0
            assert agent.health.publish.reconnects >= 1
    finally:
        for sub in subs:
            sub.close()
    assert integrity(tmp_path / "outbox.db") == "ok"


# A week of 1 Hz readings is 604,800 (bench/outage_soak.py runs it); CI runs a day's
# worth at a quarter rate so the whole file stays fast on a shared 2-core machine.
OUTAGE_READINGS = 20_000
OUTAGE_TICK_S = 4.0
RSS_SAMPLES = 10
RSS_GROWTH_LIMIT_BYTES = 24 * 2**20


async def test_long_outage_drains_in_seq_order_with_flat_rss_and_age_reported(
    tmp_path: Path,
    private_broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_gen_driver(monkeypatch)
    clock = CompressedClock(datetime(2026, 11, 1, tzinfo=UTC))
    config = make_config(
        tmp_path, private_broker.port, topic_prefix, batch_size=200, reconnect_max_s=0.5
    )
    async with running_agent(config, clock=clock) as agent:
        # The broker was never reachable: capture goes on regardless.
        await wait_for(lambda: agent.health.publish.connect_attempts >= 1)
        rss: list[int] = []
        ages: list[tuple[float, float]] = []
        step = OUTAGE_READINGS // RSS_SAMPLES
        for done in range(step, OUTAGE_READINGS + 1, step):
            await agent.gen.produce(step, per_call=100, tick_s=OUTAGE_TICK_S)
            rss.append(rss_bytes())
            document = await agent.runtime.health_now()
            ages.append((document["outbox"]["oldest_pending_age_s"], done * OUTAGE_TICK_S))
            assert document["outbox"]["pending"] == done
            assert not agent.is_connected
        # Memory does not grow with the backlog (it lives in SQLite, not in RAM): the
        # first sample already includes start-up; later ones stay near it.
        assert max(rss[1:]) - rss[1] < RSS_GROWTH_LIMIT_BYTES, [r // 2**20 for r in rss]
        # Health saw the backlog age the whole time (compressed time: 1 reading = 4 s).
        for reported_s, expected_s in ages:
            assert expected_s - 60 <= reported_s <= expected_s + 60
        assert "broker_unreachable" in agent.health.alarms

        private_broker.start()
        sub = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
        try:
            await wait_for(
                lambda: len(decode_readings(sub.messages("/readings"))) >= OUTAGE_READINGS,
                timeout_s=120,
                poll_s=0.5,
            )
            received = decode_readings(sub.messages("/readings"))
        finally:
            sub.close()
        outbox = agent.runtime.agent.outbox
        await wait_for(lambda: no_pending(outbox))
        assert (await outbox.stats()).rejected == 0
    seqs = [int(r["seq"]) for r in received]
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == sorted(first_seen), "the backlog must drain in seq order"
    committed = committed_rows(tmp_path / "outbox.db")
    assert set(committed) <= {r["reading_id"] for r in received}
    assert len(committed) == OUTAGE_READINGS
