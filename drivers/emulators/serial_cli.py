"""``wardlink simulate serial``: run one emulated serial oximeter until Ctrl-C.

Prints the pty path (and the stable link, if asked for) to put in a config's ``port:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Final

from drivers.emulators.serial import PtySerialDevice
from drivers.serial.protocols import PROTOCOLS

EX_USAGE: Final = 64


def simulate_serial_main(protocol: str, link: str | None) -> int:
    """Emulate ``protocol`` on a new pty until interrupted; returns the exit status.

    Args:
        protocol: one of the ``PROTOCOLS`` ids, e.g. ``nonin-df8``.
        link: an optional symlink path kept pointing at the pty (like /dev/serial/by-id).
    """
    if protocol not in PROTOCOLS:
        sys.stderr.write(
            f"unknown serial protocol {protocol!r}; choose one of: {', '.join(sorted(PROTOCOLS))}\n"
        )
        return EX_USAGE
    link_path = Path(link) if link else None
    if link_path is not None and not link_path.parent.is_dir():
        sys.stderr.write(f"cannot create link {link_path}: {link_path.parent} is not a directory\n")
        return EX_USAGE
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(protocol, link_path))
    return 0


async def _run(protocol: str, link: Path | None) -> None:
    device = PtySerialDevice(protocol, link=link)
    device.plug()
    sys.stdout.write(f"{protocol} oximeter on {device.path}\n")
    if link is not None:
        sys.stdout.write(f"stable link {link} -> {device.path}\n")
    sys.stdout.write(f"config:  port: {device.port}\n         protocol: {protocol}\n")
    sys.stdout.write("streaming; Ctrl-C to stop\n")
    sys.stdout.flush()
    try:
        await device.run()
    finally:
        device.close()
