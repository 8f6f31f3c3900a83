"""The compact encoder's shortcuts read and write exactly what the long way does.

A stream's template reads the stream's stored bodies exactly as body_fields does.

The compact encoder trusts a template match instead of parsing: a body the template
matches must have the template's fields except its numbers, and the groups must be those
numbers. Anything a template cannot stand for gets no template (and is parsed).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta, timezone

import pytest

from agent.outbox_codec import body_fields, encode_body
from agent.payloads.context import id_base64url, ids_base64url
from agent.payloads.stream_template import make_template
from agent.readings import Kind, Quantity, Reading
from tests.payloads.factory import hub_time, reading_of, spo2_stream


def _body(reading: Reading) -> str:
    return encode_body(reading)


def _samples(count: int) -> list[Reading]:
    """Stream samples with the natural key a stream sample has (made of its own id)."""
    samples = [s.reading for s in spo2_stream(count)]
    return [
        dataclasses.replace(r, natural_key=f"{r.device.device_id}:{r.kind}:id:{r.reading_id}")
        for r in samples
    ]


def _with_values(reading: Reading, *values: float | None) -> Reading:
    quantities = tuple(
        dataclasses.replace(q, value=v, special=None if v is not None else "nres")
        for q, v in zip(reading.values, values, strict=True)
    )
    return dataclasses.replace(reading, values=quantities)


def test_a_streams_template_reads_its_other_samples_numbers() -> None:
    samples = _samples(5)
    first = _body(samples[0])
    template = make_template(first, body_fields(first))
    assert template is not None
    values = (
        (91.0, 60.0, 0.75),
        (100, 250.5, 1e-7),
        (-0.0, 2**70, 1e20),
        (97.0, 72.0, 1.5),
    )
    for reading, numbers in zip(samples[1:], values, strict=True):
        body = _body(_with_values(reading, *numbers))
        match = template.match(body)
        assert match is not None
        fields = body_fields(body)
        parsed = [q[1] for q in fields.values] + [fields.received, fields.monotonic_ns]
        assert [json.loads(group) for group in match.groups()] == parsed


def test_a_sample_that_differs_in_more_than_numbers_does_not_match() -> None:
    sample = _samples(1)[0]
    template = make_template(_body(sample), body_fields(_body(sample)))
    assert template is not None
    others = [
        dataclasses.replace(sample, values=(Quantity("spo2", 97.0, "%"),)),
        dataclasses.replace(sample, values=(Quantity("spo2", 97.0, "1"), *sample.values[1:])),
        _with_values(sample, None, 72.0, 1.5),  # a special where a number was
        dataclasses.replace(sample, status=("marginal_perfusion",)),
        dataclasses.replace(sample, extra={"protocol": "nonin_df7"}),
        dataclasses.replace(sample, received=hub_time(synced=False)),
    ]
    for other in others:
        assert template.match(_body(other)) is None, other


def test_a_special_is_part_of_the_template_text() -> None:
    sample = _with_values(_samples(1)[0], 97.0, None, 1.5)
    template = make_template(_body(sample), body_fields(_body(sample)))
    assert template is not None
    assert template.value_groups == (0, None, 1)
    assert template.match(_body(_with_values(sample, 88.0, None, 2.5))) is not None


@pytest.mark.parametrize(
    "change",
    [
        {"device_seq": 7},
        {"device_time": "2026-11-27T09:28:00"},
        {"device_clock_offset_s": 1.5},
        {"natural_key": "oximeter:spo2:record:42"},
    ],
)
def test_samples_with_their_own_fields_get_no_template(change: dict[str, object]) -> None:
    reading = dataclasses.replace(reading_of(Kind.SPO2), **change)  # type: ignore[arg-type]
    body = _body(reading)
    assert make_template(body, body_fields(body)) is None


def test_non_utc_receipt_and_non_finite_values_get_no_template() -> None:
    sample = _samples(1)[0]
    offset = hub_time(sample.received.utc.astimezone(timezone(timedelta(hours=1))))
    non_utc = dataclasses.replace(sample, received=offset, effective_time=offset.utc)
    for reading in (non_utc, _with_values(sample, float("nan"), 72.0, 1.5)):
        body = _body(reading)
        assert make_template(body, body_fields(body)) is None


def test_a_messages_ids_in_one_call_are_each_ids_own_text() -> None:
    ids = [uuid.UUID(int=n * 0x0123456789ABCDEF0123456789ABCDEF % 2**128).bytes for n in range(40)]
    ids += [bytes(16), b"\xff" * 16]
    assert ids_base64url(ids) == [id_base64url(i) for i in ids]
    # Not all 16 bytes (never stored, but not assumed either): each on its own.
    odd = [b"\x01" * 16, b"\x02" * 15]
    assert ids_base64url(odd) == [id_base64url(i) for i in odd]
