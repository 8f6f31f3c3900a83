"""``wardlink doctor`` against real brokers, real TLS, real password files, real ptys."""

from __future__ import annotations

import asyncio
import getpass
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.config import Config, HubConfig, MqttConfig, PatientConfig
from agent.doctor import doctor_main, render, run_checks
from agent.doctorchecks import check_bluetooth, check_serial_port, device_checks
from agent.localbroker import TlsFiles
from drivers.serial.settings import SerialOximeterSettings
from tests.agent.certs import make_ca, make_server_cert
from tests.ops.fill import PATIENT, fill_outbox
from tests.ops.mqttparts import make_password_file

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agent.doctorchecks import Check
    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker
PASSWORD = "correct-horse"  # noqa: S105 - a throw-away test broker's password


class Site:
    """A TLS broker with a password file, and the hub's config for it."""

    def __init__(self, broker: MosquittoBroker, tmp: Path) -> None:
        self.broker = broker
        self.tmp = tmp
        self.ca = make_ca(tmp, "fleet-ca")
        self.other_ca = make_ca(tmp, "someone-elses-ca")
        cert, key = make_server_cert(tmp, self.ca)
        broker.tls = TlsFiles(self.ca.cert_file, cert, key)
        passwd = make_password_file(tmp / "passwd", {"hub-a": PASSWORD})
        broker.extra_lines = [
            "allow_anonymous false",
            f"password_file {passwd}",
            f"user {getpass.getuser()}",  # as root, mosquitto could not read pytest's tmp
        ]
        (tmp / "state").mkdir()
        self.password_file = tmp / "hub-password"
        self.password_file.write_text(PASSWORD + "\n")

    def config(
        self, *, ca: Path | None = None, password: str | None = None, host: str = "127.0.0.1"
    ) -> Path:
        if password is not None:
            self.password_file.write_text(password + "\n")
        path = self.tmp / "wardlink.yaml"
        path.write_text(
            f"""\
hub: {{id: hub-a}}
patient: {{id: {PATIENT}, binding_version: 1}}
mqtt:
  host: {host}
  port: {self.broker.port}
  tls: {{ca_file: {ca or self.ca.cert_file}}}
  username: hub-a
  password_file: {self.password_file}
storage: {{path: {self.tmp / "state" / "outbox.db"}}}
"""
        )
        return path


@pytest.fixture
def site(private_broker: MosquittoBroker, tmp_path: Path) -> Site:
    made = Site(private_broker, tmp_path)
    private_broker.start()
    return made


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def synced() -> bool:
    return True


def test_a_healthy_hub_passes_every_check(site: Site) -> None:
    checks = run_checks(site.config(), clock_synced=synced)
    assert [c.name for c in checks if c.status == "fail"] == []
    found = by_name(checks)
    for step in ("config", "clock", "disk", "outbox", "broker DNS", "broker TCP", "broker TLS"):
        assert found[step].status == "pass", found[step]
    assert found["broker MQTT"].detail == "logged in"
    assert "TLSv1." in found["broker TLS"].detail
    assert found["bluetooth"].status == "skip"  # no BLE devices configured


def test_an_unknown_broker_name_fails_at_the_dns_step(site: Site) -> None:
    found = by_name(run_checks(site.config(host="no-such-broker.invalid"), clock_synced=synced))
    assert found["broker DNS"].status == "fail"
    assert "cannot resolve no-such-broker.invalid" in found["broker DNS"].detail
    assert "mqtt.host" in (found["broker DNS"].advice or "")
    assert [found[s].status for s in ("broker TCP", "broker TLS", "broker MQTT")] == ["skip"] * 3


def test_a_stopped_broker_fails_at_the_tcp_step(site: Site) -> None:
    site.broker.stop()
    found = by_name(run_checks(site.config(), clock_synced=synced))
    assert found["broker DNS"].status == "pass"
    assert found["broker TCP"].status == "fail"
    assert "cannot connect" in found["broker TCP"].detail
    assert "broker is down" in (found["broker TCP"].advice or "")
    assert found["broker TLS"].status == "skip"
    assert found["broker MQTT"].status == "skip"


def test_a_wrong_ca_fails_at_the_tls_step(site: Site) -> None:
    found = by_name(run_checks(site.config(ca=site.other_ca.cert_file), clock_synced=synced))
    assert found["broker TCP"].status == "pass"
    assert found["broker TLS"].status == "fail"
    assert "certificate" in found["broker TLS"].detail
    assert "mqtt.tls.ca_file" in (found["broker TLS"].advice or "")
    assert found["broker MQTT"].status == "skip"


