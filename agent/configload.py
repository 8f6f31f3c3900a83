"""Read the YAML config file safely and report every problem at once, with line numbers.

Each problem is one line, ``<file>:<line> <dotted.path>: <message>``. A problem with the
file as a whole (missing, a directory, too big, not UTF-8) is ``<file>: <message>``. The
line of a missing key is the line of the mapping it belongs in.

YAML is read with ``yaml.SafeLoader`` semantics and more: anchors and aliases are refused
(billion-laughs), so are explicit tags other than the plain YAML types, merge keys,
duplicate keys and nesting deeper than any real config needs. The size cap is checked
before a byte is parsed.
"""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import yaml
from pydantic import ValidationError

from agent.config import Config
from agent.configcheck import config_hash, config_warnings, file_problems, redacted
from agent.configmessages import Loc, Problem, did_you_mean, format_validation_errors
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
MAX_NESTING: Final = 32  # a real config nests 4 deep; deeper is a mistake or an attack
_YAML_TAG: Final = "tag:yaml.org,2002:"
_STR_TAG: Final = _YAML_TAG + "str"
_COLLECTION_TAGS: Final = frozenset({_YAML_TAG + "map", _YAML_TAG + "seq"})
# YAML 1.1 reads 2024-13-45 as a date (and fails); no config value is a date, so keep text.
_IMPLICIT_RESOLVERS: Final = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _YAML_TAG + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _PlainResolver(yaml.resolver.Resolver):
    """Resolves untagged scalars as our loader does, to tell explicit tags apart."""

    yaml_implicit_resolvers = _IMPLICIT_RESOLVERS


_RESOLVER: Final = _PlainResolver()


@dataclass(frozen=True, slots=True)
class _Located:
    """Where each key and list item of the document is, by its path."""

    lines: dict[tuple[str | int, ...], int]
    scalars: dict[tuple[str | int, ...], str]

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        """The line of ``loc``, or of its nearest ancestor present in the file."""
        while loc not in self.lines and loc:
            loc = loc[:-1]
        return self.lines.get(loc, 1)


if yaml.__with_libyaml__ and not TYPE_CHECKING:
    from yaml._yaml import CParser as _EventSource  # scans and parses in C, ~7x faster

    _OFFSETS_IN_BYTES = True
    YAML_PARSER = "libyaml"
else:

    class _EventSource(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
        """PyYAML's own pure-Python reader, scanner and parser."""

        def __init__(self, text: str) -> None:
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)

    _OFFSETS_IN_BYTES = False
    YAML_PARSER = "pure-python"  # same checks; syntax messages are worded differently


class _StrictLoader(
    yaml.composer.Composer, _EventSource, yaml.constructor.SafeConstructor, _PlainResolver
):
    """SafeLoader semantics, composed in Python so anchors/aliases become problems.

    Events come from libyaml when PyYAML has it (from the pure-Python parser otherwise);
    composition is always ours, so an alias is refused before anything expands it.
    """

    def __init__(self, text: str, problems: list[Problem]) -> None:
        _EventSource.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        _PlainResolver.__init__(self)
        self.problems = problems
        self.depth = 0
        self.aliases_refused = 0
        self.first_unlisted: yaml.Mark | None = None

    def _refuse(self, mark: yaml.Mark, what: str) -> None:
        # An alias bomb has thousands: list a few, count the rest.
        self.aliases_refused += 1
        if self.aliases_refused <= _ALIASES_LISTED:
            self.problems.append(_at(mark, f"{what}: {_NO_ALIAS}"))
        elif self.first_unlisted is None:
            self.first_unlisted = mark

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]
            self._refuse(event.start_mark, f"alias `*{event.anchor}`")
            return yaml.ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._refuse(event.start_mark, f"anchor `&{anchor}`")
            event.anchor = None  # keep composing to find every other problem
        self.depth += 1
        if self.depth > MAX_NESTING:
            msg = f"nested more than {MAX_NESTING} levels deep; a wardlink config needs 4"
            raise _TooDeepError(_at(event.start_mark, msg))
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_ALIASES_LISTED: Final = 3
_NO_ALIAS: Final = "anchors and aliases are not allowed; write the value out in full"


