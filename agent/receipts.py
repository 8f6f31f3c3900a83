"""End-to-end receipts: the backend confirms readings it has stored.

Topic ``{prefix}/{hub}/receipts``, payload ``{"reading_ids": ["<uuid>", ...]}`` (at most
``MAX_IDS`` per message). A receipt only ever moves a sent reading to delivered, which
lets the audit purge remove it; it can never touch a pending or rejected reading.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Final

from agent.errors import OutboxError

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties

    from agent.outbox import Outbox

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_IDS: Final = 5000


class ReceiptError(ValueError):
    """A receipt message that cannot be used."""


def parse_receipt(payload: bytes) -> list[uuid.UUID]:
    """The reading ids a receipt confirms. Raises ReceiptError for anything malformed."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ReceiptError(f"receipt of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReceiptError(f"receipt is not JSON: {exc}") from exc
    ids = document.get("reading_ids") if isinstance(document, dict) else None
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
        raise ReceiptError(f"receipt needs a list 'reading_ids' of 1..{MAX_IDS} ids")
    try:
        return [uuid.UUID(str(i)) for i in ids]
    except ValueError as exc:
        raise ReceiptError(f"receipt holds an id that is not a UUID: {exc}") from exc


class ReceiptHandler:
    """Subscription callback that marks confirmed readings delivered in the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        """Store the outbox (no I/O)."""
        self._outbox = outbox
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {"receipts": 0, "delivered": 0, "malformed": 0}

    def on_message(self, _topic: str, payload: bytes, _props: Properties | None) -> None:
        """Parse at once; mark delivered in a task (the outbox call is async)."""
        try:
            ids = parse_receipt(payload)
        except ReceiptError as exc:
            self.counters["malformed"] += 1
            log.warning("receipt ignored: %s", exc)
            return
        self.counters["receipts"] += 1
        task = asyncio.get_running_loop().create_task(self._mark(ids), name="receipt")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark(self, ids: list[uuid.UUID]) -> None:
        try:
            self.counters["delivered"] += await self._outbox.mark_delivered(ids)
        except OutboxError as exc:
            # The rows stay "sent" and are kept; the backend re-sends unconfirmed receipts.
            self.counters["failed"] = self.counters.get("failed", 0) + 1
            log.error("receipt not recorded: %s", exc)
