"""Remote requests: ``{prefix}/{hub}/request/{name}`` -> ``{prefix}/{hub}/response/{name}``.

The handler validates a request (``agent/requestschema.py``), runs it through a small
``AgentControl`` seam the composition root implements, and answers on the fixed response
topic, echoing the MQTT 5 correlation data and the body's ``transaction``.

Safety rules, and why:
- Nothing here can delete or expire a reading: ``AgentControl`` has no such operation, so
  no request, however crafted, can lose an unsent reading (DESIGN.md guarantees 1, 7).
- The response always goes to our own ``response/{name}`` topic. The MQTT 5 Response Topic
  property is ignored, so a request cannot steer the hub's publishes anywhere else (and
  the fleet ACL lets the hub publish only under its own prefix anyway).
- A request delivered with the retain flag (a retained request replayed at subscribe time)
  is ignored and counted: otherwise a stale ``reload-config`` would run on every reconnect.
- A request whose correlation data (or transaction) was already seen within the replay
  window is ignored and counted, so a duplicated QoS 1 delivery never runs twice.
- Requests run one at a time (reload and flush must not interleave); at most
  ``max_queued`` wait; more are dropped and counted (``busy``), never queued unbounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, Protocol

from agent.errors import AgentError
from agent.requestschema import (
    BadRequestError,
    LogLevelRequest,
    ParsedRequest,
    ReconnectDeviceRequest,
    ReloadConfigRequest,
    RequeueRejectedRequest,
    build_response,
    parse_request,
)
from agent.topics import JSON_CONTENT_TYPE, reason_text, utc_iso

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from paho.mqtt.properties import Properties

    from agent.clock import Clock
    from agent.topics import HubTopics

log = logging.getLogger(__name__)

REPLAY_WINDOW_S: Final = 600.0
MAX_REMEMBERED_IDS: Final = 4096  # bounded memory; older ids fall out before the window ends
MAX_QUEUED_REQUESTS: Final = 16
NS_PER_S: Final = 1_000_000_000
REASON_FAILURE: Final = 0x80  # MQTT 5: reason codes from 0x80 up are failures
MAX_NAME_CHARS: Final = 64  # longer request names are answered on response/invalid


class AgentControl(Protocol):
    """What a request may ask of the running agent. Implemented by ``agent/app.py``.

    There is deliberately no way to delete, purge or expire a reading through this seam.
    """

    def info(self) -> dict[str, Any]:
        """The retained info document (versions, config hash, device ids and drivers)."""
        ...

    async def health_now(self) -> dict[str, Any]:
        """A health snapshot made now (the same document as the retained health topic)."""
        ...

    def config_redacted(self) -> dict[str, Any]:
        """The running config with secrets and patient identifiers replaced."""
        ...

    async def reload_config(self, text: str | None) -> list[str]:
        """Validate and apply ``text`` (or re-read the config file when None).

        Returns every problem found; empty means the new config now runs. On any problem
        the running config must stay exactly as it was.
        """
        ...

    def device_ids(self) -> list[str]:
        """The ids of the configured devices."""
        ...

    async def reconnect_device(self, device_id: str) -> None:
        """Close and re-open the session of one configured device."""
        ...

    async def rescan(self) -> None:
        """Start a fresh discovery of the bound BLE devices."""
        ...

    async def requeue_rejected(self, seqs: Sequence[int] | None) -> int:
        """Move rejected readings (all, or only ``seqs``) back to pending; how many moved."""
        ...

    def set_log_level(self, level: str, duration_s: float) -> None:
        """Log at ``level`` for ``duration_s`` seconds, then return to the configured level."""
        ...

    async def flush(self) -> dict[str, Any]:
        """Publish pending readings now; return what was left (e.g. ``{"pending": 0}``)."""
        ...


class ResponsePublisher(Protocol):
    """The part of ``agent/publisher.py`` ``Publisher`` the handler needs."""

    async def publish_message(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int:
        """Publish one message and return its PUBACK reason code.

        Raises:
            PublishError: not connected, or the connection was lost before the PUBACK.
        """
        ...


class LogLevelOverride:
    """Set a logger's level for a bounded time, then put the configured level back.

    ``agent/app.py`` can implement ``AgentControl.set_log_level`` with this. A new request
    replaces the previous one's timer, so the level always reverts ``duration_s`` after the
    latest request.
    """

    def __init__(self, logger: logging.Logger, configured_level: str) -> None:
        """Remember which logger and what level to return to (no change yet)."""
        self._logger = logger
        self._configured_level = configured_level
        self._timer: asyncio.TimerHandle | None = None

    def apply(self, level: str, duration_s: float) -> None:
        """Switch now; revert after ``duration_s``. Must run on the event loop."""
        self.cancel()
        self._logger.setLevel(level)
        self._timer = asyncio.get_running_loop().call_later(duration_s, self.revert)
        log.warning("log level %s for %.0f s (remote request)", level, duration_s)

    def revert(self) -> None:
        """Back to the configured level now."""
        self.cancel()
        self._logger.setLevel(self._configured_level)

    def cancel(self) -> None:
        """Forget a pending revert (on shutdown, or before a new override)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RequestHandler:
    """Runs remote requests for one hub and answers them. All methods run on the loop."""

    def __init__(
        self,
        *,
        topics: HubTopics,
        control: AgentControl,
        responder: ResponsePublisher,
        clock: Clock,
        replay_window_s: float = REPLAY_WINDOW_S,
        max_queued: int = MAX_QUEUED_REQUESTS,
        counters: dict[str, int] | None = None,
    ) -> None:
        """Store collaborators; no I/O until a message arrives.

        ``counters`` is where the outcomes are counted (the health document's, so an
        operator sees refused and malformed requests remotely, across reloads).
        """
        self._topics = topics
        self._control = control
        self._responder = responder
        self._clock = clock
        self._replay_window_ns = int(replay_window_s * NS_PER_S)
        self._max_queued = max_queued
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {} if counters is None else counters
        self._actions: dict[str, Callable[[ParsedRequest], Awaitable[dict[str, Any]]]] = {
            "ping": self._ping,
            "info": self._info,
            "health": self._health,
            "config": self._config,
            "reload-config": self._reload_config,
            "reconnect-device": self._reconnect_device,
            "rescan": self._rescan,
            "requeue-rejected": self._requeue_rejected,
            "log-level": self._log_level,
            "flush": self._flush,
        }

    @property
    def subscription(self) -> str:
        """The only topic filter the hub subscribes to for requests: its own."""
        return f"{self._topics.base}/request/+"

    def response_topic(self, name: str) -> str:
        """Where the answer to request ``name`` goes."""
        return f"{self._topics.base}/response/{name}"

    def _count(self, counter: str) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + 1

    def on_message(
        self, topic: str, payload: bytes, properties: Properties | None, *, retain: bool = False
    ) -> None:
        """The subscription callback: starts handling in a task and returns at once."""
        if len(self._tasks) >= self._max_queued:
            self._count("busy")
            # Dropped, not answered: answering would itself need a task per request, and
            # a flood must not grow memory. The requester times out and may retry.
            log.warning("request dropped: %d requests already waiting", len(self._tasks))
            return
        task = asyncio.get_running_loop().create_task(
            self.handle(topic, payload, properties, retain=retain), name="request"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(
        self, topic: str, payload: bytes, properties: Properties | None, *, retain: bool = False
    ) -> None:
        """Validate, de-duplicate, run and answer one request."""
        prefix = f"{self._topics.base}/request/"
        if not topic.startswith(prefix):
            self._count("foreign_topic")  # never subscribed; a broker or wiring mistake
            log.warning("ignored a message on a topic that is not this hub's request topic")
            return
        self._count("received")
        name = topic.removeprefix(prefix)
        if retain:
            self._count("retained_ignored")
            log.warning("ignored a retained request %r (requests must not be retained)", name)
            return
        try:
            request = parse_request(name, payload)
        except BadRequestError as exc:
            self._count(exc.code)
            log.warning("request %r refused: %s", name[:MAX_NAME_CHARS], exc.code)
            await self._respond(name, properties, error=exc)
            return
        if self._is_replay(request, properties):
            self._count("replayed")
            log.warning("ignored a replayed %s request", name)
            return
        async with self._lock:
            await self._run(request, properties)

    async def _run(self, request: ParsedRequest, properties: Properties | None) -> None:
        try:
            data = await self._actions[request.name](request)
        except BadRequestError as exc:
            self._count(exc.code)
            await self._respond(
                request.name, properties, error=exc, transaction=request.transaction
            )
            return
        except AgentError as exc:
            self._count("failed")
            log.warning("request %s failed: %s", request.name, exc.__class__.__name__)
            error = BadRequestError("failed", str(exc), request.transaction)
            await self._respond(
                request.name, properties, error=error, transaction=request.transaction
            )
            return
        self._count("ok")
        log.info("request %s answered", request.name)
        await self._respond(request.name, properties, data=data, transaction=request.transaction)

    def _is_replay(self, request: ParsedRequest, properties: Properties | None) -> bool:
        correlation = _correlation(properties)
        if correlation is not None:
            key = ("c", correlation.hex())
        elif request.transaction is not None:
            key = ("t", f"{request.name}:{request.transaction!r}")
        else:
            return False  # nothing to recognise it by: every copy runs
        now_ns = self._clock.now().monotonic_ns
        while self._seen:
            oldest_key, seen_ns = next(iter(self._seen.items()))
            if now_ns - seen_ns <= self._replay_window_ns and len(self._seen) < MAX_REMEMBERED_IDS:
                break
            del self._seen[oldest_key]
        if key in self._seen:
            return True
        self._seen[key] = now_ns
        return False

    async def _respond(
        self,
        name: str,
        request_properties: Properties | None,
        *,
        data: dict[str, Any] | None = None,
        error: BadRequestError | None = None,
        transaction: object = None,
    ) -> None:
        if transaction is None and error is not None:
            transaction = error.transaction
        topic_name = name if _is_plain_level(name) else "invalid"
        payload = build_response(
            topic_name,
            now=self._clock.now().utc,
            data=data,
            error=error,
            transaction=transaction if isinstance(transaction, str | int) else None,
        )
        props: dict[str, Any] = {"ContentType": JSON_CONTENT_TYPE}
        correlation = _correlation(request_properties)
        if correlation is not None:
            props["CorrelationData"] = correlation
        try:
            code = await self._responder.publish_message(
                self.response_topic(topic_name), payload, qos=1, properties=props
            )
        except AgentError as exc:
            # The link dropped between request and answer; the requester times out and
            # may ask again (a new correlation id), nothing is lost on the hub.
            self._count("response_failed")
            log.warning("could not answer request %s: %s", topic_name, exc.__class__.__name__)
            return
        if code >= REASON_FAILURE:
            self._count("response_refused")  # e.g. 0x87: the broker ACL forbids the topic
            log.warning("the broker refused the response to %s: %s", topic_name, reason_text(code))

    async def aclose(self) -> None:
        """Cancel requests still running (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # The actions: each returns the response's ``data``.

    async def _ping(self, _request: ParsedRequest) -> dict[str, Any]:
        now = self._clock.now()
        return {"pong": True, "hub": self._topics.hub_id, "hub_time": utc_iso(now.utc)}

    async def _info(self, _request: ParsedRequest) -> dict[str, Any]:
        return self._control.info()

    async def _health(self, _request: ParsedRequest) -> dict[str, Any]:
        return await self._control.health_now()

    async def _config(self, _request: ParsedRequest) -> dict[str, Any]:
        return self._control.config_redacted()

    async def _reload_config(self, request: ParsedRequest) -> dict[str, Any]:
        assert isinstance(request.body, ReloadConfigRequest)  # noqa: S101 - by REQUEST_MODELS
        problems = await self._control.reload_config(request.body.config)
        if problems:
            log.warning(
                "reload-config refused: %d problems; still on the previous config", len(problems)
            )
            msg = "config rejected; the hub keeps running with its previous config: " + "; ".join(
                problems
            )
            raise BadRequestError("rejected", msg, request.transaction)
        log.warning("config reloaded by remote request")
        return {"applied": True}

    async def _reconnect_device(self, request: ParsedRequest) -> dict[str, Any]:
        assert isinstance(request.body, ReconnectDeviceRequest)  # noqa: S101
        device_id = request.body.device
        known = self._control.device_ids()
        if device_id not in known:
            msg = f"no device {device_id!r} on this hub; configured: {', '.join(known) or 'none'}"
            raise BadRequestError("invalid", msg, request.transaction)
        await self._control.reconnect_device(device_id)
        return {"device": device_id, "reconnecting": True}

    async def _rescan(self, _request: ParsedRequest) -> dict[str, Any]:
        await self._control.rescan()
        return {"rescanning": True}

    async def _requeue_rejected(self, request: ParsedRequest) -> dict[str, Any]:
        assert isinstance(request.body, RequeueRejectedRequest)  # noqa: S101
        moved = await self._control.requeue_rejected(request.body.seqs)
        return {"requeued": moved}

    async def _log_level(self, request: ParsedRequest) -> dict[str, Any]:
        assert isinstance(request.body, LogLevelRequest)  # noqa: S101
        body = request.body
        self._control.set_log_level(body.level, body.duration_s)
        return {"level": body.level, "duration_s": body.duration_s}

    async def _flush(self, _request: ParsedRequest) -> dict[str, Any]:
        return await self._control.flush()


def _correlation(properties: Properties | None) -> bytes | None:
    value = getattr(properties, "CorrelationData", None) if properties is not None else None
    return bytes(value) if isinstance(value, bytes | bytearray) and value else None


def _is_plain_level(name: str) -> bool:
    """A name safe to put in one topic level (no separators or wildcards)."""
    return 0 < len(name) <= MAX_NAME_CHARS and not any(ch in name for ch in "/+#")
