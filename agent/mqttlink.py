"""One MQTT connection: a fresh paho client driven by the asyncio event loop.

paho's network calls (``loop_read``/``loop_write``/``loop_misc``) run on the loop through
``add_reader``/``add_writer``, so every paho callback (CONNACK, PUBACK with its MQTT 5
reason code, incoming messages) runs on the loop thread. The one exception is the
blocking TCP connect + TLS handshake inside ``client.connect``: it runs in a worker thread
(``asyncio.to_thread``), bounded by paho's ``connect_timeout``, and while it runs our
socket callbacks only record what paho asked for; ``open`` attaches them on the loop after.

A link is used for one connection only. Reconnecting makes a new link, so nothing paho
queued for an old session is ever re-sent behind the outbox's back: the outbox, not paho,
decides what is republished (reliability.md R3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any, Final, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PublishError, TlsConfigError
from agent.mqttprops import new_properties, publish_properties

# The publisher imports these from here (they were defined here before).
__all__ = [
    "BufferedClient",
    "ConnectFailedError",
    "MqttLink",
    "connect_link",
    "new_properties",
    "publish_properties",
]
from agent.tlsconfig import HubTlsContext, build_ssl_context
from agent.topics import AUTH_REFUSALS, offline_payload, reason_text

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from paho.mqtt.client import SocketLike, _OutPacket
    from paho.mqtt.properties import Properties

    from agent.config import MqttConfig

log = logging.getLogger(__name__)

FAILURE: Final = 0x80  # MQTT 5: reason codes from 0x80 up are failures
MISC_INTERVAL_S: Final = 1.0  # paho's own loop calls loop_misc about once a second
# A healthy link hears from the broker at least every keepalive (a PINGRESP, a PUBACK);
# silence for this many keepalives means a half-open link (NAT timeout, dead peer).
# loop_misc runs every keepalive/20 at most, so pings go out on time and the silence is
# caught within 1.45 x keepalive (reliability.md T5 asks for 1.5 x). A healthy link's
# longest silence is 1.05 x keepalive + one round trip.
HALF_OPEN_SILENCE: Final = 1.4
RECV_CHUNK_BYTES: Final = 65536  # one recv per socket wake-up (a burst of PUBACKs)
PUBLISH_COMMAND: Final = 0x30  # MQTT fixed header packet types (high nibble)
# Remaining lengths of a PUBACK without properties: packet id (+ reason code).
PUBACK_WITH_REASON: Final = 3
PLAIN_PUBACK_LENGTHS: Final = (2, PUBACK_WITH_REASON)
DISCONNECT_COMMAND: Final = 0xE0


class BufferedClient(mqtt.Client):
    """A paho client that reads a burst in one ``recv`` and writes one in one ``send``.

    paho reads each packet in three ``recv`` calls (type, length, body) and ends every
    read with a failing one: four system calls per PUBACK. Here one call serves a whole
    burst of PUBACKs from a buffer. Bytes already in the buffer do not wake the event
    loop, so ``MqttLink`` keeps calling ``loop_read`` while ``buffered_bytes`` says so.

    paho writes each queued packet with its own ``send``; a loop turn that publishes
    several messages (a PUBACK burst reopens the window) queues several. Packets that
    paho does nothing for once written (anything but a QoS 0 PUBLISH, which calls
    ``on_publish``, and DISCONNECT) are joined into one: the same bytes in the same
    order, and paho's own bookkeeping of a partly written packet still applies.

    A plain MQTT 5 PUBACK (a packet id and at most a reason code, no properties: what
    Mosquitto sends) is read here rather than by paho's decoder, which builds two
    ``ReasonCode`` objects (each copying paho's table of names) and a ``Properties`` per
    PUBACK. It then goes through paho's own ``_do_on_publish`` exactly as paho would send
    it: ``on_publish`` gets the packet's reason code (a shared ``ReasonCode`` per value;
    read, never change it) and empty properties, then paho forgets the message. A PUBACK
    with properties, a reason code paho does not know, or MQTT 3.1.1 is paho's as before.
    """

    _rbuf: bytes = b""
    _rpos: int = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes taken off the socket that paho has not read yet."""
        return len(self._rbuf) - self._rpos

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(RECV_CHUNK_BYTES)  # raises BlockingIOError if empty
            pos = 0
        piece = buf[pos : pos + bufsize]
        self._rbuf, self._rpos = buf, pos + len(piece)
        return piece  # b"" only when the socket said end of stream, as paho expects

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        plain = len(packet) in PLAIN_PUBACK_LENGTHS
        if cmd != "PUBACK" or self._protocol != MQTTProtocolVersion.MQTTv5 or not plain:
            return super()._handle_pubackcomp(cmd)
        # No reason code byte means 0x00 Success (MQTT 5.0 section 3.4.2.1).
        reason = _puback_reason(packet[2] if len(packet) == PUBACK_WITH_REASON else 0)
        if reason is None:
            return super()._handle_pubackcomp(cmd)  # paho reports the malformed packet
        mid = int.from_bytes(packet[:2], "big")
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PUBACK_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> MQTTErrorCode:
        queued = self._out_packet
        if len(queued) > 1 and _needs_nothing_when_sent(queued[0]):
            run = [queued.popleft()]
            while queued and _needs_nothing_when_sent(queued[0]):
                run.append(queued.popleft())
            data = b"".join([packet["packet"][packet["pos"] :] for packet in run])
            # The first packet's type (one that needs nothing) for the joined bytes.
            queued.appendleft({**run[0], "pos": 0, "to_process": len(data), "packet": data})
        return super()._packet_write()


