"""The bad-config corpus (reliability.md T12): every file rejected, with the exact lines.

Each ``config_cases/NN-name.yaml`` is copied to a scratch directory (see ``runner.py``)
and loaded from disk with file checks on, as ``check-config`` does. The expected lines are
in the sibling ``.expected`` file. Cases that cannot be committed (10 MB, a directory, a
missing file, a fifo) are generated here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.configload import MAX_CONFIG_BYTES, load_config
from agent.errors import ConfigError
from tests.agent.config_cases.fake_drivers import FAKE_DRIVERS
from tests.agent.config_cases.runner import (
    CASES_DIR,
    case_paths,
    comparable,
    expected_lines,
    prepare,
    problems_of,
)

CASES = case_paths()
ROOT = CASES_DIR.parents[2]


@pytest.fixture(autouse=True)
def fake_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the test drivers are known, so the corpus does not move as drivers land."""
    monkeypatch.setattr("agent.configload.DRIVERS", FAKE_DRIVERS)


def test_the_corpus_is_big_enough_and_every_case_has_its_expectation() -> None:
    assert len(CASES) >= 40
    missing = [case.name for case in CASES if not case.with_suffix(".expected").exists()]
    assert missing == []


def test_the_base_of_the_corpus_is_valid(tmp_path: Path) -> None:
    # Each case is this file with one thing broken, so it must pass on its own.
    config_path = prepare(CASES_DIR / "valid-base.yaml", tmp_path)
    config = load_config(config_path)
    assert [device.id for device in config.devices] == ["oximeter", "bp-cuff"]


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_bad_file_is_rejected_with_exact_lines(case: Path, tmp_path: Path) -> None:
    config_path = prepare(case, tmp_path)
    assert problems_of(config_path) == expected_lines(case, config_path)


def test_a_10_mb_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    # Valid-looking YAML all the way, so only the size check can refuse it.
    line = b"# " + b"x" * 97 + b"\n"
    big.write_bytes(line * (10 * 1024 * 1024 // len(line)))
    size = big.stat().st_size
    expected = (
        f"{big}: is {size:,} bytes; a wardlink config is at most 64 KiB (is this the right file?)"
    )
    assert problems_of(big) == [expected]


def test_text_over_the_cap_is_refused_for_remote_reload_too() -> None:
    from agent.configload import load_config_text

    with pytest.raises(ConfigError) as caught:
        load_config_text("#" * (MAX_CONFIG_BYTES + 1), "remote")
    assert caught.value.problems[0].startswith("remote: is 65,537 bytes")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert problems_of(tmp_path) == [
        f"{tmp_path}: is a directory; give the path of the YAML file inside it"
    ]


def test_a_missing_file_is_an_error_never_defaults(tmp_path: Path) -> None:
    missing = tmp_path / "wardlink.yaml"
    assert problems_of(missing) == [f"{missing}: file not found; check the path"]
    assert not missing.exists()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    # Opening a fifo with no writer would hang the check forever.
    fifo = tmp_path / "wardlink.yaml"
    os.mkfifo(fifo)
    assert problems_of(fifo) == [f"{fifo}: is not a regular file (a pipe, socket or device?)"]


_PURE_PYTHON_RUN = """
import sys, tempfile, yaml
from pathlib import Path
yaml.__with_libyaml__ = False  # as on a hub whose PyYAML was built without libyaml
import agent.configload as configload
assert configload.YAML_PARSER == "pure-python"
from tests.agent.config_cases.fake_drivers import FAKE_DRIVERS
from tests.agent.config_cases.runner import case_paths, expected_lines, prepare, problems_of
configload.DRIVERS = FAKE_DRIVERS
for case in case_paths():
    with tempfile.TemporaryDirectory() as scratch:
        path = prepare(case, Path(scratch))
        if problems_of(path) != expected_lines(case, path):
            print("MISMATCH", case.name, problems_of(path))
"""


def test_the_pure_python_parser_rejects_the_corpus_the_same_way() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PURE_PYTHON_RUN],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# Rejected before schema validation, so the registered drivers do not matter: these run
# the real command line, `python -m agent check-config`.
CLI_CASES = [
    "05-tab-indentation",
    "19-python-tag-object-apply",
    "23-alias-bomb",
    "26-duplicate-section",
    "63-empty-file",
    "67-not-utf8",
]
# These reach device validation, so they run check_config_main with the test drivers.
_CHECK_WITH_TEST_DRIVERS = (
    "import sys; import agent.configload as c; "
    "from tests.agent.config_cases.fake_drivers import FAKE_DRIVERS; c.DRIVERS = FAKE_DRIVERS; "
    "from agent.cli_config import check_config_main; sys.exit(check_config_main(sys.argv[1]))"
)
DRIVER_CASES = ["43-plaintext-to-remote-host", "51-unknown-driver-did-you-mean"]


def _run_check(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("name", "argv"),
    [(name, ["-m", "agent", "check-config"]) for name in CLI_CASES]
    + [(name, ["-c", _CHECK_WITH_TEST_DRIVERS]) for name in DRIVER_CASES],
)
def test_check_config_process_exits_78_without_traceback(
    name: str, argv: list[str], tmp_path: Path
) -> None:
    case = CASES_DIR / f"{name}.yaml"
    config_path = prepare(case, tmp_path)
    result = _run_check([*argv, str(config_path)])
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = comparable(result.stderr.splitlines())
    expected = expected_lines(case, config_path)
    assert lines[: len(expected)] == expected
    count = len(expected)
    summary = f"{config_path}: {count} problem{'s' if count != 1 else ''}; "
    assert lines[len(expected) :] == [summary + "wardlink will not start with this file"]


def test_check_config_process_on_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "wardlink.yaml"
    result = _run_check(["-m", "agent", "check-config", str(missing)])
    assert (result.returncode, result.stdout) == (78, "")
    assert result.stderr.splitlines() == [
        f"{missing}: file not found; check the path",
        f"{missing}: 1 problem; wardlink will not start with this file",
    ]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_cannot_be_read_is_reported(tmp_path: Path) -> None:
    # Tests run as root, so permissions cannot make a file unreadable; /proc/self/mem
    # is a regular file whose read fails (EIO) for root too.
    link = tmp_path / "wardlink.yaml"
    link.symlink_to("/proc/self/mem")
    assert problems_of(link) == [f"{link}: cannot be read: Input/output error"]
