"""Current Time, Date Time, Local Time, Battery Level and Device Information (§1.3, §8)."""

from __future__ import annotations

import pytest

from agent.errors import DecodeError
from drivers._codecs.battery import BatteryLevel, decode_battery_level
from drivers._codecs.cts import (
    CurrentTime,
    LocalTimeInformation,
    decode_current_time,
    decode_date_time,
    decode_local_time_information,
)
from drivers._codecs.dis import (
    PnpId,
    RegCertDataList,
    RegCertEntry,
    SystemId,
    decode_dis_string,
    decode_pnp_id,
    decode_regulatory_list,
    decode_system_id,
)
from drivers._codecs.ieee11073 import DateTimeFields


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_current_time() -> None:
    assert decode_current_time(h("ea070b1b0a0f1e 05 80 01")) == CurrentTime(
        date_time=DateTimeFields(2026, 11, 27, 10, 15, 30),
        day_of_week=5,
        fractions256=128,
        adjust_reason=("manual_time_update",),
    )


def test_current_time_rfu_day_of_week_is_kept_not_rejected() -> None:
    assert decode_current_time(h("ea070b1b0a0f1e 09 00 00")).day_of_week == 9


@pytest.mark.parametrize("wire", ["ea070b1b0a0f1e0580", "ea070b1b0a0f1e05800100"])
def test_current_time_is_exactly_10_bytes(wire: str) -> None:
    with pytest.raises(DecodeError, match=r"current_time"):
        decode_current_time(h(wire))


def test_date_time_fixed_length_and_invalid_month_kept_raw() -> None:
    assert decode_date_time(h("ea070d1b0a0f1e")) == DateTimeFields(2026, 13, 27, 10, 15, 30)
    assert decode_date_time(h("ea070d1b0a0f1e")).to_datetime() is None
    with pytest.raises(DecodeError, match=r"date_time.length: expected 7 bytes, got 8"):
        decode_date_time(h("ea070b1b0a0f1e00"))


def test_local_time_information() -> None:
    assert decode_local_time_information(h("04 04")) == LocalTimeInformation(4, 4)
    assert decode_local_time_information(h("fc 00")) == LocalTimeInformation(-4, 0)
    assert decode_local_time_information(h("80 ff")) == LocalTimeInformation(None, None)


def test_battery_level() -> None:
    assert decode_battery_level(h("64")) == BatteryLevel(100)
    assert decode_battery_level(h("00")) == BatteryLevel(0)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("65", "battery_level.percent: expected 0..100, got 101"),
        ("", "battery_level.percent: expected 1 byte"),
        ("6400", "battery_level.length"),
    ],
)
def test_battery_level_invalid(wire: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_battery_level(h(wire))


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (b"Wahoo Fitness" + b"\x00" * 7, "Wahoo Fitness"),  # NUL padding is common
        (b"ab\x00cd", "ab"),  # what follows a NUL is buffer garbage
        (b"\xffab", "\\xffab"),  # invalid UTF-8 kept visible, never a crash
        ("Ωmega 3".encode(), "Ωmega 3"),
        (b"", ""),
    ],
)
def test_dis_strings(wire: bytes, text: str) -> None:
    assert decode_dis_string(wire) == text


def test_system_id_from_the_spec_example() -> None:
    decoded = decode_system_id(h("DE BC 9A FE FF 56 34 12"))
    assert decoded == SystemId(manufacturer_id=0xFFFE9ABCDE, oui=0x123456)
    assert str(decoded) == "123456FFFE9ABCDE"
    with pytest.raises(DecodeError, match=r"system_id.oui"):
        decode_system_id(h("DE BC 9A FE FF 56 34"))


def test_pnp_id() -> None:
    assert decode_pnp_id(h("02 5e04 0100 0301")) == PnpId(2, 0x045E, 1, 0x0103)


def test_regulatory_list_is_big_endian_mder() -> None:
    continua = h("01 05 0001 0002 1007")
    wire = h("0002 0012 02 01 0008") + continua + h("02 02 0002 8000")
    assert decode_regulatory_list(wire) == RegCertDataList(
        entries=(
            RegCertEntry(2, 1, continua, continua_version=(1, 5), device_classes=(0x1007,)),
            RegCertEntry(2, 2, h("8000")),
        ),
        raw_hex=wire.hex(),
    )


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ("0001 0005 02 01 0008 00", "regulatory.value"),
        ("0001 0009 02 01 0004 01 05 0001", "regulatory.length"),
        ("0001 000a 02 01 0006 01 05 0002 0002", "regulatory.class_length"),
        ("0002 0006 02 02 0002 8000", "regulatory.auth_body"),
    ],
)
def test_regulatory_list_malformed(wire: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_regulatory_list(h(wire))
    assert caught.value.field == field