# A PUBACK's reason code as paho's ReasonCode, one shared object per value (None: not a
# PUBACK reason code), and the empty properties of a PUBACK without any.
_PUBACK_REASONS: dict[int, ReasonCode | None] = {}
_NO_PUBACK_PROPERTIES: Final = new_properties(PacketTypes.PUBACK)


def _puback_reason(value: int) -> ReasonCode | None:
    if value not in _PUBACK_REASONS:
        reason = ReasonCode(PacketTypes.PUBACK)
        try:
            reason.unpack(bytes((value,)))  # paho's own check of the value
        except (KeyError, ValueError):
            _PUBACK_REASONS[value] = None
        else:
            _PUBACK_REASONS[value] = reason
    return _PUBACK_REASONS[value]


def _needs_nothing_when_sent(packet: _OutPacket) -> bool:
    """Whether paho does nothing once ``packet`` (an out-packet dict) is fully written."""
    command = packet["command"] & 0xF0
    if command == PUBLISH_COMMAND:
        return bool(packet["qos"])  # QoS 0: on_publish is called when written
    return command != DISCONNECT_COMMAND  # DISCONNECT: paho closes the socket after it


class MqttLink:
    """A connected (or connecting) paho client, its socket on the event loop."""

    def __init__(
        self,
        client: mqtt.Client,
        on_ack: Callable[[MqttLink, int, int], None],
        on_message: Callable[[str, bytes, Properties | None], None],
    ) -> None:
        """Wire paho's callbacks; no I/O until ``open``."""
        self.client = client
        self._loop = asyncio.get_running_loop()
        self._on_ack = on_ack
        self._on_message = on_message
        self._sock: SocketLike | None = None
        self._want_write = False
        self._writer_added = False
        self._write_scheduled = False
        self._attached = False
        self._connack: asyncio.Future[int] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self.waiters: dict[int, asyncio.Future[int]] = {}
        self._misc_task: asyncio.Task[None] | None = None
        self._keepalive_s = 60.0
        self._last_read = self._loop.time()
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_publish = self._published
        client.on_message = self._message

    @property
    def is_connected(self) -> bool:
        """CONNACK accepted and the socket not lost since."""
        return (
            self._connack.done()
            and not self._connack.cancelled()
            and self._connack.exception() is None
            and self._connack.result() < 0x80  # noqa: PLR2004 - MQTT 5 failure threshold
            and not self.closed.done()
        )

    async def open(
        self, host: str, port: int, keepalive_s: int, *, mqtt5: bool, thread_timeout_s: float
    ) -> int:
        """TCP (+TLS) connect in a worker thread, then wait for CONNACK; return its code.

        Raises:
            OSError, ssl.SSLError: the TCP connect or TLS handshake failed.
            TimeoutError: paho's connect timed out.
        """
        self._keepalive_s = float(keepalive_s)
        clean: Any = True if mqtt5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        worker = asyncio.ensure_future(
            asyncio.to_thread(self.client.connect, host, port, keepalive_s, clean_start=clean)
        )
        try:
            # paho's own connect_timeout ends the thread; this bound only guards the loop.
            await asyncio.wait_for(asyncio.shield(worker), thread_timeout_s + 1.0)
        except BaseException:
            worker.add_done_callback(self._abandoned)
            raise
        self._attach()
        self._last_read = self._loop.time()
        self._misc_task = asyncio.create_task(self._misc(), name="mqtt-misc")
        return await self._connack

    def _abandoned(self, worker: asyncio.Future[Any]) -> None:
        # The connect thread finished after we gave up on it: close whatever it opened.
        if not worker.cancelled():
            worker.exception()  # retrieved, so asyncio does not log it as lost
        self.abort()

    @property
    def handshake_done(self) -> bool:
        """TCP connect (and TLS handshake) finished; waiting for or past CONNACK."""
        return self._attached

    def _attach(self) -> None:
        self._attached = True
        if self._sock is not None:
            self._loop.add_reader(self._sock, self._read)
            if self._want_write:
                self._schedule_write()

    def _read(self) -> None:
        self._last_read = self._loop.time()
        client = self.client
        client.loop_read()
        # paho stops after as many packets as it has messages in flight; what is left
        # in the buffer would wait for the next socket wake-up, so read it now. Every
        # call consumes at least one buffered byte, so this ends.
        while isinstance(client, BufferedClient) and client.buffered_bytes and self._sock:
            client.loop_read()

    def _write(self) -> None:
        self.client.loop_write()

    def _schedule_write(self) -> None:
        # Write on the next loop turn rather than waiting for "writable" from epoll: the
        # socket almost always is, and adding then removing a writer for every publish
        # cost two epoll_ctl calls and a loop turn. Publishes of one turn share the call.
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_now)

    def _write_now(self) -> None:
        self._write_scheduled = False
        if self._sock is None or not self._want_write:
            return
        self.client.loop_write()
        # Still wanted: the socket would block (or TLS wants to read first). Wait for it.
        if self._want_write and self._sock is not None and not self._writer_added:
            self._writer_added = True
            self._loop.add_writer(self._sock, self._write)

    async def _misc(self) -> None:
        interval_s = min(MISC_INTERVAL_S, self._keepalive_s / 20)
        while not self.closed.done():
            await asyncio.sleep(interval_s)
            # Sends PINGREQ when due (paho keepalive); a dead link is caught below sooner
            # than paho would (it waits a whole keepalive for the PINGRESP).
            self.client.loop_misc()
            silent_s = self._loop.time() - self._last_read
            if self.is_connected and silent_s > HALF_OPEN_SILENCE * self._keepalive_s:
                log.warning(
                    "no traffic from the broker for %.1f s (keepalive %.0f s): "
                    "dropping the half-open connection",
                    silent_s,
                    self._keepalive_s,
                )
                self.abort(f"half-open: nothing received for {silent_s:.1f} s")
                return

    def _socket_open(self, _c: mqtt.Client, _u: object, sock: SocketLike) -> None:
        self._sock = sock
        if isinstance(sock, socket.socket):
            # paho leaves Nagle on: small PUBLISHes then wait for the broker's delayed
            # ACK (~40 ms), which capped a drain at a few hundred messages a second.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._attached:
            self._loop.add_reader(sock, self._read)

    def _socket_close(self, _c: mqtt.Client, _u: object, sock: SocketLike) -> None:
        # paho also calls this from Client.__del__, possibly long after abort() closed
        # the socket (fd -1) or the loop ended: only unregister the socket we still own.
        if self._attached and sock is self._sock and not self._loop.is_closed():
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        self._writer_added = False
        self._sock = None

    def _register_write(self, _c: mqtt.Client, _u: object, _sock: SocketLike) -> None:
        self._want_write = True
        if self._attached:
            self._schedule_write()

    def _unregister_write(self, _c: mqtt.Client, _u: object, sock: SocketLike) -> None:
        self._want_write = False
        if self._attached and self._writer_added:
            self._loop.remove_writer(sock)
        self._writer_added = False

    def _connected(
        self, _c: mqtt.Client, _u: object, _f: object, code: ReasonCode, _p: object
    ) -> None:
        if not self._connack.done():
            self._connack.set_result(int(code.value))

    def _disconnected(
        self, _c: mqtt.Client, _u: object, _f: object, code: ReasonCode, _p: object
    ) -> None:
        reason = str(code.getName()) if code is not None else "connection lost"
        if not self._connack.done():
            self._connack.set_exception(ConnectionError(f"closed before CONNACK: {reason}"))
        if not self.closed.done():
            self.closed.set_result(reason)
        lost = PublishError(f"connection to the broker lost ({reason})")
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(lost)
        self.waiters.clear()

    def _published(
        self, _c: mqtt.Client, _u: object, mid: int, code: ReasonCode, _p: object
    ) -> None:
        waiter = self.waiters.pop(mid, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(int(code.value))
            return
        self._on_ack(self, mid, int(code.value))

    def _message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self._on_message(message.topic, bytes(message.payload), message.properties)

    async def wait_ack(self, mid: int) -> int:
        """Wait for the PUBACK of a message published outside the readings window."""
        waiter: asyncio.Future[int] = self._loop.create_future()
        self.waiters[mid] = waiter
        return await waiter

    def abort(self, reason: str = "aborted") -> None:
        """Drop the connection without a DISCONNECT (the will fires); idempotent."""
        if self._misc_task is not None:
            self._misc_task.cancel()
        sock = self._sock
        if sock is not None:
            if self._attached:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            self._writer_added = False
            with contextlib.suppress(OSError):
                sock.close()
            self._sock = None
        if not self.closed.done():
            self.closed.set_result(reason)
        if not self._connack.done():
            self._connack.set_exception(ConnectionError("aborted before CONNACK"))
            self._connack.exception()  # retrieved: nobody else will look at it

    async def disconnect(self) -> None:
        """Clean MQTT DISCONNECT (no will), then wait briefly for the socket to close."""
        self.client.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.shield(self.closed)
        self.abort()

    async def finish(self) -> None:
        """Stop the keepalive task after the connection ended."""
        if self._misc_task is not None:
            self._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc_task


class ConnectFailedError(PublishError):
    """One connection attempt failed; ``kind`` is what health reports."""

    def __init__(self, kind: str, detail: str) -> None:
        """Keep the kind (for backoff and health) apart from the human detail."""
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _make_client(
    cfg: MqttConfig, client_id: str, will_topic: str, context: HubTlsContext | None
) -> mqtt.Client:
    """A fresh paho client: protocol, last will, TLS or the explicit plaintext opt-in, login.

    Raises:
        TlsConfigError: TLS files unusable, plaintext not allowed, password unreadable.
    """
    mqtt5 = cfg.protocol == "5"
    protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.connect_timeout = cfg.connect_timeout_s
    # Our own window bounds in-flight messages; paho must never queue behind it.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    will_props = new_properties(PacketTypes.WILLMESSAGE) if mqtt5 else None
    if will_props is not None:
        will_props.ContentType = "application/json"
    client.will_set(
        will_topic, offline_payload("connection lost"), qos=1, retain=True, properties=will_props
    )
    if context is not None:
        client.tls_set_context(context)
    elif not cfg.insecure_plaintext:
        msg = "mqtt.tls is not set and mqtt.insecure_plaintext is false: refusing plaintext"
        raise TlsConfigError(msg)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, _read_password(cfg.password_file))
    return client


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise TlsConfigError(f"cannot read mqtt.password_file {path}: {exc}") from exc


