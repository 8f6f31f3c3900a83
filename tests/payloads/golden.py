"""Golden payload files: compare, or rewrite them with WARDLINK_UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).with_name("golden")


def assert_matches_golden(name: str, document: Any) -> None:
    """The document must equal tests/payloads/golden/<name>.json exactly."""
    path = GOLDEN_DIR / f"{name}.json"
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("WARDLINK_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{path.name} differs; review, then WARDLINK_UPDATE_GOLDEN=1"
