"""Pure decoders for Bluetooth SIG GATT health characteristics.

Every module here is I/O-free: it imports no asyncio, bleak, serial, sqlite3 or paho and
never reads the clock. Each decoder takes the characteristic value as ``bytes`` and returns
a frozen dataclass, or raises ``agent.errors.DecodeError`` naming the field, what was
expected and what arrived. ``drivers._codecs.registry.DECODERS`` lists them all by UUID.
"""

from __future__ import annotations
