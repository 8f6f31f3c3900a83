"""Property test (reliability.md T12): a mangled config is rejected cleanly, never crashes.

Starting from the valid base of the corpus, random edits with YAML's special characters
must end in either a valid Config or a ConfigError whose problems are single lines in the
``<file>:<line>...`` form: never another exception (which would be a traceback for the
technician).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.configload import load_config_text
from agent.errors import ConfigError
from tests.agent.config_cases.fake_drivers import FAKE_DRIVERS
from tests.agent.config_cases.runner import CASES_DIR

BASE = (CASES_DIR / "valid-base.yaml").read_text(encoding="utf-8").replace("@DIR@", "/srv")
SPECIALS = list(":-[]{}&*!|>'\"#%@`,?\t\n 09aZ\\~.<=\x00\x85\u2028\u00e9")

edit = st.tuples(
    st.sampled_from(["insert", "delete", "replace"]),
    st.integers(min_value=0, max_value=len(BASE) - 1),
    st.sampled_from(SPECIALS),
)


def _apply(text: str, edits: list[tuple[str, int, str]]) -> str:
    chars = list(text)
    for operation, position, character in edits:
        index = min(position, len(chars) - 1)
        if operation == "insert":
            chars.insert(index, character)
        elif operation == "delete":
            del chars[index]
        else:
            chars[index] = character
    return "".join(chars)


@pytest.fixture(autouse=True)
def fake_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.configload.DRIVERS", FAKE_DRIVERS)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(edit, min_size=1, max_size=4))
def test_mangled_config_is_either_valid_or_cleanly_rejected(
    edits: list[tuple[str, int, str]],
) -> None:
    text = _apply(BASE, edits)
    problems: list[str] = []
    try:
        load_config_text(text, "hub.yaml", check_files=False)
    except ConfigError as exc:
        problems = exc.problems
        assert problems, "a ConfigError always says what is wrong"
    for problem in problems:
        assert problem.startswith("hub.yaml:")
        assert "\n" not in problem
