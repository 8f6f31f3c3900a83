"""Shared fixtures: one real Mosquitto per session on a free loopback port."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from agent.localbroker import MosquittoBroker, find_mosquitto

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A Mosquitto for the whole session (never the machine's own on :1883)."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is required for the tests: apt-get install -y mosquitto")
    instance = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.kill()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker of the test's own, for tests that stop, kill or reconfigure it."""
    instance = MosquittoBroker(workdir=tmp_path / "mosquitto")
    yield instance
    instance.kill()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to the test, so tests sharing a broker never see each other."""
    return f"test-{uuid.uuid4().hex[:10]}"
