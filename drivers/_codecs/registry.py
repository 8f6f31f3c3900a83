"""One table: 16-bit characteristic UUID -> pure decoder.

Every decoder takes the characteristic value and returns a frozen dataclass (or ``str``
for DIS strings) or raises ``agent.errors.DecodeError``; nothing else escapes (a
hypothesis test feeds arbitrary bytes through every entry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from drivers._codecs import battery, bp, cts, dis, gls, hrs, hts, plx, racp, wss

if TYPE_CHECKING:
    from collections.abc import Callable

DECODERS: Final[dict[int, Callable[[bytes], object]]] = {
    0x2A08: cts.decode_date_time,
    0x2A0F: cts.decode_local_time_information,
    0x2A18: gls.decode_glucose_measurement,
    0x2A19: battery.decode_battery_level,
    0x2A1C: hts.decode_temperature_measurement,
    0x2A1D: hts.decode_temperature_type,
    0x2A1E: hts.decode_intermediate_temperature,
    0x2A23: dis.decode_system_id,
    0x2A24: dis.decode_dis_string,
    0x2A25: dis.decode_dis_string,
    0x2A26: dis.decode_dis_string,
    0x2A27: dis.decode_dis_string,
    0x2A28: dis.decode_dis_string,
    0x2A29: dis.decode_dis_string,
    0x2A2A: dis.decode_regulatory_list,
    0x2A2B: cts.decode_current_time,
    0x2A34: gls.decode_glucose_context,
    0x2A35: bp.decode_bp_measurement,
    0x2A36: bp.decode_intermediate_cuff_pressure,
    0x2A37: hrs.decode_heart_rate_measurement,
    0x2A49: bp.decode_bp_feature,
    0x2A50: dis.decode_pnp_id,
    0x2A51: gls.decode_glucose_feature,
    0x2A52: racp.decode_racp_response,
    0x2A5E: plx.decode_plx_spot_check,
    0x2A5F: plx.decode_plx_continuous,
    0x2A60: plx.decode_plx_features,
    0x2A9D: wss.decode_weight_measurement,
    0x2A9E: wss.decode_weight_scale_feature,
}


def decode(uuid16: int, data: bytes) -> object:
    """Decode ``data`` read from characteristic ``uuid16``.

    Raises:
        KeyError: No decoder is registered for ``uuid16`` (a programming error).
        DecodeError: The packet is malformed.
    """
    return DECODERS[uuid16](data)
