"""TLS faults on the real agent beyond tests/agent/test_tls.py (unknown CA, host name).

Expired server certificate, not-yet-valid server certificate, and a hub client
certificate the broker rejects (issued by another CA). Each against a real Mosquitto,
through a recording proxy: no connection, not one byte of MQTT in clear, the outbox
kept, retries spaced out, and health saying what is wrong.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import pytest

from agent.config import TlsConfig
from agent.localbroker import MosquittoBroker, TlsFiles
from tests.agent.test_tls import tls_records_only
from tests.faults.agentrun import make_config, register_gen_driver, running_agent, wait_for
from tests.faults.faultpki import SERVER_NAME, FaultPki, make_fault_pki
from tests.faults.tcpproxy import FaultProxy

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.broker

FAULTS: Final = ("expired", "not_yet_valid", "client_rejected")
WINDOW_S: Final = 2.0
RECONNECT_MIN_S: Final = 0.1
RECONNECT_MAX_S: Final = 1.0
# What the health detail says for each (the operator's clue today).
DETAIL_WORDS: Final = {
    "expired": "expired",
    "not_yet_valid": "not yet valid",
    "client_rejected": "",
}


def _pki_for(fault: str, directory: Path) -> FaultPki:
    now = datetime.now(UTC)
    if fault == "expired":
        return make_fault_pki(
            directory,
            server_valid_from=now - timedelta(days=30),
            server_valid_until=now - timedelta(days=1),
        )
    if fault == "not_yet_valid":
        return make_fault_pki(directory, server_valid_from=now + timedelta(days=1))
    return make_fault_pki(directory, client_from_other_ca=True)


async def _run_against(
    fault: str, tmp_path: Path, prefix: str, window_s: float = WINDOW_S
) -> tuple[dict[str, Any], int, FaultProxy, int]:
    """Start a broker with the fault, run the agent through a proxy for ``window_s``.

    Returns (health document, readings left pending, the proxy, connects made).
    """
    pki = _pki_for(fault, tmp_path / "pki")
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
    broker.tls = TlsFiles(
        pki.ca_file, pki.server.cert_file, pki.server.key_file, fault == "client_rejected"
    )
    broker.extra_lines.append("user root")  # root-run mosquitto must read pytest's tmp dir
    proxy = FaultProxy(broker.port)
    proxy.record = True
    tls = TlsConfig(
        ca_file=pki.ca_file,
        server_name=SERVER_NAME,
        cert_file=pki.client.cert_file,
        key_file=pki.client.key_file,
    )
    try:
        broker.start()
        await proxy.start()
        config = make_config(
            tmp_path,
            proxy.port,
            prefix,
            tls=tls,
            reconnect_min_s=RECONNECT_MIN_S,
            reconnect_max_s=RECONNECT_MAX_S,
        )
        async with running_agent(config) as agent:
            await agent.gen.produce(20, per_call=5)
            await wait_for(lambda: agent.health.publish.last_connect_error is not None)
            await asyncio.sleep(window_s)
            document = await agent.runtime.health_now()
            pending = (await agent.runtime.agent.outbox.stats()).pending
            connects = agent.health.publish.connects
    finally:
        await proxy.aclose()
        broker.kill()
    return document, pending, proxy, connects


@pytest.mark.parametrize("fault", FAULTS)
async def test_tls_fault_means_no_connection_no_cleartext_outbox_kept_and_slow_retries(
    fault: str, tmp_path: Path, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_gen_driver(monkeypatch)
    document, pending, proxy, connects = await _run_against(fault, tmp_path, topic_prefix)
    assert connects == 0
    publish = document["publish"]
    assert publish["connection"] != "online"  # may be "connecting": a retry under way
    assert publish["last_connect_error"] is not None
    assert DETAIL_WORDS[fault] in (publish["last_connect_error_detail"] or "")
    assert "broker_unreachable" in {alarm["name"] for alarm in document["alarms"]}
    # Nothing left the hub but TLS records: no CONNECT, no reading, no fallback.
    data = bytes(proxy.sent_by_hub)
    assert data, "the proxy saw the handshake"
    assert tls_records_only(data)
    assert b"MQTT" not in data
    assert pending == 20, "the outbox keeps every reading while TLS fails"
    # Retries are spaced by the backoff (each >= reconnect_min_s), never a hot loop.
    assert 1 <= proxy.accepted <= WINDOW_S / RECONNECT_MIN_S + 2, proxy.accepted


async def test_each_tls_fault_has_its_own_status_kind(
    tmp_path: Path, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_gen_driver(monkeypatch)
    kinds = {}
    for fault in FAULTS:
        document, _, _, _ = await _run_against(fault, tmp_path / fault, topic_prefix, window_s=0.1)
        kinds[fault] = document["publish"]["last_connect_error"]
    assert "network_error" not in kinds.values(), kinds
    assert len(set(kinds.values())) == len(FAULTS), kinds
