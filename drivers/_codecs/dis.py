r"""Device Information Service (0x180A): strings, System ID, PnP ID, regulatory list.

Characteristics: utf8s strings, System ID 0x2A23, PnP ID 0x2A50 and the IEEE 11073-20601
Regulatory Certification Data List 0x2A2A.

Spec: ble-profiles.md §8.3. Strings are utf8s: devices pad them with NULs, so the text is
cut at the first NUL (what follows a NUL is buffer garbage in every trace we know of); bytes
that are not UTF-8 are kept as ``\xNN`` escapes rather than failing. 0x2A2A content is
MDER, i.e. big-endian, unlike every other GATT field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.errors import DecodeError
from drivers._codecs._wire import Reader

DIS_STRING_UUIDS: Final[dict[int, str]] = {
    0x2A29: "manufacturer",
    0x2A24: "model",
    0x2A25: "serial_number",
    0x2A27: "hardware_revision",
    0x2A26: "firmware",
    0x2A28: "software_revision",
}
CONTINUA_AUTH_BODY: Final = 2
CONTINUA_VERSION_STRUCT: Final = 1


@dataclass(frozen=True, slots=True)
class SystemId:
    """Decoded System ID: 40-bit manufacturer identifier and 24-bit OUI."""

    manufacturer_id: int
    oui: int

    def __str__(self) -> str:
        """The 64-bit id as 16 hex digits, OUI first (0x123456FFFE9ABCDE -> "123456FFFE9ABCDE")."""
        return f"{self.oui:06X}{self.manufacturer_id:010X}"


@dataclass(frozen=True, slots=True)
class PnpId:
    """Decoded PnP ID (0x2A50)."""

    vendor_id_source: int
    vendor_id: int
    product_id: int
    product_version: int


@dataclass(frozen=True, slots=True)
class RegCertEntry:
    """One RegCertData entry: authorising body, structure type and raw value.

    For a Continua version structure, ``continua_version`` is (major, minor) and
    ``device_classes`` the certified device class list entries.
    """

    auth_body: int
    struct_type: int
    value: bytes
    continua_version: tuple[int, int] | None = None
    device_classes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class RegCertDataList:
    """Decoded Regulatory Certification Data List (0x2A2A); ``raw_hex`` for storage."""

    entries: tuple[RegCertEntry, ...]
    raw_hex: str


def decode_dis_string(data: bytes) -> str:
    """Decode a DIS utf8s string: cut at the first NUL, escape invalid UTF-8."""
    text = bytes(data).split(b"\x00", 1)[0]
    return text.decode("utf-8", errors="backslashreplace")


def decode_system_id(data: bytes) -> SystemId:
    """Decode System ID (0x2A23): exactly 8 bytes, manufacturer id then OUI, both LE."""
    reader = Reader(data, "system_id")
    manufacturer = reader.uint(5, "manufacturer_id")
    oui = reader.uint(3, "oui")
    reader.expect_end()
    return SystemId(manufacturer, oui)


def decode_pnp_id(data: bytes) -> PnpId:
    """Decode PnP ID (0x2A50): exactly 7 bytes."""
    reader = Reader(data, "pnp_id")
    value = PnpId(
        reader.uint(1, "vendor_id_source"),
        reader.uint(2, "vendor_id"),
        reader.uint(2, "product_id"),
        reader.uint(2, "product_version"),
    )
    reader.expect_end()
    return value


def _be(reader: Reader, size: int, field: str) -> int:
    return int.from_bytes(reader.take(size, field), "big")


def _continua_version(value: bytes) -> tuple[tuple[int, int], tuple[int, ...]]:
    reader = Reader(value, "regulatory.continua_version")
    major, minor = _be(reader, 1, "major"), _be(reader, 1, "minor")
    count, length = _be(reader, 2, "class_count"), _be(reader, 2, "class_length")
    if length != count * 2:
        raise DecodeError("regulatory.class_length", f"expected {count * 2}, got {length}")
    classes = tuple(_be(reader, 2, "device_class") for _ in range(count))
    reader.expect_end()
    return (major, minor), classes


def _entry(reader: Reader) -> RegCertEntry:
    auth_body, struct_type = _be(reader, 1, "auth_body"), _be(reader, 1, "struct_type")
    value = reader.take(_be(reader, 2, "value_length"), "value")
    if auth_body == CONTINUA_AUTH_BODY and struct_type == CONTINUA_VERSION_STRUCT:
        version, classes = _continua_version(value)
        return RegCertEntry(auth_body, struct_type, value, version, classes)
    return RegCertEntry(auth_body, struct_type, value)


def decode_regulatory_list(data: bytes) -> RegCertDataList:
    """Decode 0x2A2A (MDER RegCertDataList): count, length, then ``count`` entries."""
    reader = Reader(data, "regulatory")
    count, length = _be(reader, 2, "count"), _be(reader, 2, "length")
    if length != reader.remaining():
        raise DecodeError("regulatory.length", f"expected {reader.remaining()}, got {length}")
    entries = tuple(_entry(reader) for _ in range(count))
    reader.expect_end()
    return RegCertDataList(entries, bytes(data).hex())
