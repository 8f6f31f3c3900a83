"""Turn pydantic validation errors into messages a technician can act on.

Pydantic's ``ValidationError.errors()`` gives a ``loc`` path and an error ``type`` for each
problem; this module keeps the path and rewrites the message: what was expected, what was
found, and an example. Unknown keys get "did you mean" (difflib) and renamed keys get a
migration message.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from agent.config import CONFIG_RULE_ERROR, Config

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import ValidationError
    from pydantic.fields import FieldInfo
    from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: where (``loc`` path, or an explicit ``line``) and what."""

    loc: Loc
    message: str
    line: int | None = None  # set when known directly (YAML syntax), else looked up by loc


@dataclass(frozen=True, slots=True)
class Located:
    """Where each key and list item of the document is, by its path."""

    lines: dict[tuple[str | int, ...], int]
    scalars: dict[tuple[str | int, ...], str]

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        """The line of ``loc``, or of its nearest ancestor present in the file."""
        while loc not in self.lines and loc:
            loc = loc[:-1]
        return self.lines.get(loc, 1)


# Old dotted key -> (new dotted key, why). Renamed keys fail loudly, never silently ignored.
RENAMED_KEYS: Final[dict[str, tuple[str, str]]] = {
    "mqtt.keepalive": ("mqtt.keepalive_s", "the unit is now in the name: seconds"),
    "mqtt.ca_file": ("mqtt.tls.ca_file", "TLS settings moved into the mqtt.tls section"),
    "mqtt.cert_file": ("mqtt.tls.cert_file", "TLS settings moved into the mqtt.tls section"),
    "mqtt.key_file": ("mqtt.tls.key_file", "TLS settings moved into the mqtt.tls section"),
    "mqtt.password": ("mqtt.password_file", "passwords are read from a file, never inline"),
    "mqtt.reconnect_delay_s": ("mqtt.reconnect_min_s", "backoff now has a minimum and maximum"),
    "storage.db_path": ("storage.path", "renamed"),
    "storage.max_readings": ("storage.capacity_readings", "renamed"),
    "health.interval": ("health.interval_s", "the unit is now in the name: seconds"),
    "hub.tz": ("hub.timezone", "renamed"),
    "patient.nhs_number": ("patient.id", "the hub carries an opaque patient id, not an NHS number"),
}

# Values never quoted back in a problem line (it is logged, and returned by remote reload).
NOT_QUOTED: Final = frozenset({("patient", "id"), ("mqtt", "username")})
_HIDDEN: Final = object()
MAX_LISTED: Final = 50  # problems listed per validated model
_QUOTE_MAX: Final = 40  # longer values are cut when quoted back
_UNITS: Final = {"_s": "seconds", "_ms": "milliseconds", "_h": "hours"}
_TYPE_WORDS: Final[dict[str, str]] = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "path_type": "a file path",
    "model_type": "a mapping of `key: value` lines (a section)",
    "model_attributes_type": "a mapping of `key: value` lines (a section)",
    "dict_type": "a mapping of `key: value` lines",
    "tuple_type": "a list (lines starting with `- `)",
    "list_type": "a list (lines starting with `- `)",
}
# Patterns of models this module does not own, in words (drivers/base.py DeviceSettings.id).
_PATTERN_WORDS: Final = {
    r"^[a-z0-9][a-z0-9_-]{0,62}$": (
        "1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit, e.g. bp-cuff"
    ),
}
_BOUNDS: Final = {
    "greater_than": "more than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
}


def format_validation_errors(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: Loc,
    source: Callable[[Loc], str | None],
) -> list[Problem]:
    """One Problem per pydantic error (or per line of a multi-rule ``value_error``).

    Args:
        exc: The error pydantic raised validating ``model``.
        model: The model validated, to find field names, examples and units.
        prefix: Where that model sits in the file (e.g. ``("devices", 2)``).
        source: Gives the YAML text of the scalar at a path, to quote it back.
    """
    problems: list[Problem] = []
    errors = exc.errors(include_url=False)
    for index, error in enumerate(errors):
        if index == MAX_LISTED:
            # 20,000 unknown keys means the wrong file: the first screenful says so.
            more = f"and {len(errors) - index} more problems not listed; fix these first"
            problems.append(Problem(prefix, more))
            break
        loc = tuple(error["loc"])
        if error["type"] == CONFIG_RULE_ERROR:
            pairs = error.get("ctx", {}).get("pairs", [])
            problems.extend(Problem((*prefix, *loc, key), message) for key, message in pairs)
            continue
        text = source(prefix + loc)
        shown = error
        if (prefix + loc)[:2] in NOT_QUOTED:
            # Problem lines are logged and sent back on a remote reload: no patient data.
            shown = {**error, "input": _HIDDEN}
            text = None
        problems.append(Problem(prefix + loc, _message(shown, model, loc, text)))
    return problems


