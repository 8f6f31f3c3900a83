"""sd_notify against a fake NOTIFY_SOCKET: a blocked loop or a stalled probe stops the pings."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, watchdog_loop


class FakeSystemd:
    """An AF_UNIX datagram socket like systemd's, recording (monotonic time, message)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode()))

    def pings(self) -> list[float]:
        return [t for t, m in self.received if m == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def _notifier(fake: FakeSystemd, watchdog_usec: int = 200_000) -> Notifier:
    return Notifier({"NOTIFY_SOCKET": str(fake.path), "WATCHDOG_USEC": str(watchdog_usec)})


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.is_enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready()  # must not raise


def test_ready_and_stopping_reach_systemd(fake_systemd: FakeSystemd) -> None:
    notifier = _notifier(fake_systemd)
    notifier.ready("outbox open")
    notifier.stopping()
    deadline = time.monotonic() + 2
    while len(fake_systemd.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m for _, m in fake_systemd.received] == ["READY=1\nSTATUS=outbox open", "STOPPING=1"]
    assert notifier.watchdog_interval_s == pytest.approx(0.1)  # half of WATCHDOG_USEC


async def _healthy() -> bool:
    return True


async def test_blocked_event_loop_stops_the_pings(fake_systemd: FakeSystemd) -> None:
    notifier = _notifier(fake_systemd)
    task = asyncio.create_task(watchdog_loop(notifier, _healthy))
    await asyncio.sleep(0.5)
    blocked_from = time.monotonic()
    time.sleep(1.0)  # the agent hangs: nothing on the loop can run
    blocked_until = time.monotonic()
    await asyncio.sleep(0.5)
    task.cancel()
    pings = fake_systemd.pings()
    before = [t for t in pings if t < blocked_from]
    during = [t for t in pings if blocked_from + 0.05 < t < blocked_until]
    after = [t for t in pings if t > blocked_until]
    assert len(before) >= 2
    assert during == []
    assert len(after) >= 2  # pings resume once the loop runs again


async def test_stalled_progress_probe_withholds_pings(fake_systemd: FakeSystemd) -> None:
    notifier = _notifier(fake_systemd)
    stalled = asyncio.Event()

    async def probe() -> bool:
        if stalled.is_set():
            await asyncio.sleep(3600)  # e.g. the outbox executor is wedged
        return True

    task = asyncio.create_task(watchdog_loop(notifier, probe, probe_timeout_s=0.2))
    await asyncio.sleep(0.4)
    stalled.set()
    stalled_at = time.monotonic()
    await asyncio.sleep(0.8)
    task.cancel()
    assert any(t < stalled_at for t in fake_systemd.pings())
    assert [t for t in fake_systemd.pings() if t > stalled_at + 0.15] == []
