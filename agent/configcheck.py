"""Checks beyond the schema, and the views of a validated config that others publish.

- :func:`file_problems`: files the config names must exist and be readable now, so a
  technician learns at install time, not at the first reconnect.
- :func:`config_warnings`: allowed but risky settings, printed by ``check-config``.
- :func:`config_hash` and :func:`redacted`: for the ``info`` topic and the remote
  ``config`` request.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from typing import TYPE_CHECKING, Any, Final

from agent.configmessages import Problem

if TYPE_CHECKING:
    from pathlib import Path

    from agent.config import Config
    from agent.configmessages import Loc

REDACTED: Final = "<redacted>"
# Redacted wherever they appear (device settings too); paths (`*_file`) are not secrets.
_SECRET_KEY: Final = re.compile(r"password|passkey|secret|token|bind_?key|^pin$|pin_code")
_REDACTED_PATHS: Final = (("patient", "id"), ("mqtt", "username"))


def file_problems(config: Config) -> list[Problem]:
    """Problems with files the config names: TLS files, password file, outbox directory."""
    problems: list[Problem] = []
    tls = config.mqtt.tls
    named: list[tuple[Loc, Path | None]] = [(("mqtt", "password_file"), config.mqtt.password_file)]
    if tls is not None:
        named += [
            (("mqtt", "tls", "ca_file"), tls.ca_file),
            (("mqtt", "tls", "cert_file"), tls.cert_file),
            (("mqtt", "tls", "key_file"), tls.key_file),
        ]
    for loc, path in named:
        message = None if path is None else _readable_file(path)
        if message is not None:
            problems.append(Problem(loc, message))
    message = _outbox_location(config.storage.path)
    if message is not None:
        problems.append(Problem(("storage", "path"), message))
    return problems


def _readable_file(path: Path) -> str | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"file {path} does not exist; copy it there or correct the path"
    except OSError as exc:
        return f"file {path} cannot be checked: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file; give the path of the file itself"
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"file {path} cannot be read: {exc.strerror}; check its owner and mode"
    return None


def _outbox_location(path: Path) -> str | None:
    if path.is_dir():
        return f"{path} is a directory; give a file name for the outbox, e.g. {path}/outbox.db"
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # the first existing ancestor is where it will be created
    if not directory.is_dir():
        return f"{path.parent} cannot be created: {directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{path.parent} is not writable (nor creatable) by this user; check permissions"
    return None


def config_warnings(config: Config) -> list[str]:
    """Allowed but risky settings, one sentence each (no patient data)."""
    warnings = []
    if config.mqtt.insecure_plaintext:
        warnings.append(
            "mqtt.insecure_plaintext is true: readings are sent unencrypted to a loopback "
            "broker; use this for lab and demo set-ups only"
        )
    if config.mqtt.protocol == "3.1.1":
        warnings.append("mqtt.protocol is 3.1.1: the broker cannot report a refused reading; use 5")
    if config.logging.level == "DEBUG":
        warnings.append("logging.level is DEBUG: patient ids and values will be logged")
    if not config.devices:
        warnings.append("no devices are configured: this hub will send no readings")
    paths = [config.storage.path, config.mqtt.password_file]
    if config.mqtt.tls is not None:
        paths += [config.mqtt.tls.ca_file, config.mqtt.tls.cert_file, config.mqtt.tls.key_file]
    relative = sorted(str(p) for p in paths if p is not None and not p.is_absolute())
    if relative:
        warnings.append(
            "relative paths are read from the working directory (/ under systemd): "
            + ", ".join(relative)
        )
    return warnings


def _plain(config: Config) -> dict[str, Any]:
    """The config as JSON-ready data, each device with its driver's own fields."""
    data = config.model_dump(mode="json", exclude={"devices"})
    data["devices"] = [device.model_dump(mode="json") for device in config.devices]
    return data


def config_hash(config: Config) -> str:
    """A stable short fingerprint (16 hex digits of SHA-256) of the validated config.

    Computed from the canonical validated values (defaults filled in), so comments, key
    order and formatting do not change it, while any effective setting does.
    """
    canonical = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data with the patient id, username and any secrets redacted."""
    data = _plain(config)
    for section, key in _REDACTED_PATHS:
        if data[section].get(key) is not None:
            data[section][key] = REDACTED
    return _redact_secrets(data)  # type: ignore[no-any-return]


def _redact_secrets(value: Any) -> Any:  # noqa: ANN401 - JSON-shaped data
    if isinstance(value, dict):
        return {
            key: REDACTED
            if _SECRET_KEY.search(key) and not key.endswith("_file") and item is not None
            else _redact_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_secrets(item) for item in value]
    return value
