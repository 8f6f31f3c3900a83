"""Config loading as the agent and a technician use it: valid files, hash, redaction, CLI."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from agent.cli_config import check_config_main
from agent.config import Config, HubConfig, MqttConfig, PatientConfig, TlsConfig
from agent.configload import config_hash, config_warnings, load_config, load_config_text, redacted
from agent.configmessages import RENAMED_KEYS, model_at
from agent.errors import ConfigError
from drivers import DRIVERS
from tests.agent.config_cases.fake_drivers import FAKE_DRIVERS, FakeBleSettings
from tests.agent.config_cases.runner import CASES_DIR, prepare

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))
PATIENT_ID = "patient-7f3a"


@pytest.fixture
def fake_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.configload.DRIVERS", FAKE_DRIVERS)


@pytest.fixture
def base_path(tmp_path: Path, fake_drivers: None) -> Path:
    return prepare(CASES_DIR / "valid-base.yaml", tmp_path)


def _relocated(example: Path, tmp_path: Path) -> Path:
    """The example with /etc/wardlink and /var/lib/wardlink moved under tmp_path.

    check-config verifies that the files a config names exist; the examples name the
    production paths, so the test creates the same file names in a scratch tree.
    """
    text = example.read_text(encoding="utf-8")
    text = text.replace("/etc/wardlink/", f"{tmp_path}/etc/")
    text = text.replace("/var/lib/wardlink/", f"{tmp_path}/var/")
    (tmp_path / "etc").mkdir()
    for name in set(re.findall(rf"{re.escape(str(tmp_path))}/etc/([\w.-]+)", text)):
        (tmp_path / "etc" / name).write_text("placeholder\n")
    target = tmp_path / example.name
    target.write_text(text, encoding="utf-8")
    return target


def test_there_is_an_example_config() -> None:
    assert ROOT / "config" / "wardlink.example.yaml" in EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_passes_check_config(example: Path, tmp_path: Path) -> None:
    relocated = _relocated(example, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(relocated)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    config = load_config(relocated)
    count = len(config.devices)
    noun = "device" if count == 1 else "devices"
    assert result.stdout == f"OK: {relocated} ({count} {noun}, hash {config_hash(config)})\n"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_schema_valid_as_shipped(example: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(example), out=out, err=err, check_files=False) == 0
    # With file checks on, this machine has no /etc/wardlink: the check must notice.
    if not Path("/etc/wardlink/ca.pem").exists():
        assert check_config_main(str(example), out=out, err=err) == 78
        assert "mqtt.tls.ca_file: file /etc/wardlink/ca.pem does not exist" in err.getvalue()


def test_every_device_example_is_valid_for_its_driver() -> None:
    # The commented-out entries are what technicians uncomment: they must stay valid as
    # drivers change, and name only registered drivers.
    text = (ROOT / "config" / "wardlink.example.yaml").read_text(encoding="utf-8")
    section = text.split("\ndevices:\n", 1)[1]
    entries = yaml.safe_load(re.sub(r"(?m)^  # ", "  ", section))
    assert len(entries) >= 6
    for entry in entries:
        assert entry["driver"] in DRIVERS, entry["driver"]
        DRIVERS[entry["driver"]].load_settings_model().model_validate(entry)


def test_a_valid_file_gives_typed_settings_and_defaults(base_path: Path) -> None:
    config = load_config(base_path)
    assert config.hub == HubConfig(id="hub-0042", timezone="Europe/London")
    assert config.patient == PatientConfig(id=PATIENT_ID, binding_version=1)
    assert config.mqtt.port == 8883
    assert config.mqtt.keepalive_s == 60
    assert config.storage.path == base_path.parent / "outbox.db"
    cuff = config.devices[1]
    assert isinstance(cuff, FakeBleSettings)
    assert cuff.address == "A4:C1:38:12:34:56"
    assert not (base_path.parent / "outbox.db").exists()  # checking creates nothing


def test_mac_addresses_are_normalised(base_path: Path) -> None:
    text = base_path.read_text().replace('"A4:C1:38:12:34:56"', "a4-c1-38-12-34-56")
    config = load_config_text(text, "x.yaml")
    assert config.devices[1].address == "A4:C1:38:12:34:56"  # type: ignore[attr-defined]


def test_hash_ignores_layout_and_follows_values(base_path: Path) -> None:
    text = base_path.read_text()
    original = config_hash(load_config_text(text))
    assert re.fullmatch(r"[0-9a-f]{16}", original)
    reflowed = "# a comment\n" + text.replace(
        "  id: hub-0042\n  timezone: Europe/London\n",
        "  timezone: Europe/London\n  id: hub-0042  # same\n",
    )
    assert config_hash(load_config_text(reflowed)) == original
    explicit_default = text.replace(
        "  host: broker.example.org\n", "  host: broker.example.org\n  port: 8883\n"
    )
    assert config_hash(load_config_text(explicit_default)) == original
    moved = text.replace("/dev/ttyUSB0", "/dev/ttyUSB1")
    assert config_hash(load_config_text(moved)) != original


def test_redacted_hides_patient_and_secrets_but_keeps_the_rest(base_path: Path) -> None:
    text = base_path.read_text().replace("    pair: true\n", "")
    text = text.replace('"A4:C1:38:12:34:56"\n', '"A4:C1:38:12:34:56"\n    passkey: "123456"\n')
    text = text.replace(
        "  tls:\n",
        "  username: hub-user\n  password_file: "
        + str(base_path.parent / "mqtt-password")
        + "\n  tls:\n",
    )
    view = redacted(load_config_text(text))
    dumped = json.dumps(view)
    assert PATIENT_ID not in dumped
    assert "123456" not in dumped
    assert "hub-user" not in dumped
    assert view["patient"] == {"id": "<redacted>", "binding_version": 1}
    assert view["devices"][1]["passkey"] == "<redacted>"
    assert view["mqtt"]["password_file"].endswith("mqtt-password")  # a path, not a secret
    assert view["devices"][0]["port"] == "/dev/ttyUSB0"


def test_plaintext_to_loopback_is_accepted_with_a_warning(
    tmp_path: Path, fake_drivers: None
) -> None:
    path = prepare(CASES_DIR / "valid-base.yaml", tmp_path)
    text = re.sub(r"(?s)  tls:\n.*?(?=storage:)", "", path.read_text())
    text = text.replace("broker.example.org", "127.0.0.1\n  port: 1883\n  insecure_plaintext: true")
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(path), out=out, err=err) == 0
    assert out.getvalue() == f"OK: {path} (2 devices, hash {config_hash(load_config(path))})\n"
    assert err.getvalue().startswith("warning: mqtt.insecure_plaintext is true")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost", "LOCALHOST"])
def test_plaintext_is_allowed_for_every_loopback_form(host: str) -> None:
    assert MqttConfig(host=host, insecure_plaintext=True).tls is None


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.10", "broker.local", "0.0.0.0", "::"])  # noqa: S104
def test_plaintext_is_refused_for_any_other_host(host: str) -> None:
    with pytest.raises(ValidationError, match="allowed only for a broker on this machine"):
        MqttConfig(host=host, insecure_plaintext=True)


def test_rules_hold_for_configs_built_in_python_too() -> None:
    with pytest.raises(ValidationError, match="tls: is required"):
        MqttConfig(host="broker.example.org")
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        TlsConfig(ca_file=Path("/ca.pem"), key_file=Path("/k"))
    cuff = FakeBleSettings(id="cuff", driver="test-ble-cuff", address="A4:C1:38:12:34:56")
    with pytest.raises(ValidationError, match="device id 'cuff' is used more than once"):
        Config(
            hub=HubConfig(id="hub-1"),
            patient=PatientConfig(id="p", binding_version=1),
            mqtt=MqttConfig(host="::1", insecure_plaintext=True),
            devices=(cuff, cuff),
        )


def test_file_checks_can_be_skipped_but_schema_checks_cannot(base_path: Path) -> None:
    text = base_path.read_text().replace(str(base_path.parent), "/nonexistent")
    assert load_config_text(text, check_files=False).hub.id == "hub-0042"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text.replace("port: /dev/ttyUSB0", "port: ''"), check_files=False)
    assert caught.value.problems == ["<string>:18 devices.0.port: must not be empty"]


def test_every_renamed_key_points_at_a_key_that_exists() -> None:
    for old, (new, _why) in RENAMED_KEYS.items():
        *parents, leaf = new.split(".")
        model = model_at(Config, tuple(parents))
        assert model is not None, new
        assert leaf in model.model_fields, (old, new)
        assert model_at(Config, tuple(old.split(".")[:-1])) is not None, old


def test_warnings_name_no_patient_data(base_path: Path) -> None:
    text = base_path.read_text() + "logging:\n  level: DEBUG\n"
    warnings = config_warnings(load_config_text(text))
    assert warnings == ["logging.level is DEBUG: patient ids and values will be logged"]
    assert all(PATIENT_ID not in warning for warning in warnings)


def _dotted_keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name in model.model_fields:
        keys.append(f"{prefix}{name}")
        nested = model_at(model, (name,))
        if nested is not None and name != "devices":
            keys.extend(_dotted_keys(nested, f"{prefix}{name}."))
    return keys


def test_the_reference_documents_every_key_and_driver() -> None:
    doc = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    undocumented = [key for key in _dotted_keys(Config, "") if f"`{key}`" not in doc]
    undocumented += [name for name in DRIVERS if f"`{name}`" not in doc]
    assert undocumented == [], "add these to docs/config.md"


def test_problem_lines_never_quote_the_patient_id(base_path: Path) -> None:
    # Problem lines are logged at ERROR and returned by a remote reload.
    for bad_id in ["9434765919", "[9434765919]", "'" + "9434765919" * 20 + "'"]:
        text = base_path.read_text().replace("id: patient-7f3a", f"id: {bad_id}")
        with pytest.raises(ConfigError) as caught:
            load_config_text(text)
        assert caught.value.problems[0].startswith("<string>:5 patient.id: ")
        assert "9434765919" not in "\n".join(caught.value.problems)


def test_risky_but_valid_settings_are_warned_about(base_path: Path) -> None:
    text = base_path.read_text().split("devices:")[0]
    text = text.replace(f"  path: {base_path.parent}/outbox.db", "  path: outbox.db")
    text = text.replace("  tls:\n", '  protocol: "3.1.1"\n  tls:\n')
    assert config_warnings(load_config_text(text)) == [
        "mqtt.protocol is 3.1.1: the broker cannot report a refused reading; use 5",
        "no devices are configured: this hub will send no readings",
        "relative paths are read from the working directory (/ under systemd): outbox.db",
    ]