def _message(  # noqa: PLR0911 - one return per kind of error reads best
    error: ErrorDetails, model: type[BaseModel], loc: Loc, text: str | None
) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "missing":
        what = "section" if len(loc) == 1 and model is Config else "key"
        return f"required {what} `{loc[-1]}` is missing"
    if kind == "extra_forbidden":
        return unknown_key_message(model, loc)
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in _TYPE_WORDS:
        return _type_message(_TYPE_WORDS[kind], error["input"], text, _field(model, loc))
    if kind in _BOUNDS:
        bound = _BOUNDS[kind].format(**{k: _number(v) for k, v in ctx.items()})
        unit = _unit(loc)
        if unit and bound.endswith(" 1"):
            unit = unit.removesuffix("s")  # "at least 1 second"
        return f"{_show(error['input'], text)} is out of range; must be {bound}{unit}"
    if kind == "finite_number":
        return "must be a finite number, such as 60"
    if kind == "literal_error":
        return _choice_message(error["input"], text, _field(model, loc), str(ctx["expected"]))
    if kind in {"string_pattern_mismatch", "string_too_short", "string_too_long"}:
        return _text_message(error, _field(model, loc), text)
    return str(error["msg"])


def _type_message(expected: str, value: object, text: str | None, field: FieldInfo | None) -> str:
    found = _show(value, text)
    hint = _example(field)
    if expected == "text" and value is _HIDDEN:
        return f"expected text, got {found}; put the value in quotes"
    if expected == "text" and isinstance(value, (int, float, bool)) and text is not None:
        read_as = "true/false" if isinstance(value, bool) else "a number"
        return f"expected text, got {found} (YAML reads it as {read_as}); quote it: '{text}'"
    if value is None:
        return f"expected {expected}, but the value is empty{hint}"
    return f"expected {expected}, got {found}{hint}"


def _choice_message(value: object, text: str | None, field: FieldInfo | None, expected: str) -> str:
    choices = {
        str(arg).lower(): str(arg) for arg in _literal_args(field.annotation if field else None)
    }
    close = _closest(str(value).lower(), list(choices))
    hint = f"did you mean `{choices[close]}`? " if close is not None else ""
    return f"{_show(value, text)} is not allowed; {hint}expected one of {expected}"


def _literal_args(annotation: Any) -> list[Any]:  # noqa: ANN401 - any type hint
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literal_args(arg)]


def _text_message(error: ErrorDetails, field: FieldInfo | None, text: str | None) -> str:
    found = _show(error["input"], text)
    if error["type"] == "string_too_short":
        return f"must not be empty{_example(field)}"
    if error["type"] == "string_too_long":
        return f"is too long; at most {error.get('ctx', {}).get('max_length')} characters"
    pattern = str(error.get("ctx", {}).get("pattern"))
    described = field.description if field is not None and field.description else None
    expected = _PATTERN_WORDS.get(pattern) or described or f"text matching {pattern}"
    return f"{found} is not valid; expected {expected}{_example(field)}"


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shorten(text: str) -> str:
    return text if len(text) <= _QUOTE_MAX else f"{text[: _QUOTE_MAX - 3]}..."


def _show(value: object, text: str | None) -> str:
    if value is _HIDDEN:
        return "a value (not shown, as it may identify the patient)"
    if text is not None:
        return f"`{_shorten(text)}`"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"`{value!r}`"


def _example(field: FieldInfo | None) -> str:
    if field is not None and field.examples:
        return f", e.g. {field.examples[0]}"
    return ""


def _unit(loc: Loc) -> str:
    name = str(loc[-1])
    return next((f" {unit}" for suffix, unit in _UNITS.items() if name.endswith(suffix)), "")


def unknown_key_message(model: type[BaseModel], loc: Loc) -> str:
    """Say that ``loc[-1]`` is unknown: renamed-key migration, or did-you-mean, or the list."""
    key = _shorten(str(loc[-1]))
    dotted = ".".join(str(part) for part in loc if isinstance(part, str))
    if dotted in RENAMED_KEYS:
        new, why = RENAMED_KEYS[dotted]
        return f"`{key}` is no longer used; write `{new}` instead ({why})"
    parent = model_at(model, loc[:-1])
    known = sorted(parent.model_fields) if parent is not None else []
    return f"unknown key `{key}`; " + did_you_mean(key, known, "known keys")


def did_you_mean(word: str, known: list[str], what: str) -> str:
    """``did you mean `x`?`` when something is close, else the list of ``what``."""
    close = _closest(word, known)
    if close is not None:
        return f"did you mean `{close}`?"
    return f"{what}: " + (", ".join(known) if known else "(none)")


def _closest(word: str, known: list[str]) -> str | None:
    # difflib only when a config is wrong: the running agent imports this module for
    # reloads, and need not hold difflib in memory for every hub.
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return close[0] if close else None


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class found by following ``loc`` down from ``model`` (list items skipped)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return None
        current = _model_in(current.model_fields[part].annotation)
    return current


def _field(model: type[BaseModel], loc: Loc) -> FieldInfo | None:
    names = [part for part in loc if isinstance(part, str)]
    parent = model_at(model, tuple(names[:-1]))
    if parent is None or not names:
        return None
    return parent.model_fields.get(names[-1])


def _model_in(annotation: Any) -> type[BaseModel] | None:  # noqa: ANN401 - any type hint
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def render_problems(filename: str, problems: list[Problem], located: Located) -> list[str]:
    """Problems as ``<file>:<line> <path>: <message>`` lines, in file order."""
    rows = []
    for problem in problems:
        line = problem.line if problem.line is not None else located.line_of(problem.loc)
        path = ".".join(str(part) for part in problem.loc)
        where = f"{filename}:{line} {path}" if path else f"{filename}:{line}"
        rows.append((line, f"{where}: {problem.message}"))
    return [text for _, text in sorted(rows, key=lambda row: row[0])]