class _TooDeepError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _at(mark: yaml.Mark, message: str) -> Problem:
    return Problem((), message, mark.line + 1)


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
    data, located = _parse(text, filename)
    problems, devices = _validate_devices(data.get("devices", ()), located)
    config: Config | None = None
    try:
        config = Config.model_validate({**data, "devices": devices})
    except ValidationError as exc:
        problems.extend(format_validation_errors(exc, Config, (), located.scalars.get))
    if config is not None and check_files:
        problems.extend(file_problems(config))
    if problems:
        raise ConfigError(_render(filename, problems, located))
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


def _parse(text: str, filename: str) -> tuple[dict[str, Any], _Located]:
    """YAML text -> plain data, refusing unsafe or ambiguous YAML. Raises ConfigError."""
    problems: list[Problem] = []
    try:
        loader = _StrictLoader(text, problems)
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_unreadable_character(filename, text, exc)]) from None
    try:
        root = loader.get_single_node()
        if loader.first_unlisted is not None:
            more = loader.aliases_refused - _ALIASES_LISTED
            problems.append(_at(loader.first_unlisted, f"and {more} more anchors or aliases"))
        located = _Located({}, {})
        if root is not None:
            _walk(root, (), located, problems)
        if problems or root is None or not isinstance(root, yaml.MappingNode):
            raise ConfigError(_render(filename, problems or [_top_level(root)], located))
        data = loader.construct_document(root)
        if non_finite := _non_finite(data, ()):
            raise ConfigError(_render(filename, non_finite, located))
    except _TooDeepError as exc:
        raise ConfigError(_render(filename, [exc.problem], _Located({}, {}))) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_unreadable_character(filename, text, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_line(filename, text, exc)]) from None
    finally:
        loader.dispose()
    return data, located


def _top_level(root: yaml.Node | None) -> Problem:
    if root is None:
        return Problem((), "the file is empty; start from config/wardlink.example.yaml", 1)
    found = "a list" if isinstance(root, yaml.SequenceNode) else f"`{root.value}`"
    sections = "hub:, patient:, mqtt: ..."
    return Problem((), f"the top level must be a mapping of sections ({sections}); got {found}", 1)


def _walk(node: yaml.Node, loc: Loc, located: _Located, problems: list[Problem]) -> None:
    """Record where every key is; refuse explicit tags, merge keys and duplicate keys."""
    if _explicitly_tagged(node):
        tag = node.tag.replace(_YAML_TAG, "!!")
        message = f"the tag `{tag}` is not allowed; write a plain value"
        problems.append(Problem(loc, message, node.start_mark.line + 1))
    elif isinstance(node, yaml.ScalarNode):
        located.scalars[loc] = str(node.value)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            located.lines[(*loc, index)] = item.start_mark.line + 1
            _walk(item, (*loc, index), located, problems)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            _walk_entry(key_node, value_node, loc, seen, located, problems)


def _explicitly_tagged(node: yaml.Node) -> bool:
    # Tags (`!!python/...`, `!include`, even `!!float`) are how YAML asks for more than
    # plain data: a config never needs one.
    if isinstance(node, yaml.ScalarNode):
        plain = not node.style  # None (pure-Python parser) or "" (libyaml) when unquoted
        implicit = (plain, not plain)
        resolved = _RESOLVER.resolve(yaml.ScalarNode, node.value, implicit)  # type: ignore[no-untyped-call]
        return bool(node.tag != resolved)
    return node.tag not in _COLLECTION_TAGS


