"""Every registered BLE decoder: arbitrary bytes give a result or a DecodeError, nothing
else; and codec modules stay pure (no I/O libraries imported, no clock read).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import pkgutil
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import drivers._codecs
from agent.errors import DecodeError
from drivers._codecs.ieee11073 import DateTimeFields
from drivers._codecs.registry import DECODERS, decode

CODEC_DIR = Path(drivers._codecs.__file__).parent
CODEC_MODULES = sorted(
    f"drivers._codecs.{info.name}" for info in pkgutil.iter_modules([str(CODEC_DIR)])
)
FORBIDDEN = ("asyncio", "bleak", "serial", "sqlite3", "paho")
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "monotonic_ns", "time_ns"}


def touch_derived_values(result: object) -> None:
    """Evaluate every property and date of a decoded value: none may raise either."""
    for name, _ in inspect.getmembers(type(result), lambda m: isinstance(m, property)):
        getattr(result, name)
    if dataclasses.is_dataclass(result):
        for field in dataclasses.fields(result):
            value = getattr(result, field.name)
            if isinstance(value, DateTimeFields):
                value.to_datetime()


def check_decoder(uuid16: int, data: bytes) -> None:
    """A result, or a DecodeError whose message starts with the field it names."""
    try:
        result = decode(uuid16, data)
    except DecodeError as exc:
        error = exc
    else:
        touch_derived_values(result)
        return
    assert error.field
    assert str(error).startswith(error.field)


# One UUID per distinct decoder (the six DIS strings share one).
UUIDS = sorted({decoder: uuid16 for uuid16, decoder in sorted(DECODERS.items())}.values())


@pytest.mark.parametrize("uuid16", UUIDS, ids=lambda u: f"0x{u:04X}")
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=48))
def test_arbitrary_bytes_decode_or_raise_decode_error(uuid16: int, data: bytes) -> None:
    check_decoder(uuid16, data)


@pytest.mark.slow
@pytest.mark.parametrize("uuid16", UUIDS, ids=lambda u: f"0x{u:04X}")
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=48))
def test_arbitrary_bytes_thoroughly(uuid16: int, data: bytes) -> None:
    check_decoder(uuid16, data)


@pytest.mark.parametrize("uuid16", UUIDS, ids=lambda u: f"0x{u:04X}")
def test_every_flags_byte_with_every_short_length(uuid16: int) -> None:
    # Deterministic sweep: every value of the first (flags/op code) byte, followed by
    # 0..16 bytes of two patterns, reaches every optional-field branch and cut-off.
    noise = random.Random(uuid16).randbytes(16)
    for first in range(256):
        for size in range(17):
            for tail in (noise[:size], b"\xff" * size):
                check_decoder(uuid16, bytes((first,)) + tail)


def test_the_registry_covers_every_characteristic_in_scope() -> None:
    in_scope = {
        *(0x2A5E, 0x2A5F, 0x2A60, 0x2A35, 0x2A36, 0x2A49, 0x2A1C, 0x2A1D, 0x2A1E, 0x2A37),
        *(0x2A9D, 0x2A9E, 0x2A18, 0x2A34, 0x2A51, 0x2A52, 0x2A08, 0x2A2B, 0x2A19, 0x2A23),
        *(0x2A2A, 0x2A29, 0x2A24, 0x2A25, 0x2A26, 0x2A27, 0x2A28),
    }
    assert in_scope <= set(DECODERS)


def test_codec_modules_import_no_io_library() -> None:
    script = (
        "import importlib, json, sys\n"
        f"for name in {CODEC_MODULES!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(drivers._codecs.__file__).parents[2],
        timeout=30,
    )
    assert json.loads(result.stdout) == []
    assert len(CODEC_MODULES) >= 10


@pytest.mark.parametrize("module", CODEC_MODULES)
def test_codecs_never_read_the_clock(module: str) -> None:
    path = CODEC_DIR / f"{module.rsplit('.', 1)[1]}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not calls & CLOCK_CALLS
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"time", *FORBIDDEN}
