"""``wardlink check-config PATH``: validate a config file and say what is wrong, all at once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agent.configload import config_hash, config_warnings, load_config
from agent.errors import ConfigError

if TYPE_CHECKING:
    from typing import TextIO

EX_OK: Final = 0
EX_CONFIG: Final = 78  # sysexits.h; the systemd unit does not restart on it


def check_config_main(
    path: str,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    check_files: bool = True,
) -> int:
    """Check the config at ``path``; print the verdict; return the exit status.

    Prints ``OK: <file> (<n> devices, hash <h>)`` to ``out`` and returns 0 when the file
    is valid; otherwise prints every problem, one per line, to ``err`` and returns 78
    (EX_CONFIG). Warnings (allowed but risky settings) go to ``err`` either way.

    Args:
        path: The config file.
        out: Where the OK line goes.
        err: Where problems and warnings go.
        check_files: Also check the files the config names (TLS, password, outbox
            directory). Turn off only to check a file prepared for another machine.
    """
    try:
        config = load_config(Path(path), check_files=check_files)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        count = len(exc.problems)
        print(
            f"{path}: {count} problem{'s' if count != 1 else ''}; wardlink will not start "
            "with this file",
            file=err,
        )
        return EX_CONFIG
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=err)
    count = len(config.devices)
    noun = "device" if count == 1 else "devices"
    print(f"OK: {path} ({count} {noun}, hash {config_hash(config)})", file=out)
    return EX_OK
