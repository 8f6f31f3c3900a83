"""MQTT 5 PUBLISH properties, packed by us: paho's ``Properties`` is the slow part.

Pure: strings in, paho ``Properties`` objects (with their wire bytes) out; no I/O.
"""

from __future__ import annotations

import functools
from typing import Final

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def new_properties(packet_type: int) -> Properties:
    """An empty paho property set for ``packet_type`` (typed wrapper)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped


# MQTT 5 property identifiers (MQTT 5.0 section 2.2.2.2) for what a readings message has.
_CONTENT_TYPE_ID: Final = b"\x03"
_USER_PROPERTY_ID: Final = b"\x26"
_UTF8_MAX_BYTES: Final = 0xFFFF


class _PackedProperties(Properties):
    """PUBLISH properties whose wire form is computed by us, once.

    paho's ``Properties`` builds two dicts in ``__init__`` and scans every property name
    (with string replaces) in ``pack``: ~100 us a message, more than the rest of a
    publish. Instances are made from a prototype (one real ``Properties`` per content
    type), so they still read like paho's (``ContentType``, ``UserProperty``, ``str``).
    """

    _packed: bytes = b"\x00"

    def pack(self) -> bytes:
        """The wire form (same bytes as paho's ``pack``; tests compare the two)."""
        return self._packed


def _utf8(text: str) -> bytes:
    """An MQTT UTF-8 Encoded String: two-byte length, then the bytes."""
    data = text.encode()
    if len(data) > _UTF8_MAX_BYTES:
        raise ValueError(f"MQTT string longer than {_UTF8_MAX_BYTES} bytes")
    return len(data).to_bytes(2, "big") + data


def _var_int(value: int) -> bytes:
    """An MQTT Variable Byte Integer (7 bits a byte, high bit = more follows)."""
    if 0 <= value < 0x80:  # noqa: PLR2004 - one byte: a readings message's properties
        return bytes((value,))
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | 0x80 if value else digit)
        if not value:
            return bytes(out)


@functools.lru_cache(maxsize=64)
def _user_property_name(name: str) -> bytes:
    # The names are a handful of constants; the values (seq numbers) vary per message.
    return _USER_PROPERTY_ID + _utf8(name)


@functools.lru_cache(maxsize=16)
def _prototype(content_type: str) -> tuple[_PackedProperties, bytes]:
    props = _PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    return props, _CONTENT_TYPE_ID + _utf8(content_type)


def publish_properties(
    content_type: str, user_properties: tuple[tuple[str, str], ...]
) -> Properties:
    """Properties for a readings message: content type, then the user properties in order.

    Raises:
        ValueError: a string is longer than MQTT allows (65,535 bytes).
    """
    prototype, body = _prototype(content_type)
    parts = [body]
    for name, value in user_properties:
        parts.append(_user_property_name(name))
        parts.append(_utf8(value))
    packed = b"".join(parts)
    props = _PackedProperties.__new__(_PackedProperties)
    # Past paho's __setattr__ checks: the values are known good and never changed after.
    props.__dict__.update(prototype.__dict__)
    if user_properties:
        object.__setattr__(props, "UserProperty", list(user_properties))
    object.__setattr__(props, "_packed", _var_int(len(packed)) + packed)
    return props