async def connect_link(
    cfg: MqttConfig,
    client_id: str,
    will_topic: str,
    on_ack: Callable[[MqttLink, int, int], None],
    on_message: Callable[[str, bytes, Properties | None], None],
) -> MqttLink:
    """Connect a fresh client and wait for an accepting CONNACK.

    Raises:
        ConnectFailedError: with ``kind`` tls_error, auth_error, broker_refused,
            network_error, timeout or config_error. Nothing is left open.
    """
    try:
        context = None if cfg.tls is None else build_ssl_context(cfg.tls)
        client = _make_client(cfg, client_id, will_topic, context)
    except TlsConfigError as exc:
        raise ConnectFailedError("config_error", str(exc)) from exc
    link = MqttLink(client, on_ack, on_message)
    try:
        return await _open(link, cfg)
    except ConnectFailedError:
        link.abort()
        if context is not None:
            context.close_sockets()
        raise


# OpenSSL X509_V_ERR_* codes (x509_vfy.h) -> the status kind health reports.
_VERIFY_KINDS: Final[dict[int, str]] = {
    9: "tls_cert_not_yet_valid",  # clock before notBefore: often the hub's clock (no RTC)
    10: "tls_cert_expired",
    18: "tls_unknown_ca",  # self-signed certificate
    19: "tls_unknown_ca",  # self-signed certificate in chain
    20: "tls_unknown_ca",  # unable to get local issuer certificate
    21: "tls_unknown_ca",  # unable to verify the first certificate
    62: "tls_hostname_mismatch",
    64: "tls_hostname_mismatch",  # IP address mismatch
}
TLS_FAILURE_KINDS: Final = frozenset({"tls_error", "tls_client_rejected", *_VERIFY_KINDS.values()})


