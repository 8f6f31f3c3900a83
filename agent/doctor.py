"""``wardlink doctor``: one screen that says whether this hub works, and if not, why.

Checks, in order: the config file; the hub clock; disk space and the outbox (read-only,
safe beside a running agent); the broker step by step (DNS, TCP, TLS, MQTT login); the
Bluetooth adapter; every configured serial port. Exit code 0 only when nothing failed
(skipped checks do not count). Colour only when writing to a terminal (and ``NO_COLOR``
is not set), plain text when piped, so the output can be pasted into a ticket.

Nothing here prints a patient identifier or a reading value.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from agent.clock import is_clock_synced
from agent.doctorchecks import Check, check_clock, check_disk, check_outbox, device_checks
from agent.errors import ConfigError
from agent.localstatus import pid_alive, read_state_file, state_file_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.config import Config

EX_OK: Final = 0
EX_FAILED: Final = 1
_MARKS: Final = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}
_COLOURS: Final = {"pass": "\033[32m", "fail": "\033[1;31m", "skip": "\033[33m"}
_RESET: Final = "\033[0m"
_LOCAL_STEPS: Final = ("clock", "disk", "outbox", "broker", "bluetooth / serial")


def run_checks(
    config_path: Path, *, clock_synced: Callable[[], bool] = is_clock_synced
) -> list[Check]:
    """Every check, in report order. A bad config skips the checks that need it.

    Args:
        config_path: the agent's YAML config file.
        clock_synced: how to ask whether the hub clock is synchronised (tests inject it).
    """
    from agent.configload import load_config  # noqa: PLC0415 - pydantic models on demand

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        detail = f"{len(exc.problems)} problem(s):\n" + "\n".join(exc.problems)
        failed = Check(
            "config", "fail", detail, f"fix the file, then `wardlink check-config {config_path}`"
        )
        skipped = [
            Check(name, "skip", "not tried: the config is not valid") for name in _LOCAL_STEPS
        ]
        return [failed, check_clock(clock_synced), *skipped[1:]]
    return _checks_for(config, config_path, clock_synced)


def _checks_for(config: Config, config_path: Path, clock_synced: Callable[[], bool]) -> list[Check]:
    from agent.doctornet import broker_checks  # noqa: PLC0415 - paho only when needed

    checks = [
        Check("config", "pass", f"{config_path} is valid (hub {config.hub.id})"),
        check_clock(clock_synced),
        check_disk(config.storage.path),
        check_outbox(config.storage.path),
    ]
    checks += broker_checks(config.mqtt, config.hub.id)
    checks += device_checks(config, agent_pid=_running_agent_pid(config.storage.path))
    return checks


def _running_agent_pid(outbox_path: Path) -> int | None:
    """The pid in the agent's state file, if that process is alive."""
    state = read_state_file(state_file_path(outbox_path))
    pid = None if state is None else state.get("pid")
    return pid if isinstance(pid, int) and pid_alive(pid) else None


def render(checks: list[Check], *, color: bool) -> str:
    """The report: one line per check, advice indented under failures, a verdict."""
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        mark = _MARKS[check.status]
        if color:
            mark = f"{_COLOURS[check.status]}{mark}{_RESET}"
        first, *rest = check.detail.splitlines() or [""]
        lines.append(f"[{mark}] {check.name.ljust(width)}  {first}")
        lines += [f"       {' ' * width}  {line}" for line in rest]
        if check.advice and check.status != "pass":
            lines.append(f"       {' ' * width}  -> {check.advice}")
    failed = [c.name for c in checks if c.status == "fail"]
    verdict = "all checks passed" if not failed else f"FAILED: {', '.join(failed)}"
    lines.append(verdict)
    return "\n".join(lines) + "\n"


def _wants_color(stream: TextIO, color: bool | None) -> bool:
    if color is not None:
        return color
    return stream.isatty() and "NO_COLOR" not in os.environ


def doctor_main(config_path: str, *, color: bool | None = None) -> int:
    """Run every check on ``config_path``, print the report; 0 only if none failed.

    Args:
        config_path: the agent's YAML config file.
        color: force colour on or off; None means "only on a terminal".
    """
    checks = run_checks(Path(config_path))
    sys.stdout.write(render(checks, color=_wants_color(sys.stdout, color)))
    return EX_FAILED if any(c.status == "fail" for c in checks) else EX_OK