def _walk_entry(
    key_node: yaml.Node,
    value_node: yaml.Node,
    loc: Loc,
    seen: dict[str, int],
    located: _Located,
    problems: list[Problem],
) -> None:
    line = key_node.start_mark.line + 1
    if key_node.tag == _YAML_TAG + "merge":
        problems.append(Problem(loc, "merge keys (`<<`) are not allowed; write keys out", line))
        return
    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
        problems.append(Problem(loc, _bad_key(key_node), line))
        return
    key = str(key_node.value)
    if key in seen:
        message = f"duplicate key `{key}` (first at line {seen[key]}); keep only one"
        problems.append(Problem((*loc, key), message, line))
        return
    seen[key] = line
    located.lines[(*loc, key)] = line
    _walk(value_node, (*loc, key), located, problems)


def _bad_key(key_node: yaml.Node) -> str:
    if not isinstance(key_node, yaml.ScalarNode):
        return "a key must be a name such as `port`, not a list or mapping"
    if _explicitly_tagged(key_node):
        return f"the tag `{key_node.tag.replace(_YAML_TAG, '!!')}` is not allowed on a key"
    kind = _KEY_KINDS.get(key_node.tag.removeprefix(_YAML_TAG), "not text")
    return f"a key must be a name such as `port`; YAML reads `{key_node.value}` as {kind}"


_KEY_KINDS: Final = {"int": "a number", "float": "a number", "bool": "true/false", "null": "empty"}


def _non_finite(value: object, loc: Loc) -> list[Problem]:
    """Problems for .inf/.nan/1e999: never a meaningful setting, and bounds let inf pass."""
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(loc, "must be a finite number, such as 60")]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _non_finite(item, (*loc, str(key)))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _non_finite(item, (*loc, index))]
    return []


def _unreadable_character(filename: str, text: str, exc: yaml.reader.ReaderError) -> str:
    data = text.encode("utf-8", "replace") if _OFFSETS_IN_BYTES else text
    newline = b"\n" if isinstance(data, bytes) else "\n"
    line = data.count(newline, 0, exc.position) + 1  # type: ignore[arg-type]
    column = exc.position - (data.rfind(newline, 0, exc.position) + 1) + 1  # type: ignore[arg-type]
    character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else exc.character
    return (
        f"{filename}:{line}: control character {character} at column {column} is not allowed "
        "in a YAML file; remove it (was the file copied from a binary or a PDF?)"
    )


def _syntax_line(filename: str, text: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if mark is None:
        return f"{filename}: YAML syntax error: {problem}"
    if "'\\t'" in problem or _character_at(text, mark) == "\t":
        problem = "a tab character; YAML indents with spaces only, replace tabs with spaces"
    elif context and "single document" in context:
        problem = "more than one YAML document (`---`); a config is a single document"
    elif context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1})"
    if "mapping values are not allowed" in problem or "could not find expected ':'" in problem:
        problem += "; is a space missing after `:`, or is the indentation wrong?"
    return f"{filename}:{mark.line + 1}: YAML syntax error at column {mark.column + 1}: {problem}"


def _character_at(text: str, mark: yaml.Mark) -> str:
    lines = text.split("\n")
    row = lines[mark.line] if mark.line < len(lines) else ""
    return row[mark.column] if mark.column < len(row) else ""


def _validate_devices(entries: object, located: _Located) -> tuple[list[Problem], object]:
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


def _duplicate_ids(validated: list[tuple[int, DeviceSettings]], located: _Located) -> list[Problem]:
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


def _render(filename: str, problems: list[Problem], located: _Located) -> list[str]:
    """Problems as ``<file>:<line> <path>: <message>`` lines, in file order."""
    rows = []
    for problem in problems:
        line = problem.line if problem.line is not None else located.line_of(problem.loc)
        path = ".".join(str(part) for part in problem.loc)
        where = f"{filename}:{line} {path}" if path else f"{filename}:{line}"
        rows.append((line, f"{where}: {problem.message}"))
    return [text for _, text in sorted(rows, key=lambda row: row[0])]