def test_a_wrong_password_fails_at_the_mqtt_step(site: Site) -> None:
    bad = site.config(password="wrong")  # noqa: S106 - the fault under test
    found = by_name(run_checks(bad, clock_synced=synced))
    assert found["broker TLS"].status == "pass"
    assert found["broker MQTT"].status == "fail"
    assert found["broker MQTT"].detail.startswith("auth refused: 0x8")  # 0x87 from Mosquitto 2.0
    assert "password" in (found["broker MQTT"].advice or "")


def test_rejected_readings_fail_the_outbox_check(site: Site) -> None:
    config_path = site.config()
    asyncio.run(fill_outbox(site.tmp / "state" / "outbox.db", pending=2, rejected=3))
    found = by_name(run_checks(config_path, clock_synced=synced))
    assert found["outbox"].status == "fail"
    assert "2 pending, 3 rejected" in found["outbox"].detail
    assert "queue requeue" in (found["outbox"].advice or "")


def test_an_unsynced_clock_fails(site: Site) -> None:
    found = by_name(run_checks(site.config(), clock_synced=lambda: False))
    assert found["clock"].status == "fail"
    assert "clock_unsynced" in (found["clock"].advice or "")


def test_a_bad_config_fails_first_and_prints_plain_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("hub: {id: hub-a}\nmqtt: {hots: broker}\n")
    code = doctor_main(str(path))
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("[FAIL] config")
    assert "hots" in out
    assert "\033[" not in out  # piped: no colour codes
    assert "FAILED: config" in out


def test_colour_only_when_asked_or_on_a_terminal(site: Site) -> None:
    checks = run_checks(site.config(), clock_synced=synced)
    assert "\033[32m" in render(checks, color=True)
    assert "\033[" not in render(checks, color=False)
    assert PATIENT not in render(checks, color=False)


def _serial_config(port: Path) -> Config:
    device = SerialOximeterSettings(
        id="oxi-1", driver="serial-oximeter", port=port, protocol="nonin-df8"
    )
    return Config(
        hub=HubConfig(id="hub-a"),
        patient=PatientConfig(id=PATIENT, binding_version=1),
        mqtt=MqttConfig(host="127.0.0.1", insecure_plaintext=True),
        devices=(device,),
    )


@pytest.fixture
def pty_path() -> Iterator[Path]:
    controller, device = pty.openpty()
    try:
        yield Path(os.ttyname(device))
    finally:
        os.close(controller)
        os.close(device)


def test_a_missing_serial_port_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "by-id" / "usb-FTDI_oximeter-if00"
    checks = by_name(device_checks(_serial_config(missing)))
    assert checks["serial oxi-1"].status == "fail"
    assert str(missing) in checks["serial oxi-1"].detail
    assert "does not exist" in checks["serial oxi-1"].detail
    assert "plug" in (checks["serial oxi-1"].advice or "")


def test_a_present_free_tty_passes(pty_path: Path) -> None:
    assert check_serial_port("oxi-1", pty_path).status == "pass"


def test_a_port_locked_by_another_process_is_reported(pty_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time\n"
                f"fd = os.open({str(pty_path)!r}, os.O_RDWR | os.O_NOCTTY)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('held', flush=True)\n"
                "time.sleep(30)\n"
            ),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        check = check_serial_port("oxi-1", pty_path)
        assert check.status == "fail"
        assert "locked by another process" in check.detail
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_port_held_by_the_running_agent_passes(pty_path: Path) -> None:
    with pty_path.open("rb", buffering=0):  # this test process plays the running agent
        check = check_serial_port("oxi-1", pty_path, agent_pid=os.getpid())
    assert check.status == "pass"
    assert "in use by the running agent" in check.detail


def test_a_regular_file_is_not_a_serial_port(tmp_path: Path) -> None:
    fake = tmp_path / "ttyUSB0"
    fake.write_text("")
    assert "not a serial device" in check_serial_port("oxi-1", fake).detail


def test_no_bluetooth_adapter_says_so_when_ble_devices_need_one(tmp_path: Path) -> None:
    empty = tmp_path / "sys-bluetooth"
    empty.mkdir()
    check = check_bluetooth(needed=True, sys_bluetooth=empty, sys_rfkill=tmp_path / "no-rfkill")
    assert check.status == "fail"
    assert check.detail.startswith("no adapter")
    (empty / "hci0").mkdir()
    again = check_bluetooth(needed=True, sys_bluetooth=empty, sys_rfkill=tmp_path / "no-rfkill")
    assert again.status == "pass"