def tls_failure_kind(exc: ssl.SSLError) -> str:
    """A distinct status kind per certificate problem, so health says which one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_KINDS.get(exc.verify_code, "tls_error")
    return "tls_error"


async def _open(link: MqttLink, cfg: MqttConfig) -> MqttLink:
    try:
        async with asyncio.timeout(cfg.connect_timeout_s + 2.0):
            code = await link.open(
                cfg.host,
                cfg.port,
                cfg.keepalive_s,
                mqtt5=cfg.protocol == "5",
                thread_timeout_s=cfg.connect_timeout_s,
            )
    except ssl.SSLError as exc:  # includes certificate and host name mismatches
        raise ConnectFailedError(tls_failure_kind(exc), str(exc)) from exc
    except TimeoutError as exc:
        raise ConnectFailedError("timeout", "no CONNACK in time") from exc
    except ConnectionError as exc:
        if link.handshake_done and cfg.tls is not None:
            # TLS 1.3: the broker checks the client certificate after the handshake and
            # then just closes, so a refused (or missing) client certificate looks like
            # this. Saying so sends the technician to the certificate, not the network.
            raise ConnectFailedError(
                "tls_client_rejected",
                f"{exc}: the broker closed the connection right after the TLS handshake; "
                "does it require a client certificate, and is the hub's (mqtt.tls.cert_file) "
                "issued by a CA it trusts?",
            ) from exc
        raise ConnectFailedError("network_error", str(exc)) from exc
    except OSError as exc:
        raise ConnectFailedError("network_error", str(exc)) from exc
    if code >= FAILURE:
        kind = "auth_error" if code in AUTH_REFUSALS else "broker_refused"
        raise ConnectFailedError(kind, reason_text(code))
    return link
