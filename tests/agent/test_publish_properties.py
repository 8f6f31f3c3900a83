"""The readings message's MQTT 5 properties: our packing must be paho's, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.mqttprops import publish_properties

texts = st.text(max_size=300)


@given(st.text(max_size=200), st.lists(st.tuples(texts, texts), max_size=8))
def test_packed_properties_equal_paho(content_type: str, pairs: list[tuple[str, str]]) -> None:
    ours = publish_properties(content_type, tuple(pairs))
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    reference.ContentType = content_type
    if pairs:
        reference.UserProperty = pairs
    assert ours.pack() == reference.pack()  # type: ignore[no-untyped-call]
    # Still reads like paho's (a debug log prints it; a subscriber's view is the same).
    assert str(ours) == str(reference)


def test_long_property_is_refused_clearly() -> None:
    too_long = "x" * 70_000
    with pytest.raises(ValueError, match="longer than 65535 bytes"):
        publish_properties("application/json", (("wardlink-format", too_long),))
