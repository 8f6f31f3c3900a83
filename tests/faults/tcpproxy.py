"""An asyncio TCP fault proxy for loopback tests: pass, delay, stall, blackhole, reset.

It sits between the hub and a real Mosquitto and breaks the link the way real networks
do, so the agent's own keepalive, backoff and resend logic face the fault for real:

- ``pass``: forward both ways unchanged.
- ``delay``: every chunk is held ``delay_s`` plus up to ``jitter_s`` (order kept), and
  with probability ``stall_p`` a chunk stalls for ``stall_s`` first, holding everything
  behind it, which is what a lost segment costs TCP (a retransmission timeout).
- ``blackhole``: a half-open link. Open connections are frozen: the sockets stay open,
  nothing is forwarded any more in either direction and nothing is closed (no FIN, no
  RST). New connections are accepted and frozen the same way. A frozen connection never
  comes back, as after a NAT or cellular path change; ``pass`` again serves only new ones.
- ``reset()``: abort every open connection with a TCP RST.

Counters (``accepted``, ``accept_times``) let tests bound reconnect attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "delay", "blackhole"]
CHUNK_BYTES = 65536


@dataclass
class LinkShape:
    """How ``delay`` mode treats each chunk."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    stall_p: float = 0.0
    stall_s: float = 0.0


@dataclass
class _Conn:
    """One proxied connection: the hub side and the broker side."""

    down_writer: asyncio.StreamWriter
    up_writer: asyncio.StreamWriter | None = None
    frozen: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Listen on a free loopback port and relay to ``target_port`` under a fault mode."""

    def __init__(self, target_port: int, *, seed: int = 1) -> None:
        """Store settings (no I/O until ``start``)."""
        self.target_port = target_port
        self.port = 0
        self.mode: Mode = "pass"
        self.shape = LinkShape()
        self.accepted = 0
        self.accept_times: list[float] = []  # time.monotonic() of each accepted connection
        self.bytes_up = 0  # hub -> broker, forwarded
        self.sent_by_hub = bytearray()  # every byte the hub sent (kept when ``record``)
        self.record = False
        self._rng = random.Random(seed)
        self._conns: list[_Conn] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start listening on 127.0.0.1 (an OS-chosen free port, kept in ``port``)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.reset()
        for conn in list(self._conns):
            await _cancel(conn.tasks)
        if self._server is not None:
            await self._server.wait_closed()

    def set_pass(self) -> None:
        """Forward unchanged (frozen connections stay frozen)."""
        self.mode = "pass"

    def set_delay(self, shape: LinkShape) -> None:
        """Delay, jitter and stall every chunk from now on."""
        self.shape = shape
        self.mode = "delay"

    def blackhole(self) -> None:
        """Freeze every open connection and every new one: half-open, nothing closed."""
        self.mode = "blackhole"
        for conn in self._conns:
            conn.frozen = True

    def reset(self) -> None:
        """Abort every open connection with RST (SO_LINGER 0), both sides."""
        for conn in list(self._conns):
            for writer in (conn.down_writer, conn.up_writer):
                if writer is not None:
                    _abort_with_rst(writer)
            conn.frozen = True

    @property
    def open_connections(self) -> int:
        """Connections not yet closed by either side."""
        return len(self._conns)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.accept_times.append(time.monotonic())
        conn = _Conn(down_writer=writer, frozen=self.mode == "blackhole")
        self._conns.append(conn)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                _abort_with_rst(writer)  # broker down: the hub sees a refused/reset link
                return
            conn.up_writer = up_writer
            conn.tasks = [
                asyncio.create_task(self._pump(conn, reader, up_writer, upstream=True)),
                asyncio.create_task(self._pump(conn, up_reader, writer, upstream=False)),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._conns.remove(conn)
            for side in (writer, conn.up_writer):
                if side is not None:
                    side.close()

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        """Copy one direction, chunk by chunk, under the current mode."""
        last_due = 0.0
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(CHUNK_BYTES):
                if conn.frozen:
                    continue  # read and dropped: the far side never hears of it
                if self.mode == "delay":
                    last_due = await self._hold(last_due)
                    if conn.frozen:
                        continue
                if upstream:
                    self.bytes_up += len(chunk)
                    if self.record:
                        self.sent_by_hub.extend(chunk)
                writer.write(chunk)
                await writer.drain()
            if not conn.frozen:
                writer.write_eof()  # pass a clean FIN on (not in blackhole)
            else:
                await asyncio.Event().wait()  # frozen: keep the other side's socket open

    async def _hold(self, last_due: float) -> float:
        """Sleep until this chunk is due; due times never go backwards (order kept)."""
        shape = self.shape
        now = time.monotonic()
        extra_s = shape.stall_s if self._rng.random() < shape.stall_p else 0.0
        due = max(last_due, now + shape.delay_s + self._rng.uniform(0, shape.jitter_s) + extra_s)
        await asyncio.sleep(max(0.0, due - now))
        return due


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
