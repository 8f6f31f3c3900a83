"""Real outbox files for the tools' tests: readings captured by the real Outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.clock import SystemClock
from agent.outbox import Outbox
from agent.readings import (
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    Reading,
    make_reading,
)

if TYPE_CHECKING:
    from pathlib import Path

PATIENT = "PATIENT-7731"  # must never appear in a tool's output


def spot_readings(count: int, device_id: str = "cuff-1") -> list[Reading]:
    """``count`` distinct weight readings, as a scale would send them."""
    clock = SystemClock()
    device = DeviceIdentity(device_id=device_id, driver="test-scale")
    patient = PatientBinding(PATIENT, 1)
    return [
        make_reading(
            device=device,
            patient=patient,
            kind=Kind.BODY_WEIGHT,
            cadence=Cadence.SPOT,
            values=(Quantity("body_weight", 70.0 + i / 10, "kg"),),
            received=clock.now(),
            driver_version="test",
            device_seq=i,
        )
        for i in range(count)
    ]


async def fill_outbox(path: Path, *, pending: int, rejected: int = 0, sent: int = 0) -> list[int]:
    """Capture readings, then mark some sent and some rejected; returns the rejected seqs."""
    outbox = await Outbox.open(path)
    try:
        await outbox.capture(spot_readings(pending + rejected + sent))
        rows = await outbox.pending_batch(limit=pending + rejected + sent)
        seqs = [r.seq for r in rows]
        await outbox.mark_sent(seqs[:sent])
        rejected_seqs = seqs[sent : sent + rejected]
        await outbox.mark_rejected(rejected_seqs, "0x87 Not authorized")
        return rejected_seqs
    finally:
        await outbox.close()


def write_config(tmp: Path) -> Path:
    """A valid config whose outbox lives in ``<tmp>/state`` (created)."""
    (tmp / "state").mkdir(exist_ok=True)
    path = tmp / "wardlink.yaml"
    path.write_text(
        f"""\
hub: {{id: hub-a}}
patient: {{id: {PATIENT}, binding_version: 1}}
mqtt: {{host: 127.0.0.1, insecure_plaintext: true}}
health: {{interval_s: 60}}
storage: {{path: {tmp / "state" / "outbox.db"}}}
"""
    )
    return path
