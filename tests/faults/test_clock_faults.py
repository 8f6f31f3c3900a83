"""Clock faults on the real agent: a 1970 boot, late sync, +-1 h and +-1 year steps, and
TLS while the hub clock is before the broker certificate's notBefore.

The hub clock is injected through the ``agent.clock.Clock`` seam (an allowed fake); the
agent's timers (backoff, health interval, keepalive) run on the event loop's monotonic
clock, which a wall-clock step must not disturb.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import pytest

from agent.config import TlsConfig
from agent.localbroker import TlsFiles, free_port
from tests.e2e.harness import decode_readings
from tests.emulators.subscriber import Subscriber
from tests.faults.agentrun import (
    EPOCH_1970,
    HUB_ID,
    CompressedClock,
    RunningAgent,
    make_config,
    no_pending,
    register_gen_driver,
    running_agent,
    wait_for,
)
from tests.faults.faultpki import SERVER_NAME, make_fault_pki

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker

HEALTH_INTERVAL_S: Final = 1.0
HEALTH_MARGIN_S: Final = 2.0  # a loaded 2-core machine
GROUP: Final = 20
STEPS: Final = (
    ("+1 h", timedelta(hours=1)),
    ("-1 h", timedelta(hours=-1)),
    ("+1 year", timedelta(days=365)),
    ("-1 year", timedelta(days=-365)),
)


def _health_count(sub: Subscriber) -> int:
    return len(sub.messages(f"{HUB_ID}/health"))


async def _step_and_capture(
    agent: RunningAgent, clock: CompressedClock, sub: Subscriber, step: timedelta
) -> None:
    """Step the wall clock, capture a group, and check the monotonic-timed parts."""
    before = await agent.runtime.health_now()
    seen = _health_count(sub)
    clock.jump(step)
    await agent.gen.produce(GROUP, per_call=5)
    # The health timer runs on monotonic time: the next health message comes on time.
    await wait_for(lambda: _health_count(sub) > seen, timeout_s=HEALTH_INTERVAL_S + HEALTH_MARGIN_S)
    after = await agent.runtime.health_now()
    # Uptime is monotonic: it does not jump with the wall clock.
    assert 0 <= after["uptime_s"] - before["uptime_s"] < 30
    # Device staleness is monotonic too: +1 year does not make the device "not seen".
    assert after["devices"]["gen"]["state"] == "connected"


async def test_1970_boot_late_sync_and_clock_steps_keep_order_flags_and_timers(
    tmp_path: Path,
    private_broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_gen_driver(monkeypatch)
    clock = CompressedClock(EPOCH_1970, synced=False)  # a Pi with no RTC, before NTP
    config = make_config(
        tmp_path, private_broker.port, topic_prefix, health_interval_s=HEALTH_INTERVAL_S
    )
    async with running_agent(config, clock=clock) as agent:
        # Captured in "1970", unsynced, while the broker is not reachable yet.
        await agent.gen.produce(GROUP, per_call=5)
        unsynced_at = time.monotonic()
        # NTP syncs: one big step forward, and the clock is now trusted.
        clock.jump(datetime.now(UTC) - clock.now().utc, synced=True)
        await agent.gen.produce(GROUP, per_call=5)
        private_broker.start()
        sub = Subscriber(private_broker.host, private_broker.port, [f"{topic_prefix}/#"])
        try:
            await wait_for(lambda: len(decode_readings(sub.messages("/readings"))) >= 2 * GROUP)
            for _name, step in STEPS:
                await _step_and_capture(agent, clock, sub, step)
            total = GROUP * (2 + len(STEPS))
            await wait_for(lambda: len(decode_readings(sub.messages("/readings"))) >= total)
            readings = decode_readings(sub.messages("/readings"))
            health = json.loads(sub.messages(f"{HUB_ID}/health")[-1].payload)
        finally:
            sub.close()
    by_seq = {int(r["seq"]): r for r in readings}
    assert len(by_seq) == total
    seqs = [int(r["seq"]) for r in readings]
    assert list(dict.fromkeys(seqs)) == sorted(by_seq), "seq order survives every step"
    groups = [
        [by_seq[s] for s in sorted(by_seq)[i * GROUP : (i + 1) * GROUP]]
        for i in range(2 + len(STEPS))
    ]
    _check_unsynced_group(groups[0], unsynced_at)
    for group in groups[1:]:
        assert all("hub_clock_unsynced" not in r.get("tf", []) for r in group)
    _check_steps_recorded(groups[1:])
    assert health["clock_synced"] is True


def _check_unsynced_group(group: list[dict[str, Any]], unsynced_at: float) -> None:
    """Captured before sync: flagged, and re-stamped from monotonic time once synced."""
    real_capture = datetime.now(UTC) - timedelta(seconds=time.monotonic() - unsynced_at)
    for reading in group:
        assert "hub_clock_unsynced" in reading["tf"]
        assert "restamped" in reading["tf"]
        # Not 1970: the true receipt time, recovered from the monotonic clock.
        assert abs(reading["receipt_time"] - real_capture) < timedelta(seconds=30)


def _check_steps_recorded(groups: list[list[dict[str, Any]]]) -> None:
    """Each group carries the (stepped) hub time it was captured at; nothing reordered."""
    starts = [min(r["receipt_time"] for r in g) for g in groups]
    synced, plus_h, minus_h, plus_y, minus_y = starts
    assert timedelta(minutes=59) < plus_h - synced < timedelta(minutes=61)
    assert abs(minus_h - synced) < timedelta(minutes=1)
    assert timedelta(days=364) < plus_y - synced < timedelta(days=366)
    assert abs(minus_y - synced) < timedelta(minutes=1)


NOT_BEFORE_IN_S: Final = 4.0


async def _subscribe_when_listening(port: int, prefix: str) -> Subscriber:
    """A subscriber on the second listener, which Mosquitto may open a moment later."""
    for _ in range(50):
        try:
            return Subscriber("127.0.0.1", port, [f"{prefix}/#"])
        except ConnectionRefusedError:
            await asyncio.sleep(0.1)
    return Subscriber("127.0.0.1", port, [f"{prefix}/#"])


async def test_tls_fails_cleanly_before_the_certificate_notbefore_and_recovers_alone(
    tmp_path: Path,
    private_broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_gen_driver(monkeypatch)
    valid_from = datetime.now(UTC) + timedelta(seconds=NOT_BEFORE_IN_S)
    pki = make_fault_pki(tmp_path / "pki", server_valid_from=valid_from)
    private_broker.tls = TlsFiles(pki.ca_file, pki.server.cert_file, pki.server.key_file)
    backend_port = free_port()  # the backend's own plaintext loopback listener
    private_broker.extra_lines += ["user root", f"listener {backend_port} 127.0.0.1"]
    private_broker.start()
    tls = TlsConfig(ca_file=pki.ca_file, server_name=SERVER_NAME)
    config = make_config(tmp_path, private_broker.port, topic_prefix, tls=tls, reconnect_max_s=1.0)
    sub = await _subscribe_when_listening(backend_port, topic_prefix)
    try:
        async with running_agent(config) as agent:
            await agent.gen.produce(GROUP, per_call=5)
            await wait_for(lambda: agent.health.publish.last_connect_error is not None)
            publish = agent.health.publish
            assert publish.connects == 0
            assert publish.connection == "tls_cert_not_yet_valid"
            assert "not yet valid" in (publish.last_connect_error_detail or "")
            # No restart, no operator: once the time passes, the next retry succeeds.
            await wait_for(lambda: agent.is_connected, timeout_s=NOT_BEFORE_IN_S + 10)
            assert datetime.now(UTC) >= valid_from - timedelta(seconds=1)
            await wait_for(lambda: len(decode_readings(sub.messages("/readings"))) >= GROUP)
            assert publish.connect_attempts >= 2
            outbox = agent.runtime.agent.outbox
            await wait_for(lambda: no_pending(outbox))  # PUBACKs may trail the copies
    finally:
        sub.close()
