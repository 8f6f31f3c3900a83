"""The publisher: outbox -> MQTT 5 (QoS 1) -> PUBACK reason code -> outbox.

It never owns data. On every (re)connect it republishes whatever the outbox says is
pending, in ``seq`` order, then follows new captures. A row leaves "pending" only on a
PUBACK whose reason code is < 0x80 (0x10 "No matching subscribers" is accepted with a
warning); a code >= 0x80 marks the rows rejected, raises an alarm and never deletes
them, and the other rows keep flowing (reliability.md R2, poison isolation).
See docs/publisher.md for why paho is driven from asyncio rather than through aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.crashpoints import crash_point
from agent.errors import OutboxError, PublishError
from agent.mqttlink import (
    TLS_FAILURE_KINDS,
    ConnectFailedError,
    MqttLink,
    connect_link,
    new_properties,
    publish_properties,
)
from agent.outbox_codec import decode_pending
from agent.status import StatusPublisher
from agent.topics import HubTopics, offline_payload, reason_text, utc_iso

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from paho.mqtt.properties import Properties

    from agent.clock import Clock, HubTime
    from agent.config import Config, MqttConfig
    from agent.health import Health
    from agent.outbox import Outbox
    from agent.outbox_codec import PendingPage, PendingRow, ReadingContext
    from agent.payloads import EncodedBatch
    from agent.readings import StoredReading

    # Any callable encoder works (tests use their own); one with ``encode_rows`` (the
    # real ones, agent/payloads) is given the outbox rows undecoded.
    Encoder = Callable[[Sequence[StoredReading], HubTime], EncodedBatch]
    RowEncoder = Callable[
        [Sequence[PendingRow], Mapping[int, ReadingContext], HubTime], EncodedBatch
    ]
    MessageHandler = Callable[[str, bytes, Properties | None], None]

log = logging.getLogger(__name__)

FLUSH_POLL_S: Final = 0.25
FAILURE: Final = 0x80
NO_SUBSCRIBERS: Final = 0x10
# After a PUBACK could not be recorded (disk full), wait this long before republishing.
MARK_RETRY_S: Final = 5.0
# A reconnect finding at least this many pending readings logs the drain's progress.
DRAIN_REPORT_MIN: Final = 1000
DRAIN_REPORT_S: Final = 10.0
# Rows fetched per outbox query: many messages' worth, so one reading per message does
# not mean one SQLite query per message (a page is at most a few MB in memory).
PAGE_READINGS: Final = 2000
# Connection failures that retrying soon cannot fix: wait the maximum backoff.
PERMANENT_KINDS: Final = frozenset({"auth_error", "config_error", *TLS_FAILURE_KINDS})


# A readings message waiting for its PUBACK: the seqs of the rows it carries.
_InFlight = tuple[int, ...]


def backoff_delay_s(attempt: int, kind: str, cfg: MqttConfig, rng: random.Random) -> float:
    """Full-jitter exponential backoff; permanent failures wait near the maximum.

    Pure apart from ``rng``. ``attempt`` counts failures since the last good connect.
    """
    if kind in PERMANENT_KINDS:
        return rng.uniform(cfg.reconnect_max_s / 2, cfg.reconnect_max_s)
    cap_s = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(attempt, 30))
    return rng.uniform(cfg.reconnect_min_s, max(cfg.reconnect_min_s, cap_s))


class Publisher:
    """Drains the outbox to the broker and keeps the hub's retained topics current."""

    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        encode: Encoder,
        health: Health,
        clock: Clock,
        info: Mapping[str, Any],
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Store collaborators; no I/O until ``run``."""
        self._cfg = config.mqtt
        self._client_id = config.mqtt.client_id or config.hub.id
        self._outbox = outbox
        encode_rows: RowEncoder | None = getattr(encode, "encode_rows", None)
        self._encode_rows = encode_rows or functools.partial(_encode_decoded, encode)
        self._health = health
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self.topics = HubTopics(config.mqtt.topic_prefix, config.hub.id)
        self._mqtt5 = config.mqtt.protocol == "5"
        self._link: MqttLink | None = None
        self._inflight: dict[int, _InFlight] = {}
        self._window_open = asyncio.Event()  # set when a message left the window
        # PUBACKs not yet recorded, and a wake-up for the task recording them. A list and
        # an Event, not an asyncio.Queue: one PUBACK is one append (a burst, one wake-up).
        self._acked: list[tuple[_InFlight, int]] = []
        self._acks_ready = asyncio.Event()
        self._acks_closing = False
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._stop = asyncio.Event()
        self._rescan = False
        self._idle = asyncio.Event()  # set while there is no connection
        self._idle.set()
        self._close_timeout_s = 5.0
        self._goodbye_reason = "shutdown"
        # After a connection died with messages in flight, send one message and wait for
        # its PUBACK before opening the window: Mosquitto 2.0.11 closes the connection
        # right after a PUBACK 0x87, losing the PUBACKs of pipelined messages, so only a
        # lone message is sure to get its reason code (and a poison row gets isolated).
        self._probe = False
        self._probe_acked = asyncio.Event()
        self._session_acks = 0
        self._subscriptions: dict[str, MessageHandler] = {}
        self.status = StatusPublisher(
            publish=self._publish_retained,
            is_connected=lambda: self.is_connected,
            health=health,
            outbox=outbox,
            clock=clock,
            topics=self.topics,
            info=info,
            paho_version=paho.mqtt.__version__,
            interval_s=config.health.interval_s,
            outbox_dir=config.storage.path.parent,
        )

    @property
    def is_connected(self) -> bool:
        """Whether a broker connection is up right now."""
        return self._link is not None and self._link.is_connected

    def notify_new_readings(self) -> None:
        """Wake the publisher: the capture path committed new readings."""
        self._wake.set()

    def rescan(self) -> None:
        """Restart from the oldest pending row (after ``Outbox.requeue_rejected``)."""
        self._rescan = True
        self._wake.set()

    def add_subscription(self, topic: str, handler: MessageHandler) -> None:
        """Subscribe ``handler`` to ``topic`` now (if connected) and on every connect."""
        self._subscriptions[topic] = handler
        if self._link is not None and self.is_connected:
            self._subscribe(self._link, [topic])

    async def run(self) -> None:
        """Connect, drain and reconnect until ``close`` or cancellation."""
        self._warn_once()
        # A failure in either task (e.g. OutboxError from the outbox) is not swallowed:
        # the other is cancelled and the error propagates to the supervisor.
        status_task = asyncio.create_task(self.status.run(), name="status")
        loop_task = asyncio.create_task(self._connection_loop(), name="publisher-connection")
        tasks = (status_task, loop_task)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    async def _connection_loop(self) -> None:
        # A random delay before the first connect: a fleet rebooting after a power cut
        # must not hit the broker in the same second (reliability.md R12).
        await self._sleep(self._rng.uniform(0, self._cfg.reconnect_min_s))
        failures = 0
        while not self._stop.is_set():
            kind = await self._session()
            failures = 0 if kind is None else failures + 1
            if not self._stop.is_set():
                delay_s = backoff_delay_s(failures, kind or "lost", self._cfg, self._rng)
                await self._sleep(delay_s)

    async def flush(self) -> None:
        """Return once no reading is pending (all PUBACKed or rejected)."""
        while True:
            self._progress.clear()
            if (await self._outbox.stats()).pending == 0:
                return
            # stats() counts rows; asking after every PUBACK would compete with the
            # drain for the outbox's one connection. Check on progress, at most 4x/s.
            await asyncio.sleep(FLUSH_POLL_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._progress.wait()

    async def close(self, timeout_s: float = 5.0, *, reason: str = "shutdown") -> None:
        """Publish retained offline (``reason``), wait for its PUBACK (bounded), disconnect."""
        self._goodbye_reason = reason
        self._stop.set()
        self._wake.set()
        self._close_timeout_s = timeout_s
        # The connection's own task says goodbye (offline status, DISCONNECT); wait for it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s + 3.0):
                await self._idle.wait()

    async def _goodbye(self, link: MqttLink, timeout_s: float) -> None:
        payload = offline_payload(self._goodbye_reason, self._clock.now().utc)
        try:
            async with asyncio.timeout(timeout_s):
                await self.publish_message(self.topics.status, payload, retain=True)
        except (TimeoutError, PublishError) as exc:
            log.warning("offline status not confirmed before disconnect: %s", exc)
        await link.disconnect()

    async def publish_message(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int:
        """Publish through the live connection; return the PUBACK reason code (0 for QoS 0).

        Raises:
            PublishError: not connected, paho refused the message, or the connection was
                lost before the PUBACK.
        """
        link = self._link
        if link is None or not link.is_connected:
            raise PublishError("not connected to the broker")
        props = self._properties(properties) if self._mqtt5 and properties else None
        info = link.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishError(f"publish refused by paho: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return 0
        return await link.wait_ack(info.mid)

    async def _publish_retained(self, topic: str, payload: bytes) -> int:
        return await self.publish_message(topic, payload, retain=True, properties=_JSON)

    def _properties(self, values: Mapping[str, Any]) -> Properties:
        props = new_properties(PacketTypes.PUBLISH)
        for name, value in values.items():
            setattr(props, name, value)
        return props

    def _warn_once(self) -> None:
        if self._cfg.tls is None and self._cfg.insecure_plaintext:
            log.warning(
                "mqtt.insecure_plaintext: readings travel UNENCRYPTED to %s (lab use only)",
                self._cfg.host,
            )
        if not self._mqtt5:
            log.warning(
                "mqtt.protocol 3.1.1: the broker cannot report a refused reading "
                "(e.g. not authorised); such readings will be marked sent. Use MQTT 5."
            )

    async def _sleep(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stop.wait()

    # --- one connection ------------------------------------------------------------

    async def _session(self) -> str | None:
        """One connection attempt and, if it succeeds, its life. Returns the failure kind."""
        counters = self._health.publish
        counters.connect_attempts += 1
        counters.connection = "connecting"
        try:
            link = await connect_link(
                self._cfg, self._client_id, self.topics.status, self._on_ack, self._dispatch
            )
        except ConnectFailedError as exc:
            counters.connection = exc.kind
            counters.last_connect_error = exc.kind
            counters.last_connect_error_detail = exc.detail
            self._health.raise_alarm("broker_unreachable", exc.kind)
            log.warning("broker connection failed (%s): %s", exc.kind, exc.detail)
            return exc.kind
        self._link = link
        self._idle.clear()
        counters.reconnects += 1 if counters.connects else 0
        counters.connects += 1
        counters.connection = "online"
        self._health.clear_alarm("broker_unreachable")
        log.info("connected to the broker %s:%s", self._cfg.host, self._cfg.port)
        self._session_acks = 0
        progress = asyncio.create_task(self._report_drain_progress(), name="drain-progress")
        try:
            lost_inflight = await self._serve(link)
        finally:
            progress.cancel()
            self._link = None
            link.abort()
            self._idle.set()
            await link.finish()
            counters.connection = "offline"
        if self._stop.is_set():
            log.info("disconnected from the broker (shutdown)")
        else:
            log.warning("broker connection lost: %s", link.closed.result())
        if lost_inflight:
            self._probe = True
            if not self._session_acks:
                # Dropped again before any PUBACK: back off like a failed connect rather
                # than reconnecting at the minimum delay forever.
                return "unstable"
        return None

    async def _serve(self, link: MqttLink) -> bool:
        """Announce online, subscribe, then drain until the connection ends.

        Returns whether messages were still waiting for their PUBACK at the end.
        """
        now = self._clock.now()
        link.client.publish(
            self.topics.status,
            self.status.online(now),
            qos=1,
            retain=True,
            properties=self._properties(_JSON) if self._mqtt5 else None,
        )
        self._subscribe(link, list(self._subscriptions))
        self.status.trigger_full()
        self._acks_closing = False
        feeder = asyncio.create_task(self._feed(link), name="publisher-feed")
        acker = asyncio.create_task(self._ack_loop(), name="publisher-acks")
        try:
            stop = asyncio.ensure_future(self._stop.wait())
            ends: set[asyncio.Future[Any]] = {feeder, link.closed, stop}
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if link.closed.done():
                self._health.publish.connection = "offline"
            if self._stop.is_set() and link.is_connected:
                await self._goodbye(link, self._close_timeout_s)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            # PUBACKs already received are marked before anything is republished.
            self._acks_closing = True
            self._acks_ready.set()
            await acker
            lost_inflight = self._drop_inflight()
        if not feeder.cancelled() and feeder.exception() is not None:
            raise feeder.exception()  # type: ignore[misc]
        return lost_inflight

    def _drop_inflight(self) -> bool:
        # Unacknowledged rows stay pending in the outbox and go again on reconnect.
        had_inflight = bool(self._inflight)
        self._inflight.clear()
        self._window_open.set()
        return had_inflight

    def _subscribe(self, link: MqttLink, topics: list[str]) -> None:
        if not topics:
            return
        if self._mqtt5:
            # Retain handling 2: the broker never replays a retained message at subscribe
            # time, so a stale retained request (e.g. reload-config) cannot run again on
            # every reconnect. Inbound topics are requests and receipts: never retained.
            options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            link.client.subscribe([(t, options) for t in topics])
        else:
            link.client.subscribe([(t, 1) for t in topics])

    def _dispatch(self, topic: str, payload: bytes, props: Properties | None) -> None:
        for pattern, handler in self._subscriptions.items():
            if mqtt.topic_matches_sub(pattern, topic):
                handler(topic, payload, props)

    async def _feed(self, link: MqttLink) -> None:
        """Publish pending rows in seq order, at most ``inflight_window`` messages unacked.

        While one page is being published the next is already being read, so outbox
        latency (a group commit, a busy SD card) overlaps with the network.
        """
        after_seq = 0
        prefetch: asyncio.Task[PendingPage] | None = None
        try:
            while True:
                if prefetch is None:
                    self._wake.clear()
                    if self._rescan:
                        after_seq, self._rescan = 0, False
                    page = await self._outbox.pending_rows(after_seq=after_seq, limit=PAGE_READINGS)
                else:
                    page, prefetch = await prefetch, None
                rows = page.rows
                if not rows:
                    await self._wake.wait()
                    continue
                after_seq = rows[-1][0]
                if len(rows) == PAGE_READINGS and not self._rescan:
                    prefetch = asyncio.create_task(
                        self._outbox.pending_rows(after_seq=after_seq, limit=PAGE_READINGS)
                    )
                for start in range(0, len(rows), self._cfg.batch_size):
                    chunk = rows[start : start + self._cfg.batch_size]
                    if not await self._publish_batch(link, chunk, page.contexts):
                        return
        finally:
            if prefetch is not None:
                prefetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prefetch

    async def _publish_batch(
        self, link: MqttLink, rows: Sequence[PendingRow], contexts: Mapping[int, ReadingContext]
    ) -> bool:
        """Publish one message of rows; False when the connection can take no more."""
        encoded = self._encode_rows(rows, contexts, self._clock.now())
        props = None
        if self._mqtt5:
            props = publish_properties(encoded.content_type, encoded.user_properties)
        while len(self._inflight) >= self._cfg.inflight_window:
            self._window_open.clear()
            await self._window_open.wait()
        info = link.client.publish(
            self.topics.readings, encoded.payload, qos=1, retain=False, properties=props
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # Not connected any more (the loss is reported by the link) or paho's queue
            # is full, which our window should make impossible: end this connection.
            log.warning("paho refused a publish: %s", mqtt.error_string(info.rc))
            link.abort()
            return False
        self._inflight[info.mid] = tuple([row[0] for row in rows])
        crash_point("after_publish_before_puback", link.client.loop_write)
        counters = self._health.publish
        counters.messages_published += 1
        counters.readings_published += len(rows)
        if self._probe:
            self._probe_acked.clear()
            await self._probe_acked.wait()
        return True

    def _on_ack(self, _link: MqttLink, mid: int, code: int) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        self._window_open.set()
        self._session_acks += 1
        self._probe = False
        self._probe_acked.set()
        self._acked.append((entry, code))
        self._acks_ready.set()

    async def _ack_loop(self) -> None:
        """Mark PUBACKed rows, several PUBACKs per outbox write.

        Ends once ``_acks_closing`` is set and every PUBACK received so far is recorded;
        PUBACKs arriving later wait in ``_acked`` for the next connection's loop.
        """
        while True:
            await self._acks_ready.wait()
            self._acks_ready.clear()
            items, self._acked = self._acked, []
            if items:
                try:
                    await self._record_acks(items)
                except OutboxError as exc:
                    self._on_mark_failed(exc)
                self._progress.set()
            if self._acks_closing and not self._acked:
                return

    async def _report_drain_progress(self) -> None:
        """After an outage, say how the backlog drains (counts only), every 10 s."""
        backlog = (await self._outbox.stats()).pending
        if backlog < DRAIN_REPORT_MIN:
            return
        log.info("draining a backlog of %d readings", backlog)
        while True:
            await asyncio.sleep(DRAIN_REPORT_S)
            pending = (await self._outbox.stats()).pending
            if pending < DRAIN_REPORT_MIN:
                log.info("backlog drained (%d readings pending)", pending)
                return
            log.info(
                "draining: %d readings pending, %.0f readings/s",
                pending,
                max(0, backlog - pending) / DRAIN_REPORT_S,
            )
            backlog = pending

    def _on_mark_failed(self, exc: OutboxError) -> None:
        """A PUBACK could not be recorded (disk full, I/O error): the rows stay pending.

        They were accepted by the broker, but the outbox still says pending, so they are
        published again (duplicates with the same reading_id, which the backend dedupes)
        once writing works. The rescan waits ``MARK_RETRY_S`` so a full disk does not turn
        into a publish-PUBACK-fail hot loop.
        """
        self._health.raise_alarm("outbox_write_failed", f"PUBACK not recorded: {exc}")
        log.error("could not record PUBACKs (%s); those readings stay pending", exc)
        asyncio.get_running_loop().call_later(MARK_RETRY_S, self.rescan)

    async def _record_acks(self, items: list[tuple[_InFlight, int]]) -> None:
        counters = self._health.publish
        sent: list[int] = []
        rejected: dict[int, list[int]] = {}
        for seqs, code in items:
            if code < FAILURE:
                sent.extend(seqs)
                counters.messages_acked += 1
                counters.readings_acked += len(seqs)
                counters.no_subscriber_warnings += code == NO_SUBSCRIBERS
            else:
                rejected.setdefault(code, []).extend(seqs)
                counters.messages_rejected += 1
        if sent:
            counters.last_publish_at = utc_iso(self._clock.now().utc)
            crash_point("after_puback_before_mark")
            await self._outbox.mark_sent(sent)
            self._health.clear_alarm("outbox_write_failed")
        for code, refused in rejected.items():
            reason = reason_text(code)
            await self._outbox.mark_rejected(refused, reason)
            counters.readings_rejected += len(refused)
            counters.last_reject_reason = reason
            self._health.raise_alarm(
                "readings_rejected", f"{counters.readings_rejected} readings rejected: {reason}"
            )
            log.error("broker refused %d readings: %s; kept as rejected", len(refused), reason)


def _encode_decoded(
    encode: Encoder,
    rows: Sequence[PendingRow],
    contexts: Mapping[int, ReadingContext],
    now: HubTime,
) -> EncodedBatch:
    """An encoder of StoredReadings fed outbox rows: decode them first."""
    return encode(decode_pending(rows, contexts), now)


_JSON: Final[dict[str, Any]] = {"ContentType": "application/json"}
