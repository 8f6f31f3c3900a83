"""A real Mosquitto broker on a free loopback port, with its own config and directory.

Never touches the machine's own broker on 127.0.0.1:1883. Used by tests, benchmarks and
``wardlink demo``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_MISSING = (
    "Mosquitto is not installed. Install it with: sudo apt-get install -y mosquitto "
    "(Debian/Ubuntu/Raspberry Pi OS)"
)


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TlsFiles:
    """Server-side TLS material for a listener."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


@dataclass
class MosquittoBroker:
    """One Mosquitto process; ``stop``/``kill``/``restart`` inject broker faults for real."""

    workdir: Path
    port: int = field(default_factory=free_port)
    acl_lines: list[str] | None = None
    tls: TlsFiles | None = None
    persistence: bool = False
    extra_lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The loopback address it listens on."""
        return "127.0.0.1"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # Never drop messages for a slow subscriber (performance.md): tests count every one.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
                "tls_version tlsv1.2",
            ]
        if self.acl_lines is not None:
            acl = self.workdir / "acl"
            acl.write_text("\n".join(self.acl_lines) + "\n", encoding="utf-8")
            lines.append(f"acl_file {acl}")
        if os.geteuid() == 0 and not any(x.startswith("user ") for x in self.extra_lines):
            # As root Mosquitto drops to the `mosquitto` user, which cannot read the
            # ACL, password and certificate files in a test's private directory.
            lines.append("user root")
        lines += self.extra_lines
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def start(self, timeout_s: float = 10.0) -> None:
        """Start it and wait until the port accepts connections."""
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError(MOSQUITTO_MISSING)
        conf = self._write_config()
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_text = (self.workdir / "mosquitto.log").read_text(errors="replace")
                raise RuntimeError(f"mosquitto exited at start: {log_text[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s}s")

    def stop(self) -> None:
        """Graceful stop (SIGTERM), as a broker restart or maintenance would do."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Crash it (SIGKILL)."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        """Stop then start again on the same port."""
        self.stop()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def is_running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None
