"""The confirmation ``wardlink decommission`` publishes (reliability.md T22, ETSI 5.11-4).

The fleet learns that the hub left the patient from its own retained topics: info,
health and every device's status are cleared (an empty retained message deletes a
retained message), then the status topic gets a retained
``{"state": "decommissioned", ...}`` that stays until the next agent on this hub
publishes "online". Clearing goes first and the notice last, so a notice on the status
topic means everything before it was acknowledged. The connection uses the hub's own
broker settings and credentials (as the agent does; the fleet ACL already lets a hub
write these topics) and ends with a clean DISCONNECT, so the Last Will (``offline``) does
not replace the notice.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as mqtt

from agent.mqttlink import ConnectFailedError, MqttLink, connect_link
from agent.mqttprops import publish_properties
from agent.topics import JSON_CONTENT_TYPE, HubTopics, encode_json, reason_text

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from agent.config import Config

ACK_TIMEOUT_S: Final = 15.0
FAILURE: Final = 0x80  # MQTT 5: a PUBACK reason code at or above this is a refusal
# A device id from an old state file becomes part of a topic: no wildcards, no levels.
_TOPIC_SAFE: Final = re.compile(r"[^/+#\x00]{1,128}")


class NoticeError(Exception):
    """The confirmation could not be published; the message says why."""


def retained_topics(config: Config, device_ids: Iterable[str]) -> list[str]:
    """The hub's retained topics the notice clears (the status topic is overwritten)."""
    topics = HubTopics(config.mqtt.topic_prefix, config.hub.id)
    ids = {d.id for d in config.devices} | {d for d in device_ids if _TOPIC_SAFE.fullmatch(d)}
    return [topics.info, topics.health, *(topics.device_status(d) for d in sorted(ids))]


async def publish_notice(
    config: Config, notice: Mapping[str, Any], device_ids: Iterable[str]
) -> int:
    """Clear the hub's retained topics, then publish ``notice`` retained on its status.

    Returns:
        How many retained topics were cleared.

    Raises:
        NoticeError: no connection, a refusal (e.g. 0x87 Not authorized), or no PUBACK.
    """
    cfg = config.mqtt
    topics = HubTopics(cfg.topic_prefix, config.hub.id)
    client_id = cfg.client_id or config.hub.id
    try:
        link = await connect_link(cfg, client_id, topics.status, _ignore_ack, _ignore_message)
    except ConnectFailedError as exc:
        raise NoticeError(f"cannot connect to {cfg.host}:{cfg.port}: {exc}") from exc
    mqtt5 = cfg.protocol == "5"
    try:
        cleared = retained_topics(config, device_ids)
        for topic in cleared:
            await _publish(link, topic, b"", mqtt5=mqtt5)
        await _publish(link, topics.status, encode_json(notice), mqtt5=mqtt5)
        if link.closed.done():  # lost after the PUBACK: the Last Will may have replaced it
            msg = "connection lost after the notice: the broker may show 'offline' instead"
            raise NoticeError(msg)
        await link.disconnect()
        return len(cleared)
    finally:
        link.abort()
        await link.finish()


async def _publish(link: MqttLink, topic: str, payload: bytes, *, mqtt5: bool) -> None:
    props = publish_properties(JSON_CONTENT_TYPE, ()) if mqtt5 and payload else None
    info = link.client.publish(topic, payload, qos=1, retain=True, properties=props)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise NoticeError(f"{topic}: publish refused by paho: {mqtt.error_string(info.rc)}")
    try:
        async with asyncio.timeout(ACK_TIMEOUT_S):
            code = await _ack_or_close(link, info.mid)
    except TimeoutError as exc:
        raise NoticeError(f"{topic}: no PUBACK within {ACK_TIMEOUT_S:.0f} s") from exc
    if code >= FAILURE:
        raise NoticeError(f"{topic}: the broker refused it: {reason_text(code)}")


async def _ack_or_close(link: MqttLink, mid: int) -> int:
    """The PUBACK reason code, or NoticeError when the connection ends first."""
    ack = asyncio.ensure_future(link.wait_ack(mid))
    ends: set[asyncio.Future[Any]] = {ack, link.closed}
    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    if ack.done():
        return ack.result()
    ack.cancel()
    raise NoticeError(f"connection lost before the PUBACK: {link.closed.result()}")


def _ignore_ack(_link: MqttLink, _mid: int, _code: int) -> None:
    """Every publish here waits for its own PUBACK; nothing else is in flight."""


def _ignore_message(_topic: str, _payload: bytes, _props: object) -> None:
    """Nothing is subscribed."""
