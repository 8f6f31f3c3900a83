"""Plain stream samples read from their stored text, one template per stream.

The stored bodies of a continuous stream (agent/outbox_codec.py, body layout 1) differ
only in their numbers: the values, the receipt time and the monotonic time. A template
is such a body with those numbers replaced by regex groups. A body it matches in full
holds the template's fields except for those numbers, so it is read with one regex
match instead of a JSON parse (the larger part of encoding a compact row).

Templates are made only from a body ``body_fields`` has parsed, and a template is kept
only if it matches that body and gives back the parsed numbers. Anything else (device
times, device sequence numbers, non-UTC times, NaN values) is never templated: callers
parse it with ``body_fields``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agent.outbox_codec import BODY_LAYOUT

if TYPE_CHECKING:
    from agent.outbox_codec import BodyFields

# This module writes layout 1's field order itself; a new layout must be taught here.
_LAYOUT_TEMPLATED: Final = 1
if BODY_LAYOUT != _LAYOUT_TEMPLATED:
    raise ImportError(f"stream_template knows body layout 1, not {BODY_LAYOUT}")

# A JSON integer as Python writes one (no "-0": it would read back as 0) and any JSON
# number (json's own grammar).
_INT: Final = r"(0|-?[1-9][0-9]*)"
_NUMBER: Final = r"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
# How the outbox writes a body (outbox_codec: compact separators, ASCII escapes).
_WRITER: Final = json.JSONEncoder(separators=(",", ":"))
_SLOT: Final = "\x00number\x00"
_SLOT_JSON: Final = _WRITER.encode(_SLOT)


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """A stream's body text with its numbers as groups.

    Attributes:
        pattern: Matches the bodies of the stream but their last part (``tail``). Its
            groups are the values that are numbers, in order, then the receipt time (UTC
            microseconds), then the monotonic time, as JSON text.
        tail: The constant text after the monotonic time: compared as a string, which
            is cheaper than the regex engine's character by character.
        fields: The body the template was made from. Every body the pattern matches
            has these fields except the values, ``received`` and ``monotonic_ns``.
        value_groups: Per quantity, the index of its group, or None for a quantity
            with no value (its special, in ``fields``, is part of the pattern).
    """

    pattern: re.Pattern[str]
    tail: str
    fields: BodyFields
    value_groups: tuple[int | None, ...]

    def match(self, body: str) -> re.Match[str] | None:
        """The match of ``body`` if it is one of the stream's bodies, else None."""
        tail = self.tail
        if not body.endswith(tail):
            return None
        return self.pattern.fullmatch(body, 0, len(body) - len(tail))


def make_template(body: str, fields: BodyFields) -> BodyTemplate | None:
    """A template of ``body``, which ``body_fields`` parsed as ``fields``; None if not plain.

    Plain: UTC receipt time, no separate effective time, id-form natural key, no device
    time, sequence number or clock offset, values finite numbers or null.
    """
    if not is_plain(fields):
        return None
    values: list[list[Any]] = []
    value_groups: list[int | None] = []
    number_count = 0
    for name, value, unit, special in fields.values:
        if value is None:
            value_groups.append(None)
            values.append([name, None, unit, special])
        else:
            value_groups.append(number_count)
            number_count += 1
            values.append([name, _SLOT, unit, special])
    head: list[Any] = [
        fields.kind,
        values,
        _SLOT,
        _SLOT,
        fields.clock_synced,
        fields.time_source,
    ]
    # Layout 1 leaves off trailing empty fields (see outbox_codec._encode_body).
    tail: list[Any] = [None, None, None, None, None, fields.time_flags, fields.status, fields.extra]
    while tail and tail[-1] in (None, [], {}):
        tail.pop()
    pieces = _WRITER.encode(head + tail).split(_SLOT_JSON)
    if len(pieces) != number_count + 3:
        return None  # a field's own text holds the slot marker: not worth templating
    groups = [_NUMBER] * number_count + [_INT, _INT]
    # Literal text and groups alternate; the text after the last group is the tail.
    regex = re.escape(pieces[0]) + "".join(
        group + re.escape(piece) for group, piece in zip(groups[:-1], pieces[1:-1], strict=True)
    )
    regex += groups[-1]
    template = BodyTemplate(re.compile(regex), pieces[-1], fields, tuple(value_groups))
    return template if _reads_back(template, body, fields) else None


def is_plain(fields: BodyFields) -> bool:
    """Whether a body of ``fields`` can be templated (see ``make_template``)."""
    return (
        type(fields.received) is int
        and type(fields.monotonic_ns) is int
        and type(fields.clock_synced) is bool
        and fields.effective is None
        and fields.natural_key is None
        and fields.device_time is None
        and fields.device_seq is None
        and fields.device_clock_offset_s is None
        and all(_is_plain_value(quantity) for quantity in fields.values)
    )


def _is_plain_value(quantity: list[Any]) -> bool:
    value = quantity[1]
    if type(value) is float:
        return value - value == 0.0  # finite: NaN and infinities are not JSON numbers
    return type(value) is int or value is None


def _reads_back(template: BodyTemplate, body: str, fields: BodyFields) -> bool:
    """Whether ``template`` matches ``body`` and its groups hold ``fields``' numbers."""
    match = template.match(body)
    if match is None:
        return False
    groups = match.groups()
    numbers = [quantity[1] for quantity in fields.values if quantity[1] is not None]
    expected = [*numbers, fields.received, fields.monotonic_ns]
    read = [json.loads(group) for group in groups]
    return read == expected and [type(v) for v in read] == [type(v) for v in expected]
