"""TLS to a real Mosquitto: verified or nothing, never a byte of MQTT in clear."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from typing import TYPE_CHECKING

import pytest

from agent.config import MqttConfig, TlsConfig
from agent.errors import TlsConfigError
from agent.localbroker import TlsFiles, free_port
from agent.outbox import Outbox
from agent.publisher import backoff_delay_s
from agent.tlsconfig import build_ssl_context
from tests.agent.certs import Pki, make_pki
from tests.agent.pubharness import build, eventually, make_config, make_readings, running

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from agent.config import Config
    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker

TLS_RECORD_TYPES = {0x14, 0x15, 0x16, 0x17}  # change_cipher_spec, alert, handshake, data


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def start_tls_broker(broker: MosquittoBroker, pki: Pki, *, require_client_cert: bool) -> None:
    broker.tls = TlsFiles(
        pki.ca_file, pki.server.cert_file, pki.server.key_file, require_client_cert
    )
    broker.extra_lines.append("user root")  # root-run mosquitto must read pytest's tmp dir
    broker.start()


async def publish_and_flush(config: Config, count: int) -> tuple[int, str]:
    """Capture ``count`` readings and flush them through a real Publisher.

    Returns:
        How many rows the outbox then counts as sent, and the connection state seen
        after the flush (while the publisher still ran).
    """
    outbox = await Outbox.open(config.storage.path)
    try:
        publisher, health = build(config, outbox)
        async with running(publisher):
            await outbox.capture(make_readings(count))
            publisher.notify_new_readings()
            await asyncio.wait_for(publisher.flush(), 10)
            connection = health.publish.connection
        return (await outbox.stats()).sent, connection
    finally:
        await outbox.close()


class RecordingProxy:
    """A TCP relay in front of the broker that keeps every byte the hub sent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.received = bytearray()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if record:
                    self.received.extend(chunk)
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._relay(reader, up_writer, record=True),
            self._relay(up_reader, writer, record=False),
        )
        with contextlib.suppress(ConnectionError):
            await up_writer.wait_closed()
            await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[RecordingProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()


def tls_records_only(data: bytes) -> bool:
    """Whether ``data`` is a sequence of whole-or-truncated TLS records and nothing else."""
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 5]
        if len(header) < 5 or header[0] not in TLS_RECORD_TYPES or header[1] != 0x03:
            return False
        pos += 5 + int.from_bytes(header[3:5], "big")
    return True


async def test_right_ca_and_server_name_connect_and_deliver(
    private_broker: MosquittoBroker, pki: Pki, topic_prefix: str, tmp_path: Path
) -> None:
    start_tls_broker(private_broker, pki, require_client_cert=False)
    tls = TlsConfig(ca_file=pki.ca_file, server_name="broker.test")
    config = make_config(private_broker.host, private_broker.port, topic_prefix, tmp_path, tls=tls)
    sent, connection = await publish_and_flush(config, 12)
    assert connection == "online"
    assert sent == 12


@pytest.mark.parametrize("mistake", ["wrong_ca", "wrong_hostname"])
async def test_unverified_broker_never_connects_and_sees_no_cleartext(
    private_broker: MosquittoBroker, pki: Pki, topic_prefix: str, tmp_path: Path, mistake: str
) -> None:
    start_tls_broker(private_broker, pki, require_client_cert=False)
    if mistake == "wrong_ca":
        other = make_pki(tmp_path / "other", ca_name="Impostor CA")
        tls = TlsConfig(ca_file=other.ca_file, server_name="broker.test")
    else:  # the certificate names broker.test; we dial 127.0.0.1 and check that name
        tls = TlsConfig(ca_file=pki.ca_file)
    proxy = RecordingProxy(private_broker.port)
    config = make_config(
        "127.0.0.1",
        proxy.port,
        topic_prefix,
        tmp_path,
        tls=tls,
        reconnect_min_s=0.1,
        reconnect_max_s=0.4,
    )
    outbox = await Outbox.open(config.storage.path)
    readings = make_readings(5)
    await outbox.capture(readings)
    publisher, health = build(config, outbox)
    kind = "tls_unknown_ca" if mistake == "wrong_ca" else "tls_hostname_mismatch"
    async with proxy.serving(), running(publisher):
        await asyncio.sleep(2.0)
        assert not publisher.is_connected
        # Each certificate problem named as such between attempts (during one, the
        # health says "connecting": the stop may land there, so wait for the next).
        await eventually(lambda: health.publish.connection == kind, timeout_s=2.0)
        attempts = health.publish.connect_attempts
    assert health.publish.connects == 0
    assert health.publish.last_connect_error == kind
    assert "broker_unreachable" in health.alarms
    # Permanent failure: backoff near reconnect_max_s (0.2-0.4 s), not a hot loop.
    assert 2 <= attempts <= 12
    assert proxy.connections == attempts
    data = bytes(proxy.received)
    assert data, "the proxy saw the TLS handshake"
    assert tls_records_only(data), "only TLS records may leave the hub"
    assert b"MQTT" not in data  # the CONNECT packet's protocol name
    assert all(str(r.reading_id).encode() not in data for r in readings)
    assert (await outbox.stats()).pending == 5
    await outbox.close()


