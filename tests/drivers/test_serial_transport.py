"""The serial transport on real ptys: paced reads of a stream, prompt reads after silence."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from typing import TYPE_CHECKING

import pytest

from drivers.emulators.serial import PtySerialDevice
from drivers.serial.protocols import PROTOCOLS
from drivers.serial.transport import SerialTransport
from tests.agent.pubharness import eventually

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from agent.errors import TransientDeviceError
    from drivers.serial.protocols import Sample

pytestmark = pytest.mark.pty


class Received:
    """What the transport handed over: each chunk, and the loss if any."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lost: list[TransientDeviceError] = []

    def on_data(self, data: bytes) -> None:
        self.chunks.append(data)

    def on_lost(self, error: TransientDeviceError) -> None:
        self.lost.append(error)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A raw pty: the test writes to the master, the transport opens the slave's path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "port"
    link.symlink_to(os.ttyname(slave))
    yield master, link
    os.close(master)
    os.close(slave)


@contextlib.asynccontextmanager
async def contec_stream(tmp_path: Path) -> AsyncIterator[tuple[PtySerialDevice, Received]]:
    """An emulated Contec streaming 60 packets a second into an open transport."""
    device = PtySerialDevice("contec-v5", link=tmp_path / "contec")
    device.plug()
    streaming = asyncio.create_task(device.run())
    received = Received()
    transport = SerialTransport(
        device.port,
        PROTOCOLS["contec-v5"].link,
        on_data=received.on_data,
        on_lost=received.on_lost,
    )
    await transport.open()
    try:
        yield device, received
    finally:
        await transport.close()
        streaming.cancel()
        device.close()
    assert not transport.is_open


async def test_a_stream_is_read_in_few_chunks_with_every_byte_in_order(tmp_path: Path) -> None:
    # A Contec sends 60 packets a second; reading each one as it comes woke the agent
    # 60 times a second. Paced reads take a quarter second of packets at a time.
    decoder = PROTOCOLS["contec-v5"].make_decoder()
    samples: list[Sample] = []
    calls = 0
    async with contec_stream(tmp_path) as (_device, received):
        while len(samples) < 120:  # two seconds of packets
            await eventually(lambda: received.chunks)
            chunks, received.chunks = received.chunks, []
            calls += len(chunks)
            for chunk in chunks:
                samples += decoder.feed(chunk)
    assert decoder.stats.bad_frames == decoder.stats.bytes_skipped == 0
    assert {s.spo2 for s in samples} <= set(range(94, 100))
    assert len(samples) / calls >= 5  # about 15 per read; 1 when read as they come
    assert received.lost == []


async def test_bytes_after_a_silence_are_read(pty_pair: tuple[int, Path]) -> None:
    master, port = pty_pair
    received = Received()
    transport = SerialTransport(
        port,
        PROTOCOLS["nonin-df8"].link,
        on_data=received.on_data,
        on_lost=received.on_lost,
        read_period_s=0.05,
    )
    await transport.open()
    try:
        os.write(master, b"first")
        await eventually(lambda: received.data == b"first")
        await asyncio.sleep(0.2)  # several read periods with nothing: back to waiting
        os.write(master, b"second")
        await eventually(lambda: received.data == b"firstsecond")
    finally:
        await transport.close()
    assert received.lost == []


async def test_an_unplug_while_streaming_is_reported_once(tmp_path: Path) -> None:
    async with contec_stream(tmp_path) as (device, received):
        await eventually(lambda: len(received.chunks) >= 3)  # reads are paced by now
        device.unplug()
        await eventually(lambda: received.lost)
        await asyncio.sleep(0.6)  # two more read periods: nothing else happens
    assert len(received.lost) == 1
    assert "check the USB cable" in str(received.lost[0])
