"""Annotated types that driver settings models share."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator

_MAC: Final = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")


def _check_mac(value: str) -> str:
    normalised = value.strip().upper().replace("-", ":")
    if not _MAC.fullmatch(normalised):
        msg = (
            f"{value!r} is not a Bluetooth address; expected six hex pairs "
            "separated by colons, e.g. A4:C1:38:12:34:56"
        )
        raise ValueError(msg)
    return normalised


MacAddress = Annotated[str, AfterValidator(_check_mac)]
"""A Bluetooth device address, normalised to upper case with colons."""