async def test_mutual_tls_with_client_certificate(
    private_broker: MosquittoBroker, pki: Pki, topic_prefix: str, tmp_path: Path
) -> None:
    start_tls_broker(private_broker, pki, require_client_cert=True)
    tls = TlsConfig(
        ca_file=pki.ca_file,
        server_name="broker.test",
        cert_file=pki.client.cert_file,
        key_file=pki.client.key_file,
    )
    config = make_config(private_broker.host, private_broker.port, topic_prefix, tmp_path, tls=tls)
    sent, _ = await publish_and_flush(config, 3)
    assert sent == 3


async def test_broker_requiring_client_cert_refuses_a_hub_without_one(
    private_broker: MosquittoBroker, pki: Pki, topic_prefix: str, tmp_path: Path
) -> None:
    start_tls_broker(private_broker, pki, require_client_cert=True)
    tls = TlsConfig(ca_file=pki.ca_file, server_name="broker.test")
    config = make_config(private_broker.host, private_broker.port, topic_prefix, tmp_path, tls=tls)
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    async with running(publisher):
        await eventually(lambda: health.publish.connect_attempts >= 2)
        assert not publisher.is_connected
    assert health.publish.connects == 0
    assert health.publish.last_connect_error == "tls_client_rejected"
    await outbox.close()


async def test_plaintext_is_refused_without_the_explicit_opt_in(
    topic_prefix: str, tmp_path: Path
) -> None:
    proxy = RecordingProxy(free_port())
    valid = make_config("127.0.0.1", proxy.port, topic_prefix, tmp_path)
    # The config loader already refuses this; the publisher refuses it again in case a
    # config object is ever built without validation.
    unsafe_mqtt = valid.mqtt.model_copy(update={"insecure_plaintext": False})
    config = valid.model_copy(update={"mqtt": unsafe_mqtt})
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    async with proxy.serving(), running(publisher):
        await eventually(lambda: health.publish.connect_attempts >= 1)
        await asyncio.sleep(0.2)
    assert health.publish.connection == "config_error"
    assert proxy.connections == 0
    assert proxy.received == b""
    await outbox.close()


def test_context_is_verified_tls12_plus_and_bad_files_are_clear_errors(
    pki: Pki, tmp_path: Path
) -> None:
    context = build_ssl_context(TlsConfig(ca_file=pki.ca_file))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsConfigError, match=r"mqtt\.tls\.ca_file"):
        build_ssl_context(TlsConfig(ca_file=tmp_path / "missing.crt"))
    with pytest.raises(TlsConfigError, match="client certificate"):
        build_ssl_context(
            TlsConfig(
                ca_file=pki.ca_file, cert_file=pki.client.cert_file, key_file=pki.server.key_file
            )
        )  # key of another cert


def test_backoff_is_fully_jittered_and_capped() -> None:
    cfg = MqttConfig(
        host="127.0.0.1", insecure_plaintext=True, reconnect_min_s=1.0, reconnect_max_s=60.0
    )
    rng = random.Random(7)
    early = [backoff_delay_s(0, "network_error", cfg, rng) for _ in range(200)]
    late = [backoff_delay_s(20, "network_error", cfg, rng) for _ in range(200)]
    permanent = [backoff_delay_s(0, "auth_error", cfg, rng) for _ in range(200)]
    assert all(1.0 <= d <= 1.0 for d in early)
    assert all(1.0 <= d <= 60.0 for d in late)
    assert max(late) - min(late) > 30  # spread: a fleet does not reconnect in lockstep
    assert all(30.0 <= d <= 60.0 for d in permanent)
