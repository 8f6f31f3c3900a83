"""IEEE-11073 SFLOAT/FLOAT and Date Time, against the vectors in ble-profiles.md §1."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError
from drivers._codecs.ieee11073 import (
    DateTimeFields,
    MedFloat,
    Special,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    sfloat_from_raw,
    sfloat_to_raw,
)

SFLOAT_VECTORS = [
    ("0102", "513"),
    ("0172", "5130000000"),
    ("01f2", "51.3"),
    ("65f0", "10.1"),
    ("6ef1", "36.6"),
    ("37c0", "0.0055"),
    ("ff0f", "-1"),
    ("0110", "10"),
    ("e8f3", "100.0"),
    ("6400", "100"),
    # Special patterns are reserved only with exponent 0: 0xF7FF is 2047 x 10^-1 (§12.18).
    ("fff7", "204.7"),
    # The exponent is two's complement, not excess-8 (§12.1): 0x8062 is 98e-8, not 98.
    ("6280", "0.00000098"),
]


@pytest.mark.parametrize(("wire", "expected"), SFLOAT_VECTORS)
def test_sfloat_vectors_decode_exactly(wire: str, expected: str) -> None:
    decoded = decode_sfloat(bytes.fromhex(wire))
    assert decoded == MedFloat(Decimal(expected))
    assert decoded.as_float() == float(expected)


def test_sfloat_keeps_the_declared_precision_without_float_noise() -> None:
    temperature = decode_sfloat(bytes.fromhex("6ef1"))
    assert str(temperature.value) == "36.6"
    assert repr(temperature.as_float()) == "36.6"
    assert str(decode_sfloat(bytes.fromhex("e8f3")).value) == "100.0"


@pytest.mark.parametrize(
    ("wire", "special"),
    [
        ("ff07", Special.NAN),
        ("0008", Special.NRES),
        ("fe07", Special.POS_INF),
        ("0208", Special.NEG_INF),
        ("0108", Special.RESERVED),
    ],
)
def test_sfloat_specials_are_never_numbers(wire: str, special: Special) -> None:
    decoded = decode_sfloat(bytes.fromhex(wire))
    assert decoded == MedFloat(None, special)
    assert decoded.as_float() is None
    assert encode_sfloat(decoded) == bytes.fromhex(wire)


FLOAT_VECTORS = [
    ("b00e00fe", "37.60"),
    ("6d0100ff", "36.5"),
    ("87d612fe", "12345.67"),
    ("01020304", "1971210000"),
    ("010203ff", "19712.1"),
]


@pytest.mark.parametrize(("wire", "expected"), FLOAT_VECTORS)
def test_float_vectors_decode_exactly(wire: str, expected: str) -> None:
    assert decode_float(bytes.fromhex(wire)) == MedFloat(Decimal(expected))


@pytest.mark.parametrize(
    ("wire", "special"),
    [
        ("ffff7f00", Special.NAN),
        ("00008000", Special.NRES),
        ("feff7f00", Special.POS_INF),
        ("02008000", Special.NEG_INF),
        ("01008000", Special.RESERVED),
    ],
)
def test_float_specials(wire: str, special: Special) -> None:
    assert decode_float(bytes.fromhex(wire)) == MedFloat(None, special)
    assert encode_float(MedFloat(None, special)) == bytes.fromhex(wire)


@pytest.mark.parametrize("wire", ["", "01", "010203"])
def test_sfloat_wrong_length_is_a_decode_error(wire: str) -> None:
    with pytest.raises(DecodeError, match=r"sfloat: expected 2 bytes, got"):
        decode_sfloat(bytes.fromhex(wire))


def test_float_wrong_length_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"float: expected 4 bytes, got 3"):
        decode_float(b"\x01\x02\x03")


@given(st.integers(0, 0xFFFF))
def test_every_sfloat_is_mantissa_times_ten_to_exponent(raw: int) -> None:
    decoded = sfloat_from_raw(raw)
    if raw in {0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801}:
        assert decoded.special is not None
        return
    mantissa = (raw & 0xFFF) - 0x1000 if raw & 0x800 else raw & 0xFFF
    exponent = (raw >> 12) - 16 if raw >> 12 >= 8 else raw >> 12
    assert decoded.value == Decimal(mantissa) * Decimal(10) ** exponent
    if abs(mantissa) <= 2045:
        # Any ordinary value re-encodes to the very same bits (exponent kept).
        assert sfloat_to_raw(decoded) == raw


def test_encoding_never_rounds_silently() -> None:
    # 123.45 needs 5 significant digits; SFLOAT has 12 bits of mantissa.
    with pytest.raises(ValueError, match=r"cannot be represented exactly"):
        encode_sfloat(MedFloat.of("123.45"))
    assert encode_sfloat(MedFloat.of("1E+10")) == bytes.fromhex("e873")  # 1000 x 10^7
    assert encode_float(MedFloat.of("36.5")) == bytes.fromhex("6d0100ff")


def test_date_time_known_and_unknown() -> None:
    stamp = DateTimeFields(2026, 11, 27, 10, 15, 30)
    assert stamp.to_datetime() == datetime(2026, 11, 27, 10, 15, 30)  # noqa: DTZ001
    assert stamp.encode() == bytes.fromhex("ea070b1b0a0f1e")
    assert DateTimeFields.from_datetime(datetime(2026, 11, 27, 10, 15, 30, 999)) == stamp  # noqa: DTZ001


@pytest.mark.parametrize(
    "fields",
    [
        (0, 11, 27, 10, 0, 0),  # year not known (clock never set)
        (2026, 0, 27, 10, 0, 0),  # month not known
        (2026, 11, 0, 10, 0, 0),  # day not known
        (2026, 13, 1, 10, 0, 0),  # month 13
        (9999, 2, 31, 0, 0, 0),  # not a real date (peers accept it, §12.17)
        (2026, 11, 27, 24, 0, 0),  # hour 24
        (772, 1, 1, 0, 0, 0),  # before 1582
        (2026, 11, 27, 10, 60, 0),  # minute 60
    ],
)
def test_date_time_that_is_not_a_date_gives_no_datetime(fields: tuple[int, ...]) -> None:
    stamp = DateTimeFields(*fields)
    assert stamp.to_datetime() is None
