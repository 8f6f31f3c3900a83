"""The confirmation ``wardlink decommission`` publishes, against a real Mosquitto.

The broker enforces the fleet ACL of docs/operations.md (a hub may only write its own
topics) with password logins, so the test also shows that a hub is allowed to publish its
own decommission notice. The command runs as a technician runs it: ``python -m agent``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.ops.fill import PATIENT, fill_outbox, write_config
from tests.ops.mqttparts import Requester, fleet_acl, make_password_file

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = pytest.mark.broker
PREFIX = "wardlink"
USERS = {"hub-a": "pw-a", "backend": "pw-backend"}


def _start_with_fleet_acl(broker: MosquittoBroker, tmp_path: Path) -> None:
    passwords = make_password_file(tmp_path / "passwd", USERS)
    broker.acl_lines = fleet_acl(PREFIX, "backend")
    broker.extra_lines = [
        "allow_anonymous false",
        f"password_file {passwords}",
        f"user {getpass.getuser()}",  # as root it could not read pytest's private tmp dir
    ]
    broker.start()


def _hub_config(tmp_path: Path, port: int) -> tuple[Path, Path]:
    """hub-a's config (logs in as hub-a) and its broker password file."""
    password = tmp_path / "hub-a.password"
    password.write_text(USERS["hub-a"] + "\n")
    config = write_config(tmp_path)
    text = config.read_text().replace(
        "mqtt: {host: 127.0.0.1, insecure_plaintext: true}",
        f"mqtt: {{host: 127.0.0.1, port: {port}, insecure_plaintext: true, "
        f"username: hub-a, password_file: {password}, topic_prefix: {PREFIX}}}",
    )
    ports = tmp_path / "ttyOX"
    ports.write_text("")
    text += (
        f"devices:\n  - {{id: ox-1, driver: serial-oximeter, port: {ports}, protocol: nonin-df8}}\n"
    )
    config.write_text(text)
    asyncio.run(fill_outbox(tmp_path / "state" / "outbox.db", pending=0, sent=3))
    return config, password


def _decommission(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "decommission", "-c", str(config), *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _retained(port: int) -> dict[str, dict[str, Any]]:
    """Every retained message under the prefix, as a new subscriber is given them."""
    backend = Requester(port, f"{PREFIX}/#", user="backend", password=USERS["backend"])
    try:
        # The broker sends retained messages before anything published after the
        # SUBACK, so once our own marker is back, every retained message is here.
        backend.send(f"{PREFIX}/backend/marker", {"marker": True})
        deadline = time.monotonic() + 10
        while not any(t.endswith("/marker") for t, _, _ in backend.snapshot()):
            assert time.monotonic() < deadline, "marker not received"
            time.sleep(0.02)
        return {t: body for t, body, _ in backend.snapshot() if not t.endswith("/marker")}
    finally:
        backend.close()


def _publish_hub_state(port: int) -> None:
    """What the fleet holds for hub-a (and its neighbour hub-b) before the decommission."""
    backend = Requester(port, f"{PREFIX}/none", user="backend", password=USERS["backend"])
    try:
        for topic in ("status", "info", "health", "devices/ox-1/status", "devices/old/status"):
            backend.send(f"{PREFIX}/hub-a/{topic}", {"state": "online"}, retain=True)
        backend.send(f"{PREFIX}/hub-b/status", {"state": "online"}, retain=True)
    finally:
        backend.close()


def test_the_fleet_sees_the_hub_decommissioned_and_its_topics_cleared(
    private_broker: MosquittoBroker, tmp_path: Path
) -> None:
    _start_with_fleet_acl(private_broker, tmp_path)
    config, password = _hub_config(tmp_path, private_broker.port)
    state = tmp_path / "state" / "state.json"  # an agent that ran with a device since removed
    dead_pid = 2**22 + 7  # above Linux's largest pid_max: never a live process
    state.write_text(json.dumps({"pid": dead_pid, "health": {"devices": {"old": {}}}}))
    _publish_hub_state(private_broker.port)

    result = _decommission(config, "--delete-credentials")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "confirmation published: 4 retained topic(s) cleared" in result.stdout
    retained = _retained(private_broker.port)
    assert sorted(retained) == [f"{PREFIX}/hub-a/status", f"{PREFIX}/hub-b/status"]
    notice = retained[f"{PREFIX}/hub-a/status"]
    assert notice["state"] == "decommissioned"
    assert notice["removed_files"] >= 3  # outbox, its seq guard, state.json at least
    assert notice["unsent_destroyed"] == 0
    printed = re.search(r"sha256 ([0-9a-f]{64})", result.stdout)
    assert printed is not None
    assert notice["removed_sha256"] == printed.group(1)
    assert retained[f"{PREFIX}/hub-b/status"] == {"state": "online"}  # another hub: untouched
    assert PATIENT not in json.dumps(notice) + result.stdout + result.stderr
    assert not password.exists()  # deleted after the notice went out
    assert f"removed {password}" in result.stdout


def test_an_unreachable_broker_wipes_keeps_the_credentials_and_a_rerun_confirms(
    private_broker: MosquittoBroker, tmp_path: Path
) -> None:
    config, password = _hub_config(tmp_path, private_broker.port)  # not started yet

    first = _decommission(config, "--delete-credentials")

    assert first.returncode == 1
    assert "confirmation NOT published: cannot connect to 127.0.0.1" in first.stdout
    assert "run this command again when the broker is reachable" in first.stdout
    assert "credentials KEPT" in first.stdout
    assert "NOT complete: confirmation not published" in first.stdout
    assert "Traceback" not in first.stderr
    assert password.exists()
    assert not (tmp_path / "state" / "outbox.db").exists()  # patient data goes regardless

    _start_with_fleet_acl(private_broker, tmp_path)
    second = _decommission(config, "--delete-credentials")

    assert second.returncode == 0, second.stdout + second.stderr
    assert "confirmation published" in second.stdout
    assert _retained(private_broker.port)[f"{PREFIX}/hub-a/status"]["state"] == "decommissioned"
    assert not password.exists()


def test_offline_deletes_the_client_key_certificate_and_password_but_not_the_ca(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    files = {name: tmp_path / name for name in ("ca.pem", "hub.pem", "hub.key", "password")}
    for path in files.values():
        path.write_text("placeholder\n")  # check-config only needs them to exist
    config.write_text(
        config.read_text().replace(
            "mqtt: {host: 127.0.0.1, insecure_plaintext: true}",
            f"mqtt: {{host: 127.0.0.1, username: hub-a, password_file: {files['password']}, "
            f"tls: {{ca_file: {files['ca.pem']}, cert_file: {files['hub.pem']}, "
            f"key_file: {files['hub.key']}}}}}",
        )
    )
    kept = _decommission(config, "--offline")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "credentials kept (--delete-credentials deletes them)" in kept.stdout
    assert "the fleet must revoke this hub's certificate" in kept.stdout
    assert all(p.exists() for p in files.values())

    deleted = _decommission(config, "--offline", "--delete-credentials")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "confirmation NOT published (--offline)" in deleted.stdout
    assert [name for name, p in files.items() if p.exists()] == ["ca.pem"]
    assert "the fleet must revoke this hub's certificate" in deleted.stdout
