"""Read the YAML config file safely and report every problem at once, with line numbers.

Each problem is one line, ``<file>:<line> <dotted.path>: <message>``. A problem with the
file as a whole (missing, a directory, too big, not UTF-8) is ``<file>: <message>``. The
line of a missing key is the line of the mapping it belongs in.

The size cap is checked before a byte is parsed; ``agent/configyaml.py`` then reads the
YAML (plain data only), the pydantic models of ``agent/config.py`` and of each device's
driver validate it, and ``agent/configcheck.py`` checks the files it names.
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from agent.config import Config
from agent.configcheck import config_hash, config_warnings, file_problems, redacted
from agent.configmessages import (
    Loc,
    Located,
    Problem,
    did_you_mean,
    format_validation_errors,
    render_problems,
)
from agent.configyaml import YAML_PARSER, parse_yaml
from agent.errors import ConfigError
from drivers import DRIVERS

if TYPE_CHECKING:
    from pathlib import Path

    from drivers.base import DeviceSettings

__all__ = [
    "MAX_CONFIG_BYTES",
    "YAML_PARSER",
    "config_hash",
    "config_warnings",
    "load_config",
    "load_config_text",
    "redacted",
]

# A fully commented config with 30 devices is ~15 KiB. Rejecting the worst file of the cap
# is CPU-bound (bench/config_reject.py: ~1 s at 256 KiB on a 2-core x86 box), so the cap
# is 64 KiB to keep a slower hub well inside the 1 s target (reliability.md T12).
MAX_CONFIG_BYTES: Final = 64 * 1024


def load_config(path: Path, *, check_files: bool = True) -> Config:
    """Read, parse and validate the config file at ``path``.

    Args:
        path: The YAML file. It is never created, and a missing file is an error: there
            is no fallback to defaults.
        check_files: Also check that TLS and password files exist and are readable, and
            that the outbox directory exists or can be created (nothing is created).

    Raises:
        ConfigError: With one ``problems`` line per problem found, all of them.
    """
    return load_config_text(_read_text(path), str(path), check_files=check_files)


def load_config_text(text: str, filename: str = "<string>", *, check_files: bool = True) -> Config:
    """Parse and validate config text (tests, remote reload). See :func:`load_config`."""
    size = len(text.encode("utf-8", "replace"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"{filename}: {_too_big(size)}"])
    data, located = parse_yaml(text, filename)
    problems, devices = _validate_devices(data.get("devices", ()), located)
    config: Config | None = None
    try:
        config = Config.model_validate({**data, "devices": devices})
    except ValidationError as exc:
        problems.extend(format_validation_errors(exc, Config, (), located.scalars.get))
    if config is not None and check_files:
        problems.extend(file_problems(config))
    if problems:
        raise ConfigError(render_problems(filename, problems, located))
    if config is None:  # pragma: no cover - validation failed only with problems recorded
        raise ConfigError([f"{filename}: not valid"])
    return config


def _read_text(path: Path) -> str:
    """The file's text, refusing anything that is not a small UTF-8 regular file."""
    name = str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError([f"{name}: file not found; check the path"]) from None
    except OSError as exc:
        raise ConfigError([f"{name}: cannot be read: {exc.strerror}"]) from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError([f"{name}: is a directory; give the path of the YAML file inside it"])
    if not stat.S_ISREG(info.st_mode):
        # A fifo or device would block or stream forever: never open one.
        raise ConfigError([f"{name}: is not a regular file (a pipe, socket or device?)"])
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError([f"{name}: {_too_big(info.st_size)}"])
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # the file may grow after stat
    except OSError as exc:
        raise ConfigError([f"{name}: cannot be read: {exc.strerror}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{name}: {_too_big(len(data))}"])
    return _decode(data, name)


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.start + 1].hex()
        message = f"not UTF-8 text (byte 0x{bad} at column {column}); save the file as UTF-8"
        raise ConfigError([f"{name}:{line}: {message}"]) from None
    return text.removeprefix("\ufeff")


def _too_big(size: int) -> str:
    return (
        f"is {size:,} bytes; a wardlink config is at most {MAX_CONFIG_BYTES // 1024} KiB "
        "(is this the right file?)"
    )


def _validate_devices(entries: object, located: Located) -> tuple[list[Problem], object]:
    """Validate each `devices:` entry with its driver's settings model.

    Returns the problems found and the validated settings, or ``entries`` unchanged when it
    is not a list (the Config model then reports its type).
    """
    if not isinstance(entries, list):
        return [], entries if entries is not None else ()
    problems: list[Problem] = []
    validated: list[tuple[int, DeviceSettings]] = []
    for index, entry in enumerate(entries):
        loc: Loc = ("devices", index)
        if not isinstance(entry, dict):
            expected = "a mapping with at least `id` and `driver`, e.g. `- id: oximeter`"
            problems.append(Problem(loc, f"expected {expected}"))
            continue
        model = _driver_model(entry.get("driver"), loc, problems)
        if model is None:
            continue
        try:
            validated.append((index, model.model_validate(entry)))
        except ValidationError as exc:
            problems.extend(format_validation_errors(exc, model, loc, located.scalars.get))
    problems.extend(_duplicate_ids(validated, located))
    return problems, (() if problems else tuple(device for _, device in validated))


def _driver_model(name: object, loc: Loc, problems: list[Problem]) -> type[DeviceSettings] | None:
    known = sorted(DRIVERS)
    if name is None:
        message = f"required key `driver` is missing; {_known(known)}"
        problems.append(Problem((*loc, "driver"), message))
        return None
    spec = DRIVERS.get(str(name))
    if spec is None:
        message = f"unknown driver `{name}`; " + did_you_mean(str(name), known, "known drivers")
        if "did you mean" in message:
            message += f" ({_known(known)})"
        problems.append(Problem((*loc, "driver"), message))
        return None
    return spec.load_settings_model()


def _known(known: list[str]) -> str:
    return "known drivers: " + (", ".join(known) if known else "(none registered)")


def _duplicate_ids(validated: list[tuple[int, DeviceSettings]], located: Located) -> list[Problem]:
    # Readings are keyed by device id: two devices under one id would mix their data.
    first_index: dict[str, int] = {}
    problems = []
    for index, device in validated:
        if device.id in first_index:
            earlier = ("devices", first_index[device.id], "id")
            message = (
                f"device id `{device.id}` is already used at line {located.line_of(earlier)}; "
                "give every device its own id"
            )
            problems.append(Problem(("devices", index, "id"), message))
        else:
            first_index[device.id] = index
    return problems
