"""Run one corpus case the way a technician would meet it: a real file on disk.

A case is ``NN-name.yaml`` plus ``NN-name.expected``, the exact problem lines. In both,
``@DIR@`` stands for a scratch directory holding the files a config refers to (CA, client
certificate and key, password file), and in ``.expected`` ``@FILE@`` stands for the
config file's own path.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent import configload
from agent.configload import load_config
from agent.errors import ConfigError

CASES_DIR = Path(__file__).parent
PLACEHOLDER_DIR = "@DIR@"
PLACEHOLDER_FILE = "@FILE@"
REFERENCED_FILES = ("ca.pem", "client.crt", "client.key", "mqtt-password")


def case_paths() -> list[Path]:
    """Every bad-config case, in order."""
    return sorted(CASES_DIR.glob("[0-9][0-9]-*.yaml"))


def prepare(case: Path, workdir: Path) -> Path:
    """Copy ``case`` into ``workdir`` with ``@DIR@`` filled in; create referenced files."""
    for name in REFERENCED_FILES:
        (workdir / name).write_text(f"placeholder {name}\n")
    data = case.read_bytes().replace(PLACEHOLDER_DIR.encode(), str(workdir).encode())
    target = workdir / case.name
    target.write_bytes(data)
    return target


def expected_lines(case: Path, config_path: Path) -> list[str]:
    """The case's expected problem lines, placeholders filled in."""
    text = case.with_suffix(".expected").read_text(encoding="utf-8")
    text = text.replace(PLACEHOLDER_FILE, str(config_path))
    text = text.replace(PLACEHOLDER_DIR, str(config_path.parent))
    return comparable(text.splitlines())


def comparable(lines: list[str]) -> list[str]:
    """Lines as compared: exact with libyaml (how .expected was written).

    PyYAML's pure-Python parser words a few syntax errors differently; without libyaml
    only the file, line and column of a syntax error are compared.
    """
    if configload.YAML_PARSER == "libyaml":
        return lines
    return [re.sub(r"(YAML syntax error at column \d+:).*", r"\1", line) for line in lines]


def problems_of(config_path: Path) -> list[str]:
    """The problem lines load_config reports (empty when the file is valid)."""
    try:
        load_config(config_path)
    except ConfigError as exc:
        return comparable(exc.problems)
    return []
