"""The serial protocol ids a technician may write in the config.

Apart from ``drivers/serial/protocols`` so that validating a config (before READY=1)
does not import and build every decoder; ``PROTOCOLS`` has one entry per id.
"""

from __future__ import annotations

from typing import Literal

ProtocolId = Literal[
    "nonin-df2",
    "nonin-df7",
    "nonin-df8",
    "nonin-df13",
    "nonin-ascii",
    "contec-v5",
    "contec-v7",
    "masimo-ascii",
]
