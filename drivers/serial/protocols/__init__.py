"""Serial oximetry protocols, keyed by the id a technician writes in the config.

Pure: decoders import no asyncio, serial, sqlite3 or paho and never read the clock.
``PROTOCOLS[id]`` gives everything the transport and driver need: a decoder factory,
the link settings, the commands the device needs, and the default aggregation interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from drivers.serial.protocol_ids import ProtocolId
from drivers.serial.protocols.base import Decoder, DecoderStats, Sample
from drivers.serial.protocols.contec import (
    V7_KEEPALIVE,
    V7_START,
    ContecV5Decoder,
    ContecV7Decoder,
)
from drivers.serial.protocols.masimo import MasimoAsciiDecoder
from drivers.serial.protocols.nonin import (
    NoninAsciiDecoder,
    NoninDf8Decoder,
    NoninDf13Decoder,
    NoninPacketDecoder,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "PROTOCOLS",
    "Decoder",
    "DecoderStats",
    "LinkSettings",
    "ProtocolId",
    "ProtocolSpec",
    "Sample",
]


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Serial line settings. Flow control is always off: 0x11/0x13 are data (§7.1)."""

    baudrate: int
    bytesize: int = 8
    parity: Literal["N", "O", "E"] = "N"
    stopbits: int = 1


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """Everything protocol-specific the transport and driver need.

    Attributes:
        protocol_id: the config id.
        manufacturer: for the reading's DeviceIdentity.
        make_decoder: a fresh incremental decoder.
        link: serial settings.
        init_commands: sent after every (re)open, in order.
        keepalive_command: sent every ``keepalive_period_s`` while open, if any.
        keepalive_period_s: seconds between keep-alives.
        default_interval_s: aggregation interval for a stream.
        has_perfusion_index: whether readings carry a perfusion_index quantity.
        spot: True when every sample is a spot check (no aggregation).
    """

    protocol_id: ProtocolId
    manufacturer: str
    make_decoder: Callable[[], Decoder]
    link: LinkSettings
    init_commands: tuple[bytes, ...] = ()
    keepalive_command: bytes | None = None
    keepalive_period_s: float = 5.0
    default_interval_s: float = 1.0
    has_perfusion_index: bool = False
    spot: bool = False


def nonin_format_select(data_format: int) -> bytes:
    """9560 format-select command ``02 70 02 02 ZZ 03`` (§1.2); the choice is kept in NVRAM."""
    return bytes([0x02, 0x70, 0x02, 0x02, data_format, 0x03])


_NONIN_LINK: Final = LinkSettings(9600)


def _nonin_format(
    protocol_id: ProtocolId,
    make_decoder: Callable[[], Decoder],
    data_format: int,
    *,
    spot: bool = False,
) -> ProtocolSpec:
    """A Nonin binary data format: 9600 8N1, the format selected again on every open."""
    init_commands = (nonin_format_select(data_format),)
    return ProtocolSpec(
        protocol_id, "Nonin", make_decoder, _NONIN_LINK, init_commands=init_commands, spot=spot
    )


PROTOCOLS: Final[dict[str, ProtocolSpec]] = {
    "nonin-df2": _nonin_format("nonin-df2", lambda: NoninPacketDecoder(status_index=1), 0x02),
    "nonin-df7": _nonin_format("nonin-df7", lambda: NoninPacketDecoder(status_index=0), 0x07),
    "nonin-df8": _nonin_format("nonin-df8", NoninDf8Decoder, 0x08),
    "nonin-df13": _nonin_format("nonin-df13", NoninDf13Decoder, 0x0D, spot=True),
    # 2500/8500 send 9 data bits with the 9th as mark, which reads as 8N1 (§1.6).
    "nonin-ascii": ProtocolSpec("nonin-ascii", "Nonin", NoninAsciiDecoder, _NONIN_LINK),
    # V5.1 is 19200 8O1; V5.0A units run 4800 8O1: set `baudrate: 4800` in the config.
    "contec-v5": ProtocolSpec("contec-v5", "Contec", ContecV5Decoder, LinkSettings(19200, 8, "O")),
    "contec-v7": ProtocolSpec(
        "contec-v7",
        "Contec",
        ContecV7Decoder,
        LinkSettings(115200),
        init_commands=(V7_START,),
        keepalive_command=V7_KEEPALIVE,
        keepalive_period_s=5.0,
        has_perfusion_index=True,
    ),
    "masimo-ascii": ProtocolSpec(
        "masimo-ascii",
        "Masimo",
        MasimoAsciiDecoder,
        LinkSettings(9600),
        has_perfusion_index=True,
    ),
}
