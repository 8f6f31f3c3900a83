"""YAML text -> plain data, refusing anything but plain YAML, with where every key is.

``yaml.safe_load`` semantics and more: anchors and aliases are refused before anything
expands them (billion laughs), so are every explicit tag (``!!python/...``, ``!include``),
merge keys, duplicate keys (PyYAML silently keeps the last), keys that are not names,
non-finite numbers and nesting deeper than any real config needs. Events come from
libyaml when PyYAML has it; composition is ours so each of those can be refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import yaml

from agent.configmessages import Loc, Located, Problem, render_problems
from agent.errors import ConfigError

__all__ = ["MAX_NESTING", "YAML_PARSER", "parse_yaml"]

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


def parse_yaml(text: str, filename: str) -> tuple[dict[str, Any], Located]:
    """YAML text -> a mapping of plain data, and where each key is.

    Raises:
        ConfigError: With every structural problem found, or the first syntax error.
    """
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
        located = Located({}, {})
        if root is not None:
            _walk(root, (), located, problems)
        if problems or root is None or not isinstance(root, yaml.MappingNode):
            raise ConfigError(render_problems(filename, problems or [_top_level(root)], located))
        data = loader.construct_document(root)
        if non_finite := _non_finite(data, ()):
            raise ConfigError(render_problems(filename, non_finite, located))
    except _TooDeepError as exc:
        raise ConfigError(render_problems(filename, [exc.problem], Located({}, {}))) from None
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


def _walk(node: yaml.Node, loc: Loc, located: Located, problems: list[Problem]) -> None:
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
    located: Located,
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
