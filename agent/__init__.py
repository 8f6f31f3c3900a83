"""wardlink agent core: config, readings, outbox, publisher, status, supervisor, CLI."""

from __future__ import annotations

__version__ = "0.1.0"
